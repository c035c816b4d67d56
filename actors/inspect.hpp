// CAF serialization of the store's data model, and errc as a CAF error code.
//
// The store layer knows nothing of CAF, so the `inspect` overloads for its
// types live here, in namespace dcbd where argument-dependent lookup finds
// them. Optional fields travel as a presence flag plus a value. Field order is
// part of the wire format between nodes: only ever append fields.
#pragma once

#include "store/error.hpp"
#include "store/event_store.hpp"
#include "store/model.hpp"

#include <caf/error.hpp>
#include <caf/make_message.hpp>
#include <caf/message.hpp>
#include <caf/meta/load_callback.hpp>
#include <caf/meta/type_name.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

CAF_ERROR_CODE_ENUM_2(dcbd::errc, "dcbd")

namespace dcbd {

/// Returns the dcbd error code of `err`: its own code for dcbd errors,
/// `unavailable` for CAF's timeouts and dead receivers, `internal` for any
/// other CAF error, and `none` for no error.
errc code_of(const caf::error& err) noexcept;

/// Returns the message `err` carries (its context), or CAF's rendering.
std::string message_of(const caf::error& err);

/// Makes a CAF error from a store error.
inline caf::error to_error(const store_error& e) {
  return caf::make_error(e.code(), std::string{e.what()});
}

namespace detail {

// Splits an optional into a flag and a value for inspection.
template <class T>
struct optional_parts {
  explicit optional_parts(const std::optional<T>& x)
    : present(x.has_value())
    , value(x.value_or(T{})) {
    // nop
  }
  void store(std::optional<T>& x) const {
    x = present ? std::optional<T>{value} : std::nullopt;
  }
  bool present;
  T value;
};

} // namespace detail

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, event& x) {
  return f(caf::meta::type_name("dcbd::event"), x.type, x.tags, x.data,
           x.metadata);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sequenced_event& x) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(
              x.recorded_at.time_since_epoch())
              .count();
  return f(caf::meta::type_name("dcbd::sequenced_event"), x.position, us,
           x.event, caf::meta::load_callback([&]() -> caf::error {
             x.recorded_at = std::chrono::system_clock::time_point{
               std::chrono::microseconds{us}};
             return caf::none;
           }));
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, query_item& x) {
  return f(caf::meta::type_name("dcbd::query_item"), x.types, x.tags);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, query& x) {
  return f(caf::meta::type_name("dcbd::query"), x.items);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, read_options& x) {
  detail::optional_parts<std::uint64_t> from{x.from};
  detail::optional_parts<std::uint64_t> limit{x.limit};
  detail::optional_parts<std::uint64_t> until{x.until};
  return f(caf::meta::type_name("dcbd::read_options"), from.present, from.value,
           limit.present, limit.value, x.backwards, until.present, until.value,
           caf::meta::load_callback([&]() -> caf::error {
             from.store(x.from);
             limit.store(x.limit);
             until.store(x.until);
             return caf::none;
           }));
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, append_condition& x) {
  detail::optional_parts<std::uint64_t> after{x.after};
  return f(caf::meta::type_name("dcbd::append_condition"),
           x.fail_if_events_match, after.present, after.value,
           caf::meta::load_callback([&]() -> caf::error {
             after.store(x.after);
             return caf::none;
           }));
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, job_request& x) {
  detail::optional_parts<std::int64_t> run_at{x.run_at_us};
  return f(caf::meta::type_name("dcbd::job_request"), x.queue, x.kind, x.args,
           x.priority, run_at.present, run_at.value, x.delay_ms, x.max_attempts,
           x.unique_key, caf::meta::load_callback([&]() -> caf::error {
             run_at.store(x.run_at_us);
             return caf::none;
           }));
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, append_request& x) {
  detail::optional_parts<append_condition> cond{x.condition};
  return f(caf::meta::type_name("dcbd::append_request"), x.events, cond.present,
           cond.value, x.jobs, caf::meta::load_callback([&]() -> caf::error {
             cond.store(x.condition);
             return caf::none;
           }));
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, read_result& x) {
  return f(caf::meta::type_name("dcbd::read_result"), x.events, x.head);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stream_options& x) {
  return f(caf::meta::type_name("dcbd::stream_options"), x.chunk_events,
           x.chunk_bytes);
}

} // namespace dcbd
