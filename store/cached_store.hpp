// An event store that serves reads from the node's event cache when it can
// and from its backend otherwise, with the same results.
//
// A read or stream whose scan starts inside the cache takes a read index
// (store/read_index.hpp), waits (bounded) until the cache holds the log up
// to it, and is then served at the cache's head: from memory for the part in
// the cache, from the backend for the part below the cache's low end
// (positions there never change, so the two parts form one snapshot). A read
// that starts below the cache, or when the index or the wait fails, goes to
// the backend whole. Appends go to the backend; the accepted ones are added
// to the cache before `append_validated` returns, so the caller acknowledges
// them only once the cache holds them.
//
// An append's condition is looked up in the cache first: when no event in
// (after, hi] matches it (hi: the cache's head), the backend is told so
// (`append_prechecked`) and checks only the events past hi, which is none
// while no other process has written since. The cache holds a contiguous
// range of committed events, which never change, so what it rules out the
// database would rule out too. A match found in memory fails the request
// for good (the event is committed): the backend answers it without
// sending it to the database, and a group of nothing else sends nothing.
//
// The reader actors' reads block on the read index (`read_index::get`),
// so they share at most `readers` reads per head query. HTTP reads take the
// index asynchronously (`read_index::get_async`, shared by every read
// waiting) and, when the cache can answer whole, read it with
// `visit_from_cache` on their own thread, without the actors.
#pragma once

#include "store/decision.hpp"
#include "store/event_cache.hpp"
#include "store/event_store.hpp"
#include "store/read_index.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

namespace dcbd {

/// Settings of a cached store.
struct cached_store_config {
  /// How long a read waits for the cache to reach its read index before it
  /// reads from the backend instead.
  std::chrono::milliseconds wait{50};
  /// Called (on the reading thread) with the read index when the cache is
  /// behind it, to hurry whoever feeds the cache (e.g. wake the bus).
  std::function<void(std::uint64_t)> on_behind;
};

/// How fresh a read must be.
enum class read_consistency : std::uint8_t {
  /// Sees every append acknowledged before it began (the default): the
  /// cache serves it only after a read index.
  linearizable,
  /// A consistent prefix of the log, possibly behind the database: the
  /// cache serves it at its own head (subscription catch-up, which only
  /// needs gap-free prefixes).
  snapshot,
  /// From the database only (the bus reading past the cache, which it
  /// feeds).
  database,
};

/// Sets how the current thread's reads are served while it lives: which
/// route they count as (the decision model's stream counts as `project`),
/// how fresh they must be, and the head they must see when the caller
/// knows it already.
class read_scope {
public:
  explicit read_scope(cache_route r,
                      read_consistency c = read_consistency::linearizable,
                      std::optional<std::uint64_t> must_see
                      = std::nullopt) noexcept;
  ~read_scope();

  read_scope(const read_scope&) = delete;
  read_scope& operator=(const read_scope&) = delete;

  /// The current thread's scope, if any.
  static const read_scope* current() noexcept;

  cache_route route() const noexcept {
    return route_;
  }

  read_consistency consistency() const noexcept {
    return consistency_;
  }

  /// The head the reads must see, when the caller knows it: a read index
  /// it took already, or the top of a range it reads below the cache. A
  /// store that reads from a replica (store/pg_replica.hpp) then takes no
  /// read index of its own.
  std::optional<std::uint64_t> must_see() const noexcept {
    return must_see_;
  }

private:
  const read_scope* saved_;
  cache_route route_;
  read_consistency consistency_;
  std::optional<std::uint64_t> must_see_;
};

class cached_event_store final : public event_store {
public:
  /// Reads through `backend`, `cache` and `index` (shared with other cached
  /// stores of the node). Starts the cache at the backend's head unless it
  /// has started.
  cached_event_store(std::shared_ptr<event_store> backend,
                     std::shared_ptr<event_cache> cache,
                     std::shared_ptr<read_index> index,
                     cached_store_config cfg = {});

  std::vector<append_result>
  append_validated(const std::vector<validated_append>& group) override;

  /// Checks each condition against the cache first (`check_condition`)
  /// and tells the backend how far each is clean, or that it fails.
  std::vector<append_result>
  append_prechecked(const std::vector<validated_append>& group,
                    std::span<const std::uint64_t> checked_through) override;

  read_result read(const query& q, const read_options& options = {}) override;

  std::unique_ptr<event_stream>
  stream(const query& q, const read_options& options = {},
         const stream_options& chunking = {}) override;

  std::uint64_t head() override;

  std::uint64_t reconnects() const noexcept override;

  const std::shared_ptr<event_cache>& cache() const noexcept {
    return cache_;
  }

  /// The store behind the cache.
  const std::shared_ptr<event_store>& backend() const noexcept {
    return backend_;
  }

private:
  class stream_impl;

  // A stream served at least partly from the cache, or null when the
  // backend must serve it whole (`consistency` is not `database`). Sets
  // `index` to the read index when it took one.
  std::unique_ptr<event_stream>
  open(const query& q, const read_options& o, const stream_options& chunking,
       cache_route route, read_consistency consistency,
       std::optional<std::uint64_t>& index);

  std::shared_ptr<event_store> backend_;
  std::shared_ptr<event_cache> cache_;
  std::shared_ptr<read_index> index_;
  cached_store_config cfg_;
};

/// A read from `cache` alone, without waiting and without the backend: the
/// events of `q` in the range of `options`, at the cache's head, provided
/// that head is at least `index` (a read index taken after the read
/// began). Nothing when the cache cannot answer whole right away: not
/// started, behind `index`, the range not all in memory, or more than
/// `max_events` events to return. Validates as every read does (throws
/// `store_error`). Counts a hit on `cache_route::read` when it answers.
/// The events go to `sink` in the read's order (under the cache's read
/// lock), not copied. When it answers nothing after all because the read
/// holds more than `max_events`, the sink has already had up to
/// `max_events` + 1 of them: the caller drops what it made of them.
std::optional<cache_answer>
visit_from_cache(event_cache& cache, const query& q,
                 const read_options& options, std::uint64_t index,
                 std::size_t max_events, const limits& lim,
                 const std::function<void(const sequenced_event&)>& sink);

/// A decision model projected from `cache` alone, without waiting and
/// without the backend: the validated `projectors` over the whole log, at
/// the cache's head, provided the cache covers the whole log for their
/// queries (holds it from position 1, or its summary rules out every match
/// below its low end) and its head is at least `index` (a read index taken
/// after the projection began). Nothing when it cannot answer whole, also when
/// eviction takes the start of the log meanwhile. The `apply` functions run
/// outside the cache's lock, on copies of at most `chunking` events at a
/// time (user code never holds up the writers). Nothing either when the
/// model holds more than `max_events` events (`apply` then ran on at most
/// that many: a caller that bounds the work it does on its own thread).
/// Throws as `project` does; counts a hit on `cache_route::project` when it
/// answers.
std::optional<decision>
project_from_cache(event_cache& cache, const std::vector<projector>& projectors,
                   std::uint64_t index, const limits& lim,
                   const stream_options& chunking = {},
                   std::uint64_t max_events = UINT64_MAX);

/// Waits (until `until`) for `cache` to hold the log up to `index`, calling
/// `on_behind` (if set) first when it is behind; counts the wait. True when
/// the cache has reached `index`.
bool await_cache(event_cache& cache, std::uint64_t index,
                 std::chrono::steady_clock::time_point until,
                 const std::function<void(std::uint64_t)>& on_behind);

/// Whether `visit_from_cache` may answer a read of `q` in `options` at all
/// (cheap, before any read index): the cache has started and covers the
/// read's range from where it begins (see `event_cache::covers`).
bool cache_may_answer(const event_cache& cache, const read_options& options,
                      const query& q = query::all());

/// Makes a read index over `store`'s `head()`.
std::shared_ptr<read_index> make_read_index(std::shared_ptr<event_store> store);

} // namespace dcbd
