// Validation and normalization of store input (DESIGN §2 limits).
#pragma once

#include "store/model.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace dcbd {

/// Sorts and de-duplicates the tags of `e`.
void normalize(event& e);

/// Sorts and de-duplicates the types and tags of every item of `q`.
void normalize(query& q);

/// Validates and normalizes `e`. Throws `store_error(invalid_argument)`
/// naming the offending field, prefixed with `field` (e.g. "events[2]").
void validate(event& e, const limits& lim, std::string_view field);

/// Validates and normalizes `q`. Throws like `validate(event&, ...)`.
void validate(query& q, const limits& lim, std::string_view field);

/// Validates and normalizes a whole append request in place, its jobs
/// included (fields "jobs[i]...").
void validate(append_request& req, const limits& lim);

/// An append request that passed validation: limits checked, tags sorted
/// and de-duplicated. Only `validate_append` makes one, so the store actor
/// and the stores, which take nothing else, never check or normalize again.
/// It never crosses a node boundary: a remote node validates on arrival.
class validated_append {
public:
  /// The events, in their stored form.
  const std::vector<event>& events() const noexcept {
    return req_.events;
  }

  /// The condition, if any (its query normalized).
  const std::optional<append_condition>& condition() const noexcept {
    return req_.condition;
  }

  /// The jobs to enqueue with the events, in order (validated: empty
  /// args are "{}").
  const std::vector<job_request>& jobs() const noexcept {
    return req_.jobs;
  }

  /// Type, tag, data and metadata bytes of all events, plus the queue,
  /// kind, args and unique key bytes of all jobs: what the statement
  /// carries.
  std::size_t payload_bytes() const noexcept {
    return bytes_;
  }

  /// Moves the events out, e.g. to announce them once committed.
  std::vector<event> take_events() && {
    return std::move(req_.events);
  }

  /// Moves the whole (normalized) request out, e.g. to send it to another
  /// node, which validates it again on arrival.
  append_request take_request() && {
    return std::move(req_);
  }

private:
  friend validated_append validate_append(append_request req,
                                          const limits& lim);

  explicit validated_append(append_request req);

  append_request req_;
  std::size_t bytes_ = 0;
};

/// Validates and normalizes `req`. Throws `store_error(invalid_argument)`
/// naming the offending field.
validated_append validate_append(append_request req, const limits& lim);

/// Validates read options (e.g. `from` must fit a signed 64-bit position).
void validate(const read_options& options, std::string_view field);

/// Validates the input of a read: returns a normalized copy of `q` (fields
/// "query..."), and checks `options` (fields "options...").
query validate_read(const query& q, const read_options& options,
                    const limits& lim);

/// Returns whether `s` is well-formed UTF-8.
bool is_utf8(std::string_view s) noexcept;

/// `s` as text PostgreSQL stores: valid UTF-8 (other bytes become '?'), no
/// NUL, at most `max_bytes` bytes, cut between characters.
std::string storable_text(std::string_view s, std::size_t max_bytes);

} // namespace dcbd
