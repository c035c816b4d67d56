// Helpers the route files share: the body, query parameters, the metrics of
// appends and reads, the append path of /append and /v1/append, and the
// read path of /read and /v1/read below the event cache.
#pragma once

#include "actors/engine.hpp"
#include "runtime/database_reads.hpp"
#include "runtime/http_routes.hpp"
#include "runtime/json_api.hpp"
#include "runtime/metrics.hpp"
#include "store/cached_store.hpp"
#include "store/event_cache.hpp"
#include "store/model.hpp"

#include <functional>
#include <memory>
#include <string>
#include <utility>

namespace dcbd::http {

/// The body as JSON (or msgpack); an empty one is {} (every field at its
/// default).
inline json body_of(const exchange& x) {
  if (x.req().body().empty())
    return json::object();
  return x.body();
}

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

/// Runs an append on the engine's shortest path (`append_unbounded`:
/// validated here, on the connection's thread, then straight to the store
/// actor) and calls `answer` with the outcome on the connection's strand.
/// A timer on the connection bounds the wait by the engine's timeout: past
/// it the request gets 503 `unavailable` (counted) and the store's late
/// answer is dropped. Call it on the strand (in the handler).
///
/// Lifetimes: the timer holds the exchange until it fires or the request is
/// answered; the store holds only a weak reference, so a store that never
/// answers keeps no connection alive, and a client that went away costs
/// nothing more than its write failing.
inline void append_within_timeout(
  engine& eng, const std::shared_ptr<exchange>& x, append_request req,
  std::function<void(exchange&, caf::expected<append_ack>&)> answer) {
  auto timeout = eng.config().timeout;
  x->set_deadline(timeout, [x, timeout] {
    append_done(*x, errc::unavailable);
    x->fail(errc::unavailable, "the store did not answer within "
                                 + std::to_string(timeout.count())
                                 + " ms; the append may still be committed");
  });
  std::weak_ptr<exchange> wx = x;
  eng.append_unbounded(std::move(req), [wx, answer = std::move(answer)](
                                         caf::expected<append_ack> r) mutable {
    auto x = wx.lock();
    if (!x)
      return;
    x->on_strand([x, r = std::move(r), answer = std::move(answer)]() mutable {
      if (!x->answered())
        answer(*x, r);
    });
  });
}

/// Counts a read that finished with `code`, returning `events`.
inline void read_done(const exchange& x, errc code, std::size_t events) {
  if (auto m = x.metrics())
    m->read_finished(code, events);
}

/// A read the event cache could not answer whole because it does not hold
/// its range (`cache_may_answer`): straight from PostgreSQL on the I/O
/// threads (`route_env::database`) when the node can and the answer is at
/// most one chunk (`http_config::stream_chunk_events`).
/// `format` makes the body from the answer (on a connection's thread), which
/// is then sent whole as `content_type`. Otherwise (no such connections, a
/// longer answer, bad input, a failure) `otherwise` runs on the strand: the
/// reader path, which streams, retries and reports errors.
inline void
read_from_database(route_env& env, const std::shared_ptr<exchange>& x,
                   const query& q, const read_options& options,
                   std::function<std::string(read_result&)> format,
                   const char* content_type, std::function<void()> otherwise) {
  // A cache that holds the read's range was only behind the read index
  // (or the answer is long): the reader path waits for it and answers from
  // memory, sparing the database.
  auto cache = env.eng.cache();
  if (!env.database || (cache && cache_may_answer(*cache, options, q)))
    return otherwise();
  env.database->read(
    q, options, env.cfg.stream_chunk_events,
    [&env, x, format = std::move(format), content_type,
     otherwise = std::move(otherwise)](std::optional<read_result> r) mutable {
      std::optional<std::string> body;
      try {
        if (r)
          body = format(*r);
      } catch (const std::exception&) {
        // the reader path says what is wrong
      }
      if (auto m = x->metrics())
        m->database_read(body.has_value());
      if (!body)
        return x->on_strand(std::move(otherwise));
      if (auto cache = env.eng.cache())
        cache->record(cache_route::read, cache_outcome::miss);
      x->on_strand([x, n = r->events.size(), body = std::move(*body),
                    content_type]() mutable {
        if (x->answered())
          return;
        read_done(*x, errc::none, n);
        x->reply_bytes(200, content_type, std::move(body));
      });
    });
}

} // namespace dcbd::http
