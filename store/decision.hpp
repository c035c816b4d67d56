// Decision models and commands: the DCB read-decide-append loop as data.
//
// A decision model is a set of projectors. Projecting reads once with the
// union of their queries, feeds each event to the projectors whose query
// matches it, and returns their states plus the append condition that
// protects a decision made on them: {union query, after = head of that same
// read}. A command adds `decide(states) -> events or a rejection`.
#pragma once

#include "store/event_store.hpp"
#include "store/model.hpp"

#include <any>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

namespace dcbd {

/// Folds the events matching `query` into a state, starting from `initial`.
/// `apply` may throw; projecting then fails with `internal` naming the
/// projector.
struct projector {
  /// Names the state in `decision_states`; unique within a model.
  std::string id;
  /// Which events this projector sees (no items: every event).
  dcbd::query query;
  /// The state before any event.
  std::any initial;
  /// Applies one event to the state.
  std::function<void(std::any& state, const sequenced_event& e)> apply;
};

/// Makes a projector over a typed state: `apply(State&, const
/// sequenced_event&)`.
template <class State, class F>
projector make_projector(std::string id, query q, State initial, F apply) {
  return projector{std::move(id), std::move(q), std::any{std::move(initial)},
                   [f = std::move(apply)](std::any& state,
                                          const sequenced_event& e) {
                     f(*std::any_cast<State>(&state), e);
                   }};
}

/// The states of a projected decision model, by projector id.
class decision_states {
public:
  /// Adds the state of projector `id`.
  void add(std::string id, std::any state) {
    states_.emplace_back(std::move(id), std::move(state));
  }

  /// Returns the state of projector `id` as a `State`. Throws
  /// `std::out_of_range` for an unknown id and `std::bad_any_cast` for the
  /// wrong type.
  template <class State>
  const State& get(const std::string& id) const {
    return std::any_cast<const State&>(find(id));
  }

  /// Returns the type-erased state of projector `id`.
  const std::any& find(const std::string& id) const;

  /// Number of states.
  std::size_t size() const noexcept {
    return states_.size();
  }

private:
  std::vector<std::pair<std::string, std::any>> states_;
};

/// The result of projecting a decision model: the one result type of a
/// projection, for the store, the actors (as `projection`) and C++ callers.
struct decision {
  /// One state per projector; never null once projected. Shared, so the
  /// result is cheap to pass between actors (the states stay node-local).
  std::shared_ptr<const decision_states> states;
  /// Protects a decision made on `states`: absent for an empty model.
  std::optional<append_condition> condition;
  /// The head of the snapshot the states were read from.
  std::uint64_t head = 0;
  /// How many events were read.
  std::uint64_t events_read = 0;
};

/// Returns the union of the projectors' queries (an empty `items` list when
/// one of them matches every event).
query union_query(const std::vector<projector>& projectors);

/// Checks the projectors (unique non-empty ids, valid queries, an `apply`)
/// and normalizes their queries. Throws `store_error(invalid_argument)`.
void validate(std::vector<projector>& projectors, const limits& lim);

/// Projects a validated model: one streaming read with the union query, so
/// memory stays bounded by `chunking` whatever the number of events. Throws
/// `store_error` (store failures; `internal` when an `apply` throws).
decision project(event_store& store, const std::vector<projector>& projectors,
                 const stream_options& chunking = {});

/// The fold under `project`, for callers that read the events themselves
/// (e.g. from the event cache): feed it the events of the union query in
/// position order, then `finish` at the head they were read at.
class decision_fold {
public:
  /// Starts every projector of the validated `projectors` (which must
  /// outlive the fold) at its initial state.
  explicit decision_fold(const std::vector<projector>& projectors);

  /// Applies `e` to the projectors whose query matches it. Throws
  /// `store_error(internal)` naming the projector when an `apply` throws.
  void apply(const sequenced_event& e);

  /// The states, the condition {`q`, after = `head`} (none for an empty
  /// model) and the count; the fold is spent.
  decision finish(query q, std::uint64_t head);

private:
  const std::vector<projector>& projectors_;
  std::vector<std::any> states_;
  std::uint64_t events_ = 0;
};

/// What a command's `decide` returns: events to append (possibly none), or a
/// business rejection.
struct verdict {
  /// Appended with the model's condition when accepted.
  std::vector<event> events;
  /// Set when the command is rejected; nothing is appended.
  std::optional<std::string> rejection;
  /// Enqueued in the same transaction as `events` (PostgreSQL store only):
  /// they exist iff the events were appended. Jobs need events: a verdict
  /// with jobs and no events fails the command with `invalid_argument`.
  std::vector<job_request> jobs;

  /// Accepts the command: append `events` (none is a valid no-op).
  static verdict accept(std::vector<event> events) {
    return verdict{std::move(events), std::nullopt, {}};
  }

  /// Accepts the command: append `events` and enqueue `jobs` with them.
  static verdict accept(std::vector<event> events,
                        std::vector<job_request> jobs) {
    return verdict{std::move(events), std::nullopt, std::move(jobs)};
  }

  /// Rejects the command with a business reason.
  static verdict reject(std::string reason) {
    return verdict{{}, std::move(reason), {}};
  }
};

/// A command: a decision model plus a decision on its states. `decide` may
/// run several times (once per attempt) and must not have side effects.
struct command {
  /// Names the command in errors and metrics.
  std::string name;
  /// The decision model.
  std::vector<projector> projectors;
  /// Turns states into events or a rejection; may throw, which fails the
  /// command with `internal`.
  std::function<verdict(const decision_states&)> decide;
};

} // namespace dcbd
