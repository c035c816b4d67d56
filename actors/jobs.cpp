// The job dispatcher, its workers, the executor behind management calls
// and external workers, long-polling fetches, and triggers.
//
// Three kinds of detached actors (all may block on PostgreSQL or on user
// code):
// - the dispatcher (one per node): fetches for its in-process workers,
//   batches their outcomes, heartbeats their leases, and drives the timers
//   (poll, maintenance, long-poll deadlines, trigger sync);
// - workers (`concurrency` per kind): run one attempt at a time;
// - executors (a pool): run management calls, external workers' calls,
//   maintenance and trigger writes, off the dispatcher's thread.
#include "actors/jobs.hpp"

#include "actors/engine.hpp"
#include "actors/errors.hpp"
#include "actors/pool.hpp"
#include "store/pg_listener.hpp"
#include "store/validation.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>

#include <algorithm>
#include <deque>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <unordered_map>

namespace dcbd {

namespace {

using spec_ptr = std::shared_ptr<const job_worker_spec>;

/// A closure for an executor.
struct job_task {
  std::function<void()> run;
};

/// A worker's report of one attempt.
struct attempt_report {
  job j;
  job_result result;
  double seconds = 0;
  /// The attempt completed in its own transaction (nothing left to write).
  bool final = false;
  /// Its lease was found stale (nothing left to write).
  bool lost = false;
};

} // namespace
} // namespace dcbd

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dcbd::spec_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dcbd::job_task)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dcbd::attempt_report)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dcbd::job)

namespace dcbd {

namespace {

using jd_add_atom = caf::atom_constant<caf::atom("jdAdd")>;
using jd_wake_atom = caf::atom_constant<caf::atom("jdWake")>;
using jd_tick_atom = caf::atom_constant<caf::atom("jdTick")>;
using jd_flush_atom = caf::atom_constant<caf::atom("jdFlush")>;
using jd_run_atom = caf::atom_constant<caf::atom("jdRun")>;
using jd_done_atom = caf::atom_constant<caf::atom("jdDone")>;
using jd_stop_atom = caf::atom_constant<caf::atom("jdStop")>;
using jd_grace_atom = caf::atom_constant<caf::atom("jdGrace")>;
using jd_waiters_atom = caf::atom_constant<caf::atom("jdWaiters")>;

using clock_type = std::chrono::steady_clock;

double now_unix_seconds() {
  return std::chrono::duration<double>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

const char* result_name(job_outcome::kind k, std::optional<job_state> s) {
  if (!s)
    return "lease_lost";
  switch (k) {
    case job_outcome::kind::complete:
      return "completed";
    case job_outcome::kind::snooze:
      return "snoozed";
    case job_outcome::kind::discard:
      return "discarded";
    case job_outcome::kind::fail:
      return *s == job_state::discarded ? "discarded" : "retryable";
  }
  return "completed";
}

caf::error error_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (...) {
    return detail::error_from_current_exception();
  }
}

/// A long-polling external fetch.
struct waiter {
  job_fetch f;
  clock_type::time_point deadline;
  job_service::callback<std::vector<job>> done;
};

/// Items of a trigger's subscription waiting to be written.
struct trigger_batch {
  std::vector<sequenced_event> events;
  std::uint64_t upto = 0;
  std::function<void(bool)> ack;
};

/// A trigger this node follows.
struct trigger_run {
  /// Batches not yet written, in order, and whether an executor drains them.
  std::deque<trigger_batch> queue;
  bool busy = false;
  subscription sub;
  /// The checkpoint as last written (or read).
  std::uint64_t position = 0;
  /// The subscription ended (or failed): the next sync follows it again.
  bool ended = false;
  /// Tells this subscription's batches from those of an earlier one that
  /// may still arrive (and must not be written: they may follow a gap).
  std::uint64_t gen = 0;
};

} // namespace

// What the service, its actors and its callbacks share.
struct job_service::impl : std::enable_shared_from_this<job_service::impl> {
  caf::actor_system& sys;
  engine& eng;
  jobs_config cfg;
  std::shared_ptr<job_metrics> metrics;
  std::unique_ptr<pg_jobs> store;
  caf::actor executors;
  caf::actor dispatcher;
  std::unique_ptr<pg_listener> listener;

  std::atomic<bool> stopped{false};
  std::atomic<bool> maintaining{false};
  std::atomic<bool> syncing{false};

  mutable std::mutex mtx;
  std::vector<waiter> waiters;
  std::set<std::string> kinds;
  std::map<std::string, trigger_run> triggers;
  std::uint64_t trigger_gen = 0;

  // Counters (jobs_stats).
  std::atomic<std::uint64_t> fetched{0}, completed{0}, failed{0}, lease_lost{0},
    rescued{0}, flushes{0}, running{0}, trigger_jobs{0}, pruned{0};

  impl(caf::actor_system& s, engine& e) : sys(s), eng(e) {
    // nop
  }

  /// Runs `f` on an executor; `fail` gets what it throws.
  void submit(std::function<void()> f) {
    caf::anon_send(executors, job_task{std::move(f)});
  }

  template <class T, class F>
  void async(job_service::callback<T> done, F f) {
    if (stopped.load()) {
      done(caf::make_error(errc::unavailable, "the job service has stopped"));
      return;
    }
    submit([done = std::move(done), f = std::move(f)]() mutable {
      std::optional<caf::expected<T>> result;
      try {
        result.emplace(f());
      } catch (...) {
        result.emplace(error_of(std::current_exception()));
      }
      done(std::move(*result));
    });
  }

  // -- long-polling fetches ---------------------------------------------------

  /// Tries the waiters of `queue` (all when empty) again; answers those
  /// that got jobs or whose time is up. `expire_only`: only answer those
  /// whose time is up.
  void poke(const std::string& queue, bool expire_only) {
    std::vector<waiter> ready;
    auto now = clock_type::now();
    {
      std::lock_guard guard{mtx};
      for (auto i = waiters.begin(); i != waiters.end();) {
        bool expired = now >= i->deadline;
        bool match = !expire_only && (queue.empty() || i->f.queue == queue);
        if (expired || match) {
          ready.push_back(std::move(*i));
          i = waiters.erase(i);
        } else {
          ++i;
        }
      }
    }
    for (auto& w : ready)
      try_waiter(std::move(w));
  }

  void try_waiter(waiter w) {
    auto self = shared_from_this();
    submit([self, w = std::move(w)]() mutable {
      try {
        auto got = self->store->fetch(w.f);
        self->fetched += got.size();
        if (!got.empty() || clock_type::now() >= w.deadline
            || self->stopped.load()) {
          for (const auto& j : got)
            self->note_wait(j);
          w.done(std::move(got));
          return;
        }
      } catch (...) {
        w.done(error_of(std::current_exception()));
        return;
      }
      std::lock_guard guard{self->mtx};
      self->waiters.push_back(std::move(w));
    });
  }

  bool has_waiters() const {
    std::lock_guard guard{mtx};
    return !waiters.empty();
  }

  void note_wait(const job& j) {
    if (metrics && j.attempted_at_us > 0)
      metrics->waited(std::max(
        0.0, static_cast<double>(j.attempted_at_us - j.scheduled_at_us) / 1e6));
  }

  // -- maintenance ------------------------------------------------------------

  void maintain() {
    if (maintaining.exchange(true))
      return;
    auto self = shared_from_this();
    submit([self] {
      try {
        auto r = self->store->rescue();
        if (!r.empty()) {
          self->rescued += r.size();
          if (self->metrics)
            self->metrics->rescued(r.size());
        }
        self->store->promote_due();
        self->prune();
      } catch (const std::exception& e) {
        std::cerr << "dcbd jobs: maintenance: " << e.what() << std::endl;
      }
      self->maintaining = false;
    });
  }

  /// Deletes final jobs past their retention: whole batches while there
  /// are more, for at most a quarter of a second per maintenance run, so
  /// that the table keeps up with tens of thousands of jobs a second and
  /// an old backlog goes in steps that never hold the connection long.
  void prune() {
    auto until = clock_type::now() + std::chrono::milliseconds{250};
    auto batch = std::max<std::size_t>(cfg.retention.batch, 1);
    while (!stopped.load()) {
      auto n = store->prune(cfg.retention);
      pruned += n;
      if (n < batch || clock_type::now() >= until)
        break;
    }
  }

  // -- triggers ---------------------------------------------------------------

  /// Starts following the triggers in the database that this node does not
  /// follow yet, and stops those that are gone.
  void sync_triggers() {
    if (!cfg.triggers || stopped.load() || syncing.exchange(true))
      return;
    auto self = shared_from_this();
    submit([self] {
      try {
        auto all = self->store->triggers();
        std::set<std::string> names;
        for (auto& t : all) {
          names.insert(t.name);
          self->follow(t);
        }
        std::vector<subscription> gone;
        {
          std::lock_guard guard{self->mtx};
          for (auto i = self->triggers.begin(); i != self->triggers.end();) {
            if (names.count(i->first) == 0 || i->second.ended) {
              gone.push_back(i->second.sub);
              i = self->triggers.erase(i);
            } else {
              ++i;
            }
          }
        }
        for (auto& s : gone)
          s.cancel();
      } catch (const std::exception& e) {
        std::cerr << "dcbd jobs: trigger sync: " << e.what() << std::endl;
      }
      self->syncing = false;
    });
  }

  void follow(const job_trigger& t) {
    std::uint64_t gen = 0;
    {
      std::lock_guard guard{mtx};
      if (stopped.load() || triggers.count(t.name) != 0)
        return;
      auto& run = triggers[t.name];
      run.position = t.position;
      run.gen = gen = ++trigger_gen;
    }
    std::weak_ptr<impl> weak = shared_from_this();
    auto name = t.name;
    subscribe_options opts;
    opts.credit = cfg.trigger_credit;
    auto sub = eng.subscribe_paced(
      t.query, t.position,
      [weak, name, gen](std::vector<bus_item>& items,
                        std::function<void(bool)> ack) {
        auto self = weak.lock();
        if (!self)
          return ack(false);
        self->on_trigger_items(name, gen, std::move(items), std::move(ack));
      },
      [weak, name, gen](const bus_end& end) {
        auto self = weak.lock();
        if (!self)
          return;
        if (end.code != errc::none && !self->stopped.load())
          std::cerr << "dcbd jobs: trigger " << name
                    << " subscription ended: " << end.message
                    << " (following it again)" << std::endl;
        std::lock_guard guard{self->mtx};
        auto i = self->triggers.find(name);
        if (i != self->triggers.end() && i->second.gen == gen)
          i->second.ended = true;
      },
      opts);
    std::lock_guard guard{mtx};
    auto i = triggers.find(name);
    if (i != triggers.end() && i->second.gen == gen)
      i->second.sub = sub;
    else
      sub.cancel();
  }

  /// Batches of a subscription arrive while earlier ones are written (the
  /// bus sends as long as credit lasts), so each trigger has a queue that
  /// one executor drains at a time, in order, many batches per write.
  void on_trigger_items(const std::string& name, std::uint64_t gen,
                        std::vector<bus_item> items,
                        std::function<void(bool)> ack) {
    trigger_batch b;
    b.ack = std::move(ack);
    for (const auto& it : items) {
      if (it.kind == bus_item_kind::event && it.event) {
        b.events.push_back(*it.event);
        b.upto = std::max(b.upto, it.position);
      } else if (it.kind == bus_item_kind::checkpoint
                 || it.kind == bus_item_kind::caught_up) {
        b.upto = std::max(b.upto, it.position);
      }
    }
    std::unique_lock guard{mtx};
    auto i = triggers.find(name);
    if (i == triggers.end() || i->second.gen != gen || i->second.ended) {
      guard.unlock();
      return b.ack(false);
    }
    auto& run = i->second;
    // Nothing to insert and a checkpoint not worth a write.
    if (b.events.empty() && b.upto <= run.position && run.queue.empty()
        && !run.busy) {
      guard.unlock();
      return b.ack(true);
    }
    run.queue.push_back(std::move(b));
    if (run.busy)
      return;
    run.busy = true;
    guard.unlock();
    auto self = shared_from_this();
    submit([self, name, gen] {
      self->drain_trigger(name, gen);
    });
  }

  void drain_trigger(const std::string& name, std::uint64_t gen) {
    for (;;) {
      std::deque<trigger_batch> batches;
      {
        std::lock_guard guard{mtx};
        auto i = triggers.find(name);
        if (i == triggers.end() || i->second.gen != gen)
          return;
        if (i->second.queue.empty()) {
          i->second.busy = false;
          return;
        }
        batches.swap(i->second.queue);
      }
      std::vector<sequenced_event> events;
      std::uint64_t upto = 0;
      for (auto& b : batches) {
        for (auto& e : b.events)
          events.push_back(std::move(e));
        upto = std::max(upto, b.upto);
      }
      bool ok = false;
      try {
        auto after = store->fire(name, events, upto);
        if (after && after->jobs > 0 && metrics)
          metrics->enqueued(after->jobs);
        std::lock_guard guard{mtx};
        auto i = triggers.find(name);
        bool mine = i != triggers.end() && i->second.gen == gen;
        if (!after) {
          // Deleted: the next sync forgets it.
          if (mine)
            i->second.ended = true;
        } else {
          ok = true;
          trigger_jobs += after->jobs;
          if (mine)
            i->second.position = after->checkpoint;
        }
      } catch (const std::exception& e) {
        // Let go; the next sync follows it again from its checkpoint.
        if (!stopped.load())
          std::cerr << "dcbd jobs: trigger " << name << ": " << e.what()
                    << " (following it again from its checkpoint)" << std::endl;
        std::lock_guard guard{mtx};
        auto i = triggers.find(name);
        if (i != triggers.end() && i->second.gen == gen)
          i->second.ended = true;
      }
      for (auto& b : batches)
        b.ack(ok);
      if (!ok) {
        std::deque<trigger_batch> rest;
        {
          std::lock_guard guard{mtx};
          auto i = triggers.find(name);
          if (i != triggers.end() && i->second.gen == gen) {
            rest.swap(i->second.queue);
            i->second.busy = false;
          }
        }
        for (auto& b : rest)
          b.ack(false);
        return;
      }
    }
  }

  void stop_triggers() {
    std::map<std::string, trigger_run> all;
    {
      std::lock_guard guard{mtx};
      all.swap(triggers);
    }
    for (auto& [name, run] : all)
      run.sub.cancel();
  }
};

namespace {

using impl_ptr = std::shared_ptr<job_service::impl>;

// -- workers ------------------------------------------------------------------

struct worker_state {
  impl_ptr svc;
  spec_ptr spec;
  caf::actor dispatcher;
  std::unique_ptr<pg_job_connection> conn;
};

using worker_actor = caf::stateful_actor<worker_state>;

job_result run_plain(const job_worker_spec& spec, const job& j) {
  try {
    return spec.handle(j);
  } catch (const std::exception& e) {
    return job_result::retry(e.what());
  } catch (...) {
    return job_result::retry("the worker threw");
  }
}

caf::behavior worker_impl(worker_actor* self, impl_ptr svc, spec_ptr spec,
                          caf::actor dispatcher) {
  self->state.svc = std::move(svc);
  self->state.spec = std::move(spec);
  self->state.dispatcher = std::move(dispatcher);
  return {
    [self](jd_run_atom, job& j) {
      auto& st = self->state;
      attempt_report rep;
      auto start = clock_type::now();
      if (st.spec->handle) {
        rep.result = run_plain(*st.spec, j);
      } else {
        try {
          if (!st.conn)
            st.conn
              = std::make_unique<pg_job_connection>(st.svc->eng.config().store);
          auto done = st.conn->run(j.id, j.lease, [&](pqxx::work& tx) {
            rep.result = st.spec->handle_tx(tx, j);
            return rep.result.what == job_outcome::kind::complete;
          });
          rep.final = done == pg_job_connection::outcome::committed;
          rep.lost = done == pg_job_connection::outcome::lease_lost;
        } catch (const std::exception& e) {
          rep.result = job_result::retry(e.what());
        } catch (...) {
          rep.result = job_result::retry("the worker threw");
        }
      }
      rep.seconds
        = std::chrono::duration<double>(clock_type::now() - start).count();
      rep.j = std::move(j);
      self->send(st.dispatcher, jd_done_atom::value, std::move(rep));
    },
  };
}

// -- the dispatcher
// -------------------------------------------------------------

struct kind_slots {
  spec_ptr spec;
  std::vector<caf::actor> all;
  std::vector<caf::actor> idle;
  std::deque<job> backlog;
};

struct pending_outcome {
  job_outcome o;
  std::string queue;
  std::string kind;
  double seconds = 0;
};

struct dispatcher_state {
  impl_ptr svc;
  std::map<std::string, kind_slots> kinds;
  /// Queue -> its kinds.
  std::map<std::string, std::vector<std::string>> queues;
  /// Jobs this node holds a lease on (running or waiting for a slot).
  std::unordered_map<std::int64_t, job> held;
  std::vector<pending_outcome> pending;
  std::set<std::string> refill;
  bool flush_scheduled = false;
  bool waiter_timer = false;
  bool stopping = false;
  std::vector<caf::response_promise> stop_promises;
  clock_type::time_point last_poll{}, last_heartbeat{}, last_maintenance{};
  clock_type::time_point last_error_log{};
};

using dispatcher_actor = caf::stateful_actor<dispatcher_state>;

void log_error(dispatcher_actor* self, const std::string& what) {
  auto& st = self->state;
  auto now = clock_type::now();
  if (now - st.last_error_log < std::chrono::seconds{10})
    return;
  st.last_error_log = now;
  std::cerr << "dcbd jobs: " << what << std::endl;
}

std::size_t free_slots(const kind_slots& k, std::size_t prefetch) {
  auto busy = k.all.size() - k.idle.size() + k.backlog.size();
  auto room = k.all.size() * (1 + prefetch);
  return busy >= room ? 0 : room - busy;
}

void start_attempt(dispatcher_actor* self, kind_slots& k, job j) {
  auto w = k.idle.back();
  k.idle.pop_back();
  ++self->state.svc->running;
  self->send(w, jd_run_atom::value, std::move(j));
}

void fetch_for(dispatcher_actor* self, const std::string& queue) {
  auto& st = self->state;
  if (st.stopping)
    return;
  auto q = st.queues.find(queue);
  if (q == st.queues.end())
    return;
  job_fetch f;
  f.queue = queue;
  f.worker = st.svc->cfg.node;
  f.lease_ms = st.svc->cfg.lease.count();
  std::size_t free = 0;
  for (const auto& kind : q->second) {
    auto n = free_slots(st.kinds[kind], st.svc->cfg.prefetch);
    if (n > 0) {
      f.kinds.push_back(kind);
      free += n;
    }
  }
  if (free == 0)
    return;
  f.max = std::min(free, st.svc->cfg.max_fetch);
  std::vector<job> got;
  try {
    got = st.svc->store->fetch(f);
  } catch (const std::exception& e) {
    log_error(self, std::string{"fetch: "} + e.what());
    return;
  }
  st.svc->fetched += got.size();
  for (auto& j : got) {
    st.svc->note_wait(j);
    st.held.emplace(j.id, j);
    auto& k = st.kinds[j.kind];
    if (!k.idle.empty())
      start_attempt(self, k, std::move(j));
    else
      k.backlog.push_back(std::move(j));
  }
}

void flush(dispatcher_actor* self) {
  auto& st = self->state;
  st.flush_scheduled = false;
  if (!st.pending.empty()) {
    std::vector<job_outcome> outs;
    outs.reserve(st.pending.size());
    for (auto& p : st.pending)
      outs.push_back(p.o);
    std::vector<std::optional<job_state>> states;
    // The outcomes stay worth writing while the leases last; past them the
    // jobs are rescued and the outcomes would be refused anyway.
    auto give_up = clock_type::now() + st.svc->cfg.lease;
    for (auto backoff = std::chrono::milliseconds{50};;
         backoff = std::min(backoff * 2, std::chrono::milliseconds{1000})) {
      try {
        states = st.svc->store->finish(outs);
        break;
      } catch (const std::exception& e) {
        log_error(self, std::string{"applying outcomes: "} + e.what());
        if (clock_type::now() + backoff > give_up)
          break;
        std::this_thread::sleep_for(backoff);
      }
    }
    ++st.svc->flushes;
    for (std::size_t i = 0; i < st.pending.size() && i < states.size(); ++i) {
      auto& p = st.pending[i];
      auto name = result_name(p.o.what, states[i]);
      if (!states[i])
        ++st.svc->lease_lost;
      else if (*states[i] == job_state::completed)
        ++st.svc->completed;
      else if (p.o.what != job_outcome::kind::snooze)
        ++st.svc->failed;
      if (st.svc->metrics)
        st.svc->metrics->ran(p.queue, p.kind, name, p.seconds);
    }
    st.pending.clear();
  }
  auto refill = std::move(st.refill);
  st.refill.clear();
  for (const auto& q : refill)
    fetch_for(self, q);
}

void schedule_flush(dispatcher_actor* self) {
  auto& st = self->state;
  if (st.pending.size() >= st.svc->cfg.flush_max) {
    flush(self);
    return;
  }
  if (st.flush_scheduled)
    return;
  st.flush_scheduled = true;
  self->delayed_send(self, st.svc->cfg.flush, jd_flush_atom::value);
}

void heartbeat(dispatcher_actor* self) {
  auto& st = self->state;
  if (st.held.empty())
    return;
  std::vector<std::int64_t> ids, leases;
  for (const auto& [id, j] : st.held) {
    ids.push_back(id);
    leases.push_back(j.lease);
  }
  try {
    st.svc->store->heartbeat(ids, leases, st.svc->cfg.lease.count());
  } catch (const std::exception& e) {
    log_error(self, std::string{"heartbeat: "} + e.what());
  }
}

bool idle(const dispatcher_state& st) {
  for (const auto& [name, k] : st.kinds)
    if (k.idle.size() != k.all.size())
      return false;
  return true;
}

void finish_stop(dispatcher_actor* self) {
  auto& st = self->state;
  // Jobs that never started go back at once (a snooze keeps their attempt).
  for (auto& [name, k] : st.kinds) {
    for (auto& j : k.backlog) {
      job_outcome o;
      o.id = j.id;
      o.lease = j.lease;
      o.what = job_outcome::kind::snooze;
      o.delay_ms = 0;
      st.pending.push_back({o, j.queue, j.kind, -1});
    }
    k.backlog.clear();
  }
  flush(self);
  for (auto& [name, k] : st.kinds)
    for (auto& w : k.all)
      self->send_exit(w, caf::exit_reason::user_shutdown);
  for (auto& p : st.stop_promises)
    p.deliver(true);
  st.stop_promises.clear();
  self->quit();
}

void tick(dispatcher_actor* self) {
  auto& st = self->state;
  auto now = clock_type::now();
  auto& cfg = st.svc->cfg;
  if (now - st.last_heartbeat >= cfg.heartbeat) {
    st.last_heartbeat = now;
    heartbeat(self);
  }
  if (now - st.last_maintenance >= cfg.maintenance) {
    st.last_maintenance = now;
    st.svc->maintain();
  }
  if (now - st.last_poll >= cfg.poll) {
    st.last_poll = now;
    for (const auto& [q, kinds] : st.queues)
      fetch_for(self, q);
    st.svc->poke({}, false);
    st.svc->sync_triggers();
  }
}

caf::behavior dispatcher_impl(dispatcher_actor* self, impl_ptr svc) {
  self->state.svc = std::move(svc);
  detail::install_exception_handler(self);
  self->send(self, jd_tick_atom::value);
  return {
    [self](jd_tick_atom) {
      auto& st = self->state;
      if (st.stopping)
        return;
      tick(self);
      auto every = std::min(
        {st.svc->cfg.poll, st.svc->cfg.heartbeat, st.svc->cfg.maintenance});
      self->delayed_send(self, every, jd_tick_atom::value);
    },
    [self](jd_add_atom, spec_ptr& spec) {
      auto& st = self->state;
      auto& k = st.kinds[spec->kind];
      k.spec = spec;
      auto me = caf::actor_cast<caf::actor>(self);
      for (std::size_t i = 0; i < spec->concurrency; ++i) {
        auto w = self->system().spawn<caf::detached>(worker_impl, st.svc, spec,
                                                     me);
        k.all.push_back(w);
        k.idle.push_back(w);
      }
      st.queues[spec->queue].push_back(spec->kind);
      fetch_for(self, spec->queue);
    },
    [self](jd_wake_atom, const std::string& queue) {
      if (queue.empty()) {
        for (const auto& [q, kinds] : self->state.queues)
          fetch_for(self, q);
      } else {
        fetch_for(self, queue);
      }
    },
    [self](jd_waiters_atom) {
      auto& st = self->state;
      st.waiter_timer = false;
      st.svc->poke({}, true);
      if (st.svc->has_waiters() && !st.stopping) {
        st.waiter_timer = true;
        self->delayed_send(self, std::chrono::milliseconds{100},
                           jd_waiters_atom::value);
      }
    },
    [self](jd_done_atom, attempt_report& rep) {
      auto& st = self->state;
      --st.svc->running;
      st.held.erase(rep.j.id);
      auto& k = st.kinds[rep.j.kind];
      k.idle.push_back(caf::actor_cast<caf::actor>(self->current_sender()));
      if (!k.backlog.empty()) {
        auto next = std::move(k.backlog.front());
        k.backlog.pop_front();
        start_attempt(self, k, std::move(next));
      }
      st.refill.insert(rep.j.queue);
      if (rep.final || rep.lost) {
        const char* name = rep.final ? "completed" : "lease_lost";
        if (rep.final)
          ++st.svc->completed;
        else
          ++st.svc->lease_lost;
        if (st.svc->metrics)
          st.svc->metrics->ran(rep.j.queue, rep.j.kind, name, rep.seconds);
      } else {
        job_outcome o;
        o.id = rep.j.id;
        o.lease = rep.j.lease;
        o.what = rep.result.what;
        o.error = std::move(rep.result.error);
        if (rep.result.delay)
          o.delay_ms = rep.result.delay->count();
        st.pending.push_back(
          {std::move(o), rep.j.queue, rep.j.kind, rep.seconds});
      }
      if (st.stopping && idle(st))
        return finish_stop(self);
      schedule_flush(self);
    },
    [self](jd_flush_atom) {
      flush(self);
    },
    [self](jd_stop_atom) {
      auto& st = self->state;
      auto rp = self->make_response_promise();
      st.stop_promises.push_back(rp);
      if (st.stopping)
        return;
      st.stopping = true;
      if (idle(st))
        return finish_stop(self);
      self->delayed_send(self, st.svc->cfg.shutdown_grace,
                         jd_grace_atom::value);
    },
    [self](jd_grace_atom) {
      // Attempts still running keep their leases until they expire; other
      // nodes rescue them then.
      finish_stop(self);
    },
  };
}

caf::behavior executor_impl(caf::event_based_actor* self) {
  (void) self;
  return {
    [](job_task& t) {
      try {
        t.run();
      } catch (const std::exception& e) {
        std::cerr << "dcbd jobs: task: " << e.what() << std::endl;
      }
    },
  };
}

void check_spec(const job_worker_spec& s) {
  job_request probe;
  probe.kind = s.kind;
  probe.queue = s.queue;
  validate(probe, "worker");
  if (s.concurrency < 1 || s.concurrency > 1000)
    throw store_error{errc::invalid_argument,
                      "worker.concurrency must be 1-1000"};
  if (static_cast<bool>(s.handle) == static_cast<bool>(s.handle_tx))
    throw store_error{errc::invalid_argument,
                      "worker: give exactly one of handle and handle_tx"};
}

} // namespace

// -- job_service
// ------------------------------------------------------------------

job_service::job_service(caf::actor_system& sys, engine& eng, jobs_config cfg,
                         std::shared_ptr<job_metrics> metrics)
  : impl_(std::make_shared<impl>(sys, eng)) {
  auto& d = *impl_;
  if (cfg.node.empty())
    throw store_error{errc::invalid_argument, "job service: no node name"};
  d.cfg = std::move(cfg);
  d.metrics = std::move(metrics);
  d.store = std::make_unique<pg_jobs>(
    eng.config().store, std::max<std::size_t>(d.cfg.connections, 2));
  auto executors = std::max<std::size_t>(d.cfg.connections, 2);
  d.executors = spawn_pool(
    sys, "job executor",
    [&sys] {
      return sys.spawn<caf::detached>(executor_impl);
    },
    executors);
  d.dispatcher = sys.spawn<caf::detached>(dispatcher_impl, impl_);
  std::weak_ptr<impl> weak = impl_;
  d.listener = std::make_unique<pg_listener>(
    eng.config().store, job_channel(eng.config().store.schema),
    [weak](const std::string& queue) {
      auto self = weak.lock();
      if (!self || self->stopped.load())
        return;
      caf::anon_send(self->dispatcher, jd_wake_atom::value, queue);
      self->poke(queue, false);
    });
  d.sync_triggers();
}

job_service::~job_service() {
  stop();
}

void job_service::add_worker(job_worker_spec spec) {
  check_spec(spec);
  auto& d = *impl_;
  {
    std::lock_guard guard{d.mtx};
    if (d.stopped.load())
      throw store_error{errc::unavailable, "the job service has stopped"};
    if (!d.kinds.insert(spec.kind).second)
      throw store_error{errc::invalid_argument,
                        "worker: kind " + spec.kind + " has workers already"};
  }
  caf::anon_send(
    d.dispatcher, jd_add_atom::value,
    spec_ptr{std::make_shared<const job_worker_spec>(std::move(spec))});
}

void job_service::stop() {
  auto& d = *impl_;
  if (d.stopped.exchange(true))
    return;
  d.stop_triggers();
  d.listener.reset();
  std::promise<void> p;
  auto f = p.get_future();
  auto disp = d.dispatcher;
  auto wait = d.cfg.shutdown_grace + std::chrono::seconds{30};
  d.sys.spawn([disp, &p, wait](caf::event_based_actor* self) {
    self->request(disp, wait, jd_stop_atom::value)
      .then(
        [&p](bool) {
          p.set_value();
        },
        [&p, disp](caf::error& err) {
          std::cerr << "dcbd jobs: dispatcher stop: " << to_string(err)
                    << std::endl;
          caf::anon_send_exit(disp, caf::exit_reason::kill);
          p.set_value();
        });
  });
  f.wait();
  // Long-polls still waiting end empty.
  std::vector<waiter> left;
  {
    std::lock_guard guard{d.mtx};
    left.swap(d.waiters);
  }
  for (auto& w : left)
    w.done(std::vector<job>{});
  stop_pool(d.sys, d.executors);
}

pg_jobs& job_service::store() {
  return *impl_->store;
}

const jobs_config& job_service::config() const {
  return impl_->cfg;
}

jobs_stats job_service::stats() const {
  auto& d = *impl_;
  jobs_stats s;
  s.fetched = d.fetched.load();
  s.completed = d.completed.load();
  s.failed = d.failed.load();
  s.lease_lost = d.lease_lost.load();
  s.rescued = d.rescued.load();
  s.flushes = d.flushes.load();
  s.running = d.running.load();
  s.trigger_jobs = d.trigger_jobs.load();
  s.pruned = d.pruned.load();
  std::lock_guard guard{d.mtx};
  s.triggers = d.triggers.size();
  return s;
}

void job_service::enqueue(std::vector<job_request> jobs,
                          callback<std::vector<enqueued_job>> done) {
  auto self = impl_;
  self->async<std::vector<enqueued_job>>(
    std::move(done), [self, jobs = std::move(jobs)]() mutable {
      auto r = self->store->enqueue(std::move(jobs), self->cfg.limits);
      std::size_t fresh = 0;
      for (const auto& e : r)
        fresh += e.duplicate ? 0 : 1;
      if (self->metrics && fresh > 0)
        self->metrics->enqueued(fresh);
      return r;
    });
}

void job_service::get(std::int64_t id, callback<std::optional<job>> done) {
  auto self = impl_;
  self->async<std::optional<job>>(std::move(done), [self, id] {
    return self->store->get(id);
  });
}

void job_service::list(job_filter f, callback<std::vector<job>> done) {
  auto self = impl_;
  self->async<std::vector<job>>(std::move(done), [self, f] {
    return self->store->list(f);
  });
}

void job_service::cancel(std::int64_t id, callback<job_change> done) {
  auto self = impl_;
  self->async<job_change>(std::move(done), [self, id] {
    return self->store->cancel(id);
  });
}

void job_service::retry(std::int64_t id, callback<job_change> done) {
  auto self = impl_;
  self->async<job_change>(std::move(done), [self, id] {
    return self->store->retry(id);
  });
}

void job_service::counts(callback<std::vector<queue_counts>> done) {
  auto self = impl_;
  self->async<std::vector<queue_counts>>(std::move(done), [self] {
    return self->store->counts();
  });
}

void job_service::fetch(job_fetch f, std::chrono::milliseconds wait,
                        callback<std::vector<job>> done) {
  auto& d = *impl_;
  if (d.stopped.load())
    return done(
      caf::make_error(errc::unavailable, "the job service has stopped"));
  if (f.max == 0 || f.max > 1000)
    return done(caf::make_error(errc::invalid_argument, "max must be 1-1000"));
  if (!valid_queue_name(f.queue))
    return done(caf::make_error(errc::invalid_argument,
                                "queue must be 1-128 characters: letters, "
                                "digits, '_', '-', '.'"));
  waiter w{std::move(f), clock_type::now() + std::max(wait, decltype(wait){0}),
           std::move(done)};
  d.try_waiter(std::move(w));
  if (wait.count() > 0)
    caf::anon_send(d.dispatcher, jd_waiters_atom::value);
}

void job_service::finish(job_outcome o,
                         callback<std::optional<job_state>> done) {
  auto self = impl_;
  self->async<std::optional<job_state>>(std::move(done), [self, o] {
    auto r = self->store->finish_detailed({o});
    auto f = r.empty() ? finished_job{} : std::move(r.front());
    auto state = f.state;
    if (!state)
      ++self->lease_lost;
    else if (*state == job_state::completed)
      ++self->completed;
    else if (o.what != job_outcome::kind::snooze)
      ++self->failed;
    // A stale lease names no job worth a label (any client may send one).
    if (self->metrics && state) {
      double secs = -1;
      if (f.attempted_at_us > 0)
        secs = std::max(0.0, now_unix_seconds()
                               - static_cast<double>(f.attempted_at_us) / 1e6);
      self->metrics->ran(f.queue, f.kind, result_name(o.what, state), secs);
    }
    return state;
  });
}

void job_service::heartbeat(std::int64_t id, std::int64_t lease,
                            std::int64_t lease_ms, callback<bool> done) {
  auto self = impl_;
  self->async<bool>(std::move(done), [self, id, lease, lease_ms] {
    auto r = self->store->heartbeat({id}, {lease}, lease_ms);
    return !r.empty() && r.front();
  });
}

void job_service::create_trigger(job_trigger t,
                                 std::optional<std::uint64_t> from,
                                 callback<bool> done) {
  auto self = impl_;
  self->async<bool>(std::move(done), [self, t, from] {
    auto q = validate_read(t.query, {}, self->eng.config().store.limits);
    auto copy = t;
    copy.query = q;
    auto created = self->store->create_trigger(copy, from);
    if (created) {
      for (auto& row : self->store->triggers())
        if (row.name == t.name)
          self->follow(row);
    }
    return created;
  });
}

void job_service::triggers(callback<std::vector<job_trigger>> done) {
  auto self = impl_;
  self->async<std::vector<job_trigger>>(std::move(done), [self] {
    return self->store->triggers();
  });
}

void job_service::delete_trigger(std::string name, callback<bool> done) {
  auto self = impl_;
  self->async<bool>(std::move(done), [self, name] {
    auto gone = self->store->delete_trigger(name);
    subscription sub;
    {
      std::lock_guard guard{self->mtx};
      auto i = self->triggers.find(name);
      if (i != self->triggers.end()) {
        sub = i->second.sub;
        self->triggers.erase(i);
      }
    }
    if (sub)
      sub.cancel();
    return gone;
  });
}

std::vector<enqueued_job>
job_service::enqueue_blocking(std::vector<job_request> jobs) {
  std::promise<caf::expected<std::vector<enqueued_job>>> p;
  auto f = p.get_future();
  enqueue(std::move(jobs), [&p](caf::expected<std::vector<enqueued_job>> r) {
    p.set_value(std::move(r));
  });
  auto r = f.get();
  if (!r)
    throw store_error{code_of(r.error()), message_of(r.error())};
  return std::move(*r);
}

} // namespace dcbd
