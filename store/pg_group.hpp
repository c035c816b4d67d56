// A group of appends as the flat arrays the PostgreSQL statements take:
// pure logic, no database (DESIGN §2 "Group commit").
//
// A group goes to the server in one statement. Its requests, events, tags,
// payloads and condition items become parallel arrays (PostgreSQL array
// literals); `dep_*` lists, for each conditional request, the last event of
// every earlier request of the group that its condition matches, so the
// server can decide in-group conflicts knowing which earlier requests were
// accepted. `job_*` lists the jobs with their request, so the server
// inserts those of the accepted requests.
#pragma once

#include "store/model.hpp"
#include "store/validation.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace dcbd::pg {

/// Incrementally builds a PostgreSQL array literal, e.g. {1,2} or {"a","b"}.
class array_builder {
public:
  /// Adds an integer element.
  void add(std::int64_t x);

  /// Adds a string element, quoted and escaped.
  void add(std::string_view s);

  /// Adds a NULL element.
  void add_null();

  /// The literal so far.
  std::string str() const {
    return out_ + '}';
  }

private:
  void sep() {
    if (out_.size() > 1)
      out_ += ',';
  }

  std::string out_ = "{";
};

/// How a request's condition is checked; the numbers are part of the SQL
/// function's contract.
enum condition_kind : std::int16_t { unconditional = 0, items = 1, all = 2 };

/// Returns the kind of `req`'s condition.
condition_kind kind_of(const validated_append& req) noexcept;

/// The flat arrays the `append_group` SQL function (and the plain statement
/// for unconditional groups) take. Offsets are 1-based, as in SQL.
struct group_arrays {
  array_builder req_kind, req_after, req_nev;
  array_builder ev_req, ev_idx, ev_type, ev_tag_off, ev_tag_cnt, tags;
  array_builder ev_data_off, ev_data_len, ev_meta_off, ev_meta_len;
  std::string data, meta;
  array_builder it_req, it_type_off, it_type_cnt, it_types;
  array_builder it_tag_off, it_tag_cnt, it_tags;
  array_builder dep_req, dep_on, dep_off;
  /// Per request: 1-based index of its last event among all events.
  array_builder req_last_event;
  /// Per job, in request order: its request (1-based), queue, kind, args
  /// (JSON text), priority, run_at (microseconds since the epoch, NULL
  /// when unset), delay (milliseconds; the job starts at the later of the
  /// two, pg::job_start_sql), max_attempts and unique key (NULL when empty).
  array_builder job_req, job_queue, job_kind, job_args, job_priority;
  array_builder job_run_at, job_delay, job_max_attempts, job_unique_key;
  /// Whether any request has a condition.
  bool conditional = false;
  /// Whether any request has jobs (the statements that insert them are
  /// used only then).
  bool has_jobs = false;
};

/// The events of the requests of a group seen so far, indexed by tag and by
/// type, so that finding which of them a condition matches looks only at
/// events that share a tag or type with it, not at the whole group. Holds
/// pointers into the events it was given: they must outlive it.
class group_index {
public:
  /// Adds the events of request `r` (0-based, in group order).
  void add(std::size_t r, const std::vector<event>& events);

  /// Returns, for each earlier request with an event matching `q`, the
  /// request and the index of its last such event, ordered by request.
  std::vector<std::pair<std::size_t, std::size_t>>
  last_matches(const query& q) const;

private:
  struct event_ref {
    std::size_t req;
    std::size_t idx;
    const event* e;
  };
  using refs = std::vector<event_ref>;

  std::vector<const refs*> candidates(const query_item& item) const;

  std::unordered_map<std::string_view, refs> by_type_;
  std::unordered_map<std::string_view, refs> by_tag_;
};

/// Fills the arrays for the requests `group[part[0]], group[part[1]], ...`,
/// in that order. `checked_through` (empty, or one per request of `group`):
/// what `event_store::append_prechecked` was told. A request whose items
/// are clean through a position above its `after` gets that position as
/// its `after` in the arrays: the function then looks for matches only
/// past it, and not at all while the head is still there. (Its other uses
/// of `after` compare it with positions past the head, so they decide the
/// same.)
group_arrays flatten(const std::vector<validated_append>& group,
                     const std::vector<std::size_t>& part,
                     std::span<const std::uint64_t> checked_through = {});

/// Parses PostgreSQL's text form of a bigint[] without NULLs, e.g. {3,0,7}.
/// Throws `store_error(internal)` on anything else.
std::vector<std::int64_t> parse_int_array(std::string_view s);

} // namespace dcbd::pg
