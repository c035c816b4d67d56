// The store actor: group commit from the mailbox.
//
// An append is parked with its response promise. The first parked request of
// a group sends the actor a group_atom, which queues behind every request
// already in the mailbox; handling it commits everything parked so far in
// one `append_validated` call. While that call blocks (the actor is detached),
// new requests pile up in the mailbox and become the next group. Groups are
// cut early when they reach the request, event or byte bounds.
#include "actors/errors.hpp"
#include "actors/store_protocol.hpp"
#include "store/validation.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <algorithm>
#include <utility>

namespace dcbd {

namespace {

struct parked {
  validated_append request;
  caf::typed_response_promise<append_ack> promise;
  std::size_t events = 0;
  // Set for an append that came without a CAF request: answered here
  // instead of `promise`.
  append_callback_ptr callback = nullptr;
};

// Answers a parked request through its callback or its response promise.
template <class T>
void answer(parked& p, T&& x) {
  if (p.callback)
    (*p.callback)(std::forward<T>(x));
  else
    p.promise.deliver(std::forward<T>(x));
}

struct store_state {
  // A declared constructor keeps this from being an aggregate: CAF 0.17
  // constructs states from the actor pointer when it can, and C++20 would
  // aggregate-initialize the first member from it.
  store_state() = default;

  std::shared_ptr<event_store> backend;
  group_limits limits;
  std::shared_ptr<store_metrics> metrics;
  std::shared_ptr<store_groups> groups;
  std::vector<parked> queue;
  std::size_t queued_events = 0;
  std::size_t queued_bytes = 0;
  bool group_scheduled = false;
  std::vector<caf::actor> listeners;
  store_stats stats;
  static inline const char* name = "dcbd.store";
};

using store_pointer = store_actor::stateful_pointer<store_state>;

void count(store_state& st, errc code, std::size_t events) {
  switch (code) {
    case errc::none:
      ++st.stats.appended;
      st.stats.events += events;
      break;
    case errc::append_condition_failed:
      ++st.stats.conflicts;
      break;
    case errc::invalid_argument:
      ++st.stats.invalid;
      break;
    case errc::overloaded:
      ++st.stats.overloaded;
      break;
    case errc::unavailable:
      ++st.stats.unavailable;
      break;
    case errc::internal:
      ++st.stats.internal;
      break;
  }
  if (st.metrics)
    st.metrics->request_finished(code, code == errc::none ? events : 0);
}

// Commits every parked request as one group and answers each caller.
void commit(store_pointer self) {
  auto& st = self->state;
  if (st.queue.empty())
    return;
  auto batch = std::move(st.queue);
  st.queue.clear();
  st.queued_events = 0;
  st.queued_bytes = 0;
  if (st.metrics)
    st.metrics->queue_depth(self->mailbox().size());
  std::vector<validated_append> group;
  group.reserve(batch.size());
  for (auto& p : batch)
    group.push_back(std::move(p.request));
  auto t0 = std::chrono::steady_clock::now();
  // Before anything goes on the wire, hence before its NOTIFY can.
  if (st.groups)
    st.groups->sent.fetch_add(1, std::memory_order_release);
  std::vector<append_result> results;
  try {
    results = st.backend->append_validated(group);
  } catch (const store_error& e) {
    results.assign(batch.size(), append_result{e.code(), 0, e.what()});
  } catch (const std::exception& e) {
    results.assign(batch.size(),
                   append_result{errc::internal, 0,
                                 std::string{"store failed: "} + e.what()});
  }
  if (results.size() != batch.size())
    results.assign(batch.size(),
                   append_result{errc::internal, 0,
                                 "store returned the wrong number of results"});
  auto latency = std::chrono::steady_clock::now() - t0;
  // The commit's time for listeners: the bus measures commit-to-delivery
  // from it.
  auto committed_at = std::chrono::system_clock::now();
  ++st.stats.groups;
  st.stats.max_group = std::max<std::uint64_t>(st.stats.max_group,
                                               batch.size());
  st.stats.reconnects = st.backend->reconnects();
  // Counters and hooks first: a caller that sees its answer sees them too.
  std::size_t appended_events = 0;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (results[i].ok()) {
      appended_events += batch[i].events;
      if (st.metrics && !group[i].jobs().empty())
        st.metrics->jobs_enqueued(group[i].jobs().size());
    }
    count(st, results[i].code, batch[i].events);
  }
  if (st.metrics)
    st.metrics->group_committed(batch.size(), appended_events, latency);
  committed_events announcement;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    auto& r = results[i];
    auto& p = batch[i];
    if (r.ok()) {
      append_ack ack;
      ack.last_position = r.last_position;
      ack.first_position = r.last_position - p.events + 1;
      if (!st.listeners.empty()) {
        auto pos = ack.first_position;
        // Validation made the events their stored form already.
        // The database's commit time when the store reports it (reads
        // return that one), else the actor's clock.
        auto at = r.recorded_at != std::chrono::system_clock::time_point{}
                    ? r.recorded_at
                    : committed_at;
        for (auto& e : std::move(group[i]).take_events()) {
          announcement.events.push_back(
            sequenced_event{pos++, at, std::move(e)});
        }
      }
      answer(p, ack);
    } else {
      answer(p, caf::make_error(r.code, std::move(r.message)));
    }
  }
  if (!announcement.events.empty()) {
    std::sort(announcement.events.begin(), announcement.events.end(),
              [](auto& a, auto& b) {
                return a.position < b.position;
              });
    for (auto& l : st.listeners)
      self->send(caf::actor_cast<listener_actor>(l), committed_atom::value,
                 announcement);
  } else if (st.groups) {
    st.groups->unannounced.fetch_add(1, std::memory_order_release);
  }
}

// Refuses an append when the queue is full. The mailbox holds what the gate
// cannot see: requests from senders that bypass it, and a backlog built up
// during a stall. The actor's own group message is no request: counting it
// refused an append that arrived between the parking of the one before and
// the start of its commit.
caf::error queue_full(store_pointer self) {
  auto& st = self->state;
  auto waiting = self->mailbox().size();
  if (st.group_scheduled && waiting > 0)
    --waiting;
  if (st.queue.size() + waiting < st.limits.max_queue)
    return {};
  count(st, errc::overloaded, 0);
  return caf::make_error(errc::overloaded,
                         "the store queue is full ("
                           + std::to_string(st.limits.max_queue)
                           + " requests); retry later");
}

// Parks an append for the next group, committing the current one first when
// the append would overflow it.
void park(store_pointer self, parked p) {
  auto& st = self->state;
  auto events = p.request.events().size();
  auto bytes = p.request.payload_bytes();
  p.events = events;
  if (!st.queue.empty()
      && (st.queue.size() >= st.limits.max_requests
          || st.queued_events + events > st.limits.max_events
          || st.queued_bytes + bytes > st.limits.max_bytes))
    commit(self);
  st.queue.push_back(std::move(p));
  st.queued_events += events;
  st.queued_bytes += bytes;
  if (!st.group_scheduled) {
    st.group_scheduled = true;
    self->send(self, group_atom::value);
  }
}

store_actor::behavior_type
store_impl(store_pointer self, std::shared_ptr<event_store> backend,
           group_limits limits, std::shared_ptr<store_metrics> metrics,
           std::shared_ptr<store_groups> groups) {
  auto& st = self->state;
  st.backend = std::move(backend);
  st.groups = std::move(groups);
  st.limits = limits;
  st.limits.max_requests = std::max<std::size_t>(st.limits.max_requests, 1);
  st.metrics = std::move(metrics);
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& ls = self->state.listeners;
    ls.erase(std::remove_if(ls.begin(), ls.end(),
                            [&](const caf::actor& a) {
                              return a.address() == dm.source;
                            }),
             ls.end());
  });
  // On shutdown, commit (or fail) what is parked, so every caller whose
  // request was taken gets its answer; CAF bounces what is still queued.
  self->set_exit_handler([self](caf::exit_msg& em) {
    commit(self);
    self->quit(std::move(em.reason));
  });
  detail::install_exception_handler(self);
  return {
    [self](append_atom, validated_append& req) -> caf::result<append_ack> {
      if (auto err = queue_full(self))
        return err;
      auto promise = self->make_response_promise<append_ack>();
      park(self, parked{std::move(req), promise});
      return promise;
    },
    [self](append_atom, validated_append& req, append_callback_ptr& callback) {
      if (!callback)
        return;
      if (auto err = queue_full(self))
        return (*callback)(std::move(err));
      park(self, parked{std::move(req), {}, 0, std::move(callback)});
    },
    [self](group_atom) {
      self->state.group_scheduled = false;
      commit(self);
    },
    [self](head_atom) -> caf::result<std::uint64_t> {
      try {
        return self->state.backend->head();
      } catch (...) {
        return detail::error_from_current_exception();
      }
    },
    [self](listen_atom, const caf::actor& listener) {
      auto& ls = self->state.listeners;
      if (!listener || std::find(ls.begin(), ls.end(), listener) != ls.end())
        return;
      self->monitor(listener);
      ls.push_back(listener);
    },
    [self](stats_atom) {
      auto s = self->state.stats;
      s.mailbox = self->mailbox().size();
      return s;
    },
  };
}

} // namespace

store_actor
spawn_store(caf::actor_system& sys, std::shared_ptr<event_store> backend,
            group_limits limits, std::shared_ptr<store_metrics> metrics,
            spawn_mode mode, std::shared_ptr<store_groups> groups) {
  if (mode == spawn_mode::scheduled)
    return sys.spawn(store_impl, std::move(backend), limits, std::move(metrics),
                     std::move(groups));
  return sys.spawn<caf::detached>(store_impl, std::move(backend), limits,
                                  std::move(metrics), std::move(groups));
}

} // namespace dcbd
