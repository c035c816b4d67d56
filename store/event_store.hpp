// The event store interface shared by the PostgreSQL and in-memory stores.
#pragma once

#include "store/error.hpp"
#include "store/model.hpp"
#include "store/validation.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <vector>

namespace dcbd {

/// The outcome of one request of a group append.
struct append_result {
  /// `errc::none` on success.
  errc code = errc::none;
  /// Position of the last appended event; 0 unless the append succeeded.
  std::uint64_t last_position = 0;
  /// Human-readable reason when the append failed.
  std::string message;
  /// The events' `recorded_at` when the append succeeded, as reads return
  /// it; the epoch when the store could not tell (a group whose commit was
  /// confirmed only after its connection broke).
  std::chrono::system_clock::time_point recorded_at{};

  bool ok() const noexcept {
    return code == errc::none;
  }
};

/// A streaming read: hands out the result in chunks of bounded size, so
/// memory stays bounded whatever the result size. Every chunk comes from the
/// same consistent view of the log, capped at `head()`.
class event_stream {
public:
  virtual ~event_stream() = default;

  /// Replaces `chunk` with the next chunk; returns false (and an empty
  /// chunk) once the result is exhausted.
  virtual bool next(std::vector<sequenced_event>& chunk) = 0;

  /// The store head of the stream's snapshot.
  virtual std::uint64_t head() const noexcept = 0;
};

/// Bounds on the chunks of a streaming read.
struct stream_options {
  /// At most this many events per chunk.
  std::size_t chunk_events = 1000;
  /// At most about this many payload bytes per chunk; a chunk always holds
  /// at least one event.
  std::size_t chunk_bytes = std::size_t{4} << 20;
};

/// The inclusive range of positions [lo, hi] a read covers, before the
/// store caps it at its snapshot head: forward from `from` (at least 1) up
/// to `until` (or the head), or backwards from `from` (or from the head)
/// down to 1.
struct position_range {
  std::uint64_t lo = 1;
  std::uint64_t hi = std::numeric_limits<std::uint64_t>::max();
};

/// Returns the position range `options` selects.
position_range range_of(const read_options& options) noexcept;

/// A hint of `event_store::append_prechecked`: an event matching the
/// request's condition is known to exist after its `after`.
inline constexpr std::uint64_t condition_fails
  = std::numeric_limits<std::uint64_t>::max();

/// A DCB event store. All member functions are thread-safe. Expected
/// failures throw `store_error`.
class event_store {
public:
  /// `lim` bounds the input `append` and `append_group` validate.
  explicit event_store(limits lim = {}) : limits_(lim) {
    // nop
  }

  virtual ~event_store() = default;

  /// Appends `events` atomically if `condition` holds; returns the position
  /// of the last appended event. Throws `store_error` with
  /// `append_condition_failed`, `invalid_argument` or `unavailable`.
  std::uint64_t append(std::vector<event> events,
                       std::optional<append_condition> condition = {});

  /// Validates each request, then appends the valid ones with
  /// `append_validated`; an invalid request gets its own `invalid_argument`
  /// result and does not affect the others. One result per request, in
  /// request order.
  std::vector<append_result> append_group(std::vector<append_request> requests);

  /// Appends each request independently, in one transaction. Request i's
  /// condition sees the database and the requests accepted before it in the
  /// same group, so the outcome equals the serial order of the requests.
  /// Returns one result per request, in request order.
  virtual std::vector<append_result>
  append_validated(const std::vector<validated_append>& group) = 0;

  /// As `append_validated`, with what the caller checked already:
  /// `checked_through[i]`, when present and above request i's `after`,
  /// says that no event matching request i's condition lies in
  /// (after, checked_through[i]] (a range of the log, which never changes;
  /// e.g. the event cache looked), and `condition_fails` that one does. The
  /// store may then check only the events past it, or fail the request
  /// without asking the database; the results are the same. By default the
  /// hints are ignored.
  virtual std::vector<append_result>
  append_prechecked(const std::vector<validated_append>& group,
                    std::span<const std::uint64_t> checked_through) {
    (void) checked_through;
    return append_validated(group);
  }

  /// Reads the events matching `q`, in position order (newest first when
  /// backwards), with the head of the same snapshot.
  virtual read_result read(const query& q, const read_options& options = {})
    = 0;

  /// Reads like `read`, in chunks.
  virtual std::unique_ptr<event_stream>
  stream(const query& q, const read_options& options = {},
         const stream_options& chunking = {})
    = 0;

  /// Position of the last committed event; 0 for an empty store.
  virtual std::uint64_t head() = 0;

  /// How many connections to the backend were opened after the first one
  /// (0 for a store without connections).
  virtual std::uint64_t reconnects() const noexcept {
    return 0;
  }

  /// The input limits of this store.
  const limits& input_limits() const noexcept {
    return limits_;
  }

private:
  limits limits_;
};

} // namespace dcbd
