// The store actor: one per node; owns the write connection and commits the
// appends waiting in its mailbox as one group (DESIGN §2 "Group commit").
//
// Messages:
//   (append_atom, validated_append) -> append_ack | error(errc)
//       only validation makes a validated_append (store/validation.hpp):
//       the store actor never sees unchecked input. It is node-local.
//   (append_atom, validated_append, append_callback_ptr)
//       the same append without a CAF request: the answer goes to the
//       callback, on the store actor's thread, after the commit (or at once
//       when the queue is full). Node-local; no timeout: the caller bounds
//       its own wait (see `engine::append_unbounded`).
//   (head_atom)                    -> uint64_t position of the last event
//   (listen_atom, actor)           -> listener gets (committed_atom,
//                                     committed_events) after every commit
//                                     with appended events, until it exits
//   (stats_atom)                   -> store_stats
//   (group_atom)                   internal: commit what is queued
#pragma once

#include "actors/inspect.hpp"
#include "store/event_store.hpp"
#include "store/model.hpp"
#include "store/validation.hpp"

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/expected.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

// Node-local: a validated append never crosses a node boundary (a remote
// node validates on arrival), so it is not serialized.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dcbd::validated_append)

namespace dcbd {

using append_atom = caf::atom_constant<caf::atom("dcbAppend")>;
using head_atom = caf::atom_constant<caf::atom("dcbHead")>;
using listen_atom = caf::atom_constant<caf::atom("dcbListen")>;
using committed_atom = caf::atom_constant<caf::atom("dcbCommit")>;
using stats_atom = caf::atom_constant<caf::atom("dcbStats")>;
using group_atom = caf::atom_constant<caf::atom("dcbGroup")>;

/// A successful append: the positions of its first and last event.
struct append_ack {
  std::uint64_t first_position = 0;
  std::uint64_t last_position = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, append_ack& x) {
  return f(caf::meta::type_name("dcbd::append_ack"), x.first_position,
           x.last_position);
}

/// Where the store actor answers an append that came without a CAF request
/// (node-local). It answers once; a callback the store actor never answers
/// (the message was dropped because the actor had stopped) answers
/// `unavailable` when its last copy goes, so no caller waits on an actor
/// that is gone.
class append_callback {
public:
  using function = std::function<void(caf::expected<append_ack>)>;

  explicit append_callback(function f) : f_(std::move(f)) {
    // nop
  }

  ~append_callback() {
    (*this)(caf::make_error(errc::unavailable,
                            "the store stopped before taking the append"));
  }

  append_callback(const append_callback&) = delete;
  append_callback& operator=(const append_callback&) = delete;

  /// Delivers `r` unless an answer went out before. What the function
  /// throws is dropped: it runs inside the store actor's commit.
  void operator()(caf::expected<append_ack> r) noexcept {
    auto f = std::move(f_);
    f_ = nullptr;
    if (!f)
      return;
    try {
      f(std::move(r));
    } catch (...) {
      // nop: the answer has no one else to go to
    }
  }

private:
  function f_;
};

/// A callback travels in a message as a shared pointer (node-local).
using append_callback_ptr = std::shared_ptr<append_callback>;

/// The events one group committed, in position order. `recorded_at` is the
/// store actor's clock when the commit returned, within the commit's
/// duration of the database's own timestamp (reads return the latter); the
/// bus measures commit-to-delivery latency from it.
struct committed_events {
  std::vector<sequenced_event> events;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, committed_events& x) {
  return f(caf::meta::type_name("dcbd::committed_events"), x.events);
}

/// Counters of a store actor since it started.
struct store_stats {
  /// Groups sent to the database.
  std::uint64_t groups = 0;
  /// Requests by outcome.
  std::uint64_t appended = 0;
  std::uint64_t conflicts = 0;
  std::uint64_t invalid = 0;
  std::uint64_t overloaded = 0;
  std::uint64_t unavailable = 0;
  std::uint64_t internal = 0;
  /// Events appended.
  std::uint64_t events = 0;
  /// The largest group so far, in requests.
  std::uint64_t max_group = 0;
  /// Connections reopened after the first.
  std::uint64_t reconnects = 0;
  /// Messages waiting in the mailbox when the stats were taken.
  std::uint64_t mailbox = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, store_stats& x) {
  return f(caf::meta::type_name("dcbd::store_stats"), x.groups, x.appended,
           x.conflicts, x.invalid, x.overloaded, x.unavailable, x.internal,
           x.events, x.max_group, x.reconnects, x.mailbox);
}

} // namespace dcbd

// Node-local, like the validated append it answers.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dcbd::append_callback_ptr)

namespace dcbd {

/// What a listener must accept.
using listener_actor
  = caf::typed_actor<caf::reacts_to<committed_atom, committed_events>>;

using store_actor = caf::typed_actor<
  caf::replies_to<append_atom, validated_append>::with<append_ack>,
  caf::reacts_to<append_atom, validated_append, append_callback_ptr>,
  caf::replies_to<head_atom>::with<std::uint64_t>,
  caf::reacts_to<listen_atom, caf::actor>,
  caf::replies_to<stats_atom>::with<store_stats>, caf::reacts_to<group_atom>>;

/// Bounds on one group and on the queue in front of the store actor.
struct group_limits {
  /// Most requests per group.
  std::size_t max_requests = 1000;
  /// Most events per group (a larger single request still goes alone).
  std::size_t max_events = 20'000;
  /// Most payload bytes per group (a larger single request still goes
  /// alone).
  std::size_t max_bytes = std::size_t{16} << 20;
  /// Most requests queued or in flight; past it callers get `overloaded`.
  std::size_t max_queue = 10'000;
};

/// Admission control in front of the store actor, shared with the actors
/// that feed it: at most `capacity` requests are queued or in flight.
class store_gate {
public:
  explicit store_gate(std::size_t capacity) : capacity_(capacity) {
    // nop
  }

  /// Admits one request unless the queue is full.
  bool try_enter() noexcept {
    auto n = depth_.load(std::memory_order_relaxed);
    do {
      if (n >= capacity_)
        return false;
    } while (
      !depth_.compare_exchange_weak(n, n + 1, std::memory_order_relaxed));
    return true;
  }

  /// Releases one admitted request.
  void leave() noexcept {
    depth_.fetch_sub(1, std::memory_order_relaxed);
  }

  /// Requests admitted and not yet answered.
  std::size_t depth() const noexcept {
    return depth_.load(std::memory_order_relaxed);
  }

  std::size_t capacity() const noexcept {
    return capacity_;
  }

private:
  std::size_t capacity_;
  std::atomic<std::size_t> depth_{0};
};

/// Hooks the store actor calls; the node implements them with Prometheus.
/// Called on the store actor's thread.
class store_metrics {
public:
  virtual ~store_metrics() = default;

  /// A group went to the database and came back after `latency`.
  virtual void group_committed(std::size_t requests, std::size_t events,
                               std::chrono::nanoseconds latency) {
    (void) requests;
    (void) events;
    (void) latency;
  }

  /// One request finished with `code` (none on success).
  virtual void request_finished(errc code, std::size_t events) {
    (void) code;
    (void) events;
  }

  /// An accepted append carried `n` jobs, enqueued in its transaction.
  virtual void jobs_enqueued(std::size_t n) {
    (void) n;
  }

  /// The mailbox held `depth` messages when a group was taken.
  virtual void queue_depth(std::size_t depth) {
    (void) depth;
  }
};

/// What a store actor tells its node's bus without a message: how many
/// groups it sent to the database, and how many of those it will never
/// announce (they appended nothing, or no one listens). The NOTIFY of a
/// group's commit may reach the bus before the store's announcement of it;
/// while a group is sent and not yet announced, the bus woken by a NOTIFY
/// waits for the announcement instead of reading the commit back from the
/// database. Only an optimization: the bus stays correct on any count.
struct store_groups {
  std::atomic<std::uint64_t> sent{0};
  std::atomic<std::uint64_t> unannounced{0};
};

/// How an actor that may block runs.
enum class spawn_mode {
  /// On a thread of its own (for a backend that blocks, e.g. PostgreSQL).
  detached,
  /// On the scheduler: for a backend that never blocks (the in-memory
  /// store), and for CAF's deterministic test coordinator.
  scheduled,
};

/// Spawns a store actor that owns `backend` (no one else should append
/// through it). `metrics` and `groups` may be null.
store_actor spawn_store(caf::actor_system& sys,
                        std::shared_ptr<event_store> backend,
                        group_limits limits,
                        std::shared_ptr<store_metrics> metrics = nullptr,
                        spawn_mode mode = spawn_mode::detached,
                        std::shared_ptr<store_groups> groups = nullptr);

} // namespace dcbd
