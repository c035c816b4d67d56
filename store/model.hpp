// The DCB data model: events, queries, read options and append conditions.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace dcbd {

/// Opaque bytes (event data and metadata). May contain NUL.
using bytes = std::string;

/// A fact to record. Tags are a set: stored sorted and de-duplicated.
struct event {
  /// 1-255 bytes of UTF-8, no NUL.
  std::string type;
  /// Each 1-255 bytes of UTF-8, no NUL; conventionally `key:value`.
  std::vector<std::string> tags;
  /// Application payload.
  bytes data{};
  /// Application metadata (correlation ids and the like).
  bytes metadata{};

  friend bool operator==(const event&, const event&) = default;
};

/// An event as stored: with its position in the log and its commit time.
struct sequenced_event {
  /// Gap-free, starting at 1, in commit order.
  std::uint64_t position = 0;
  /// When the event was recorded.
  std::chrono::system_clock::time_point recorded_at;
  /// The event itself.
  dcbd::event event;
};

/// Matches an event iff (types empty or its type is in types) and its
/// tags contain all of `tags`. An item with neither types nor tags is invalid.
struct query_item {
  std::vector<std::string> types;
  std::vector<std::string> tags;

  friend bool operator==(const query_item&, const query_item&) = default;
};

/// OR over items. No items means: match every event.
struct query {
  std::vector<query_item> items;

  /// Returns the query that matches every event.
  static query all() {
    return {};
  }

  /// Returns whether this query matches every event.
  bool matches_all() const noexcept {
    return items.empty();
  }

  friend bool operator==(const query&, const query&) = default;
};

/// Where a read starts, how many events it returns and in which direction.
struct read_options {
  /// Inclusive start position; when backwards, the inclusive maximum.
  std::optional<std::uint64_t> from;
  /// At most this many events; absent means no limit.
  std::optional<std::uint64_t> limit;
  /// Newest first.
  bool backwards = false;
  /// Forward reads: the inclusive maximum position (absent: the snapshot
  /// head). Ignored when backwards. The cache reads the part of a range
  /// below its low end with it.
  std::optional<std::uint64_t> until{};
};

/// The append fails iff some event with position > `after` matches the
/// query. Absent `after` means the whole log.
struct append_condition {
  dcbd::query fail_if_events_match;
  std::optional<std::uint64_t> after;
};

/// A background job to enqueue (API.md §7). Only `kind` is required;
/// validation (store/job_model.hpp) bounds every field.
struct job_request {
  /// 1-128 characters: letters, digits, '_', '-', '.'.
  std::string queue = "default";
  /// What runs it: 1-255 bytes of UTF-8.
  std::string kind;
  /// A JSON value, as text (at most 1 MiB).
  std::string args = "{}";
  /// 1 (the default, the most urgent) to 100.
  int priority = 1;
  /// The earliest it may run, in microseconds since the Unix epoch. With
  /// `delay_ms`, both are lower bounds: the job is scheduled at the later
  /// of `run_at_us` and the insert's now() plus `delay_ms` (a delay of 0
  /// bounds nothing: a past `run_at_us` is kept).
  std::optional<std::int64_t> run_at_us;
  /// The earliest it may run, in milliseconds after the insert; 0 to 10
  /// years.
  std::int64_t delay_ms = 0;
  /// 1 to 1000 attempts before it is discarded.
  int max_attempts = 20;
  /// At most one live (not completed, cancelled or discarded) job has it;
  /// empty means none.
  std::string unique_key;
};

/// One conditional append: the unit of a group. Its jobs are inserted in
/// the same transaction as its events, so they exist iff it is accepted.
struct append_request {
  std::vector<event> events;
  std::optional<append_condition> condition;
  std::vector<job_request> jobs{};
};

/// The events of a read plus the store head of the same snapshot.
struct read_result {
  std::vector<sequenced_event> events;
  /// Position of the last committed event when the read's snapshot was taken
  /// (0 for an empty store). Use it as `after` of a follow-up condition only
  /// if the read was not cut short by `limit`.
  std::uint64_t head = 0;
};

/// Size limits that validation enforces (DESIGN §2).
struct limits {
  std::size_t max_type_bytes = 255;
  std::size_t max_tag_bytes = 255;
  /// Per event, data plus metadata.
  std::size_t max_payload_bytes = std::size_t{1} << 20;
  std::size_t max_tags_per_event = 1000;
  std::size_t max_events_per_append = 100'000;
  std::size_t max_query_items = 1000;
  /// Per query item, types plus tags.
  std::size_t max_item_values = 1000;
};

} // namespace dcbd
