// Helpers the route files share: query parameters, and the metrics of
// appends and reads.
#pragma once

#include "runtime/http_routes.hpp"
#include "runtime/json_api.hpp"
#include "runtime/metrics.hpp"
#include "store/model.hpp"

namespace dcbd::http {

/// The `query` URL parameter (JSON); every event when absent.
inline query query_parameter(const exchange& x) {
  auto text = x.parameter("query");
  if (!text)
    return query::all();
  return parse_query(parse_json(*text, "query"), "query");
}

/// The `options` URL parameter (JSON); defaults when absent.
inline read_options options_parameter(const exchange& x) {
  auto text = x.parameter("options");
  if (!text)
    return {};
  return parse_read_options(parse_json(*text, "options"), "options");
}

/// Counts an append that finished with `code`, timed from the request.
inline void append_done(const exchange& x, errc code) {
  if (auto m = x.metrics())
    m->append_finished(code, clock::now() - x.started());
}

/// Counts a read that finished with `code`, returning `events`.
inline void read_done(const exchange& x, errc code, std::size_t events) {
  if (auto m = x.metrics())
    m->read_finished(code, events);
}

} // namespace dcbd::http
