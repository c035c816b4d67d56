// The embedding API: spawns and stops the actors, and turns calls into
// requests to them.
#include "actors/engine.hpp"

#include "actors/command_round.hpp"
#include "actors/errors.hpp"
#include "actors/pool.hpp"
#include "store/cached_store.hpp"
#include "store/pg_lease.hpp"
#include "store/pg_listener.hpp"
#include "store/pg_store.hpp"
#include "store/validation.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

namespace dcbd {

namespace {

// -- helpers for the API ------------------------------------------------------

stream_request stream_of(query q, read_options options, std::uint32_t window,
                         stream_options chunking) {
  stream_request req;
  req.id = fresh_stream_id();
  req.q = std::move(q);
  req.options = options;
  req.window = window;
  req.chunking = chunking;
  return req;
}

template <class T, class Handle, class... Ts>
void async_request(caf::actor_system& sys, std::chrono::milliseconds timeout,
                   const Handle& dest,
                   std::function<void(caf::expected<T>)> done, Ts... xs) {
  sys.spawn([=](caf::event_based_actor* self) {
    self->request(dest, timeout, xs...)
      .then(
        [done](T& x) {
          done(std::move(x));
        },
        [done](caf::error& err) {
          done(std::move(err));
        });
  });
}

// Runs a command's rounds from `first` on the appenders `to` (all of them
// when `first` is 1 and `optimistic`), bounded by `timeout`.
void execute_on(caf::actor_system& sys, std::chrono::milliseconds timeout,
                const appender_actor& to, command_ptr cmd, std::uint32_t first,
                bool optimistic,
                std::function<void(caf::expected<command_outcome>)> done) {
  auto name = cmd->name;
  command_request req{std::move(name), std::move(cmd)};
  req.first_attempt = first;
  req.optimistic = optimistic;
  async_request<command_outcome>(sys, timeout, to, std::move(done),
                                 execute_atom::value, std::move(req));
}

// Waits for an asynchronous request. (A scoped_actor's blocking receive did
// not match typed replies delivered through response promises in CAF
// 0.17.6; a short-lived event-based actor does.)
template <class T, class Handle, class... Ts>
caf::expected<T> blocking_request(caf::actor_system& sys,
                                  std::chrono::milliseconds timeout,
                                  const Handle& dest, Ts... xs) {
  std::promise<caf::expected<T>> p;
  auto f = p.get_future();
  async_request<T>(
    sys, timeout, dest,
    std::function<void(caf::expected<T>)>{[&p](caf::expected<T> r) {
      p.set_value(std::move(r));
    }},
    std::move(xs)...);
  return f.get();
}

} // namespace

// -- engine -------------------------------------------------------------------

struct engine::impl {
  caf::actor_system& sys;
  engine_config cfg;
  std::shared_ptr<store_gate> gate;
  store_actor store;
  caf::actor reader_pool;
  caf::actor appender_pool;
  bus_actor bus;
  std::unique_ptr<pg_listener> listener;
  // The event cache and the read index its linearizable reads share; null
  // when the cache is off.
  std::shared_ptr<event_cache> cache;
  std::shared_ptr<read_index> index;
  // The read lease that spares `index` its queries; null without one.
  std::shared_ptr<read_lease> lease;
  // Groups the store actor sent and announced: the bus waits for a local
  // announcement rather than read its own commit back (bus_config).
  std::shared_ptr<store_groups> groups = std::make_shared<store_groups>();
  // The standby the readers read from; null without `replica.dsn`.
  std::shared_ptr<standby> replica;
  // The bus, once spawned, for the cache's readers to wake (they start
  // before it).
  std::shared_ptr<std::atomic<bool>> bus_ready
    = std::make_shared<std::atomic<bool>>(false);
  // Where appends go instead of the store actor (see `set_append_route`).
  std::mutex route_mtx;
  std::shared_ptr<const append_route> route;

  impl(caf::actor_system& s, engine_config c) : sys(s), cfg(std::move(c)) {
    // nop
  }

  // A store with `connections` connections, from the factory.
  std::shared_ptr<event_store> open(std::size_t connections) const {
    auto n = std::max<std::size_t>(connections, 1);
    if (cfg.store_factory)
      return cfg.store_factory(n);
    auto pc = cfg.store;
    pc.pool_size = n;
    return std::make_shared<pg_event_store>(std::move(pc));
  }

  // Wakes the bus when a read finds the cache behind the database (it then
  // reads past its head at once instead of at its next poll).
  std::function<void(std::uint64_t)> wake_bus() {
    return [ready = bus_ready, this](std::uint64_t head) {
      if (ready->load(std::memory_order_acquire))
        caf::anon_send(bus, wake_atom::value, head);
    };
  }

  // A store with `connections` connections, behind the cache when it is on;
  // a reader's (`reads`) reads from the standby when there is one.
  std::shared_ptr<event_store> open_cached(std::size_t connections,
                                           bool reads = false) {
    auto backend = open(connections);
    if (reads && replica)
      backend = std::make_shared<replica_event_store>(
        std::move(backend), replica, index, connections);
    if (!cache)
      return backend;
    cached_store_config cc;
    cc.wait = cfg.cache_wait;
    cc.on_behind = wake_bus();
    return std::make_shared<cached_event_store>(std::move(backend), cache,
                                                index, std::move(cc));
  }

  // A read index for a blocking call served on the caller's thread, and
  // the cache caught up to it: the head the answer must reach; nothing when
  // the readers must serve the call instead (the index failed or the cache
  // stayed behind it: they read the database and report its errors); an
  // error when no index came by `deadline`.
  caf::expected<std::optional<std::uint64_t>>
  index_here(std::chrono::steady_clock::time_point deadline) {
    struct waiter {
      std::mutex mtx;
      std::condition_variable cv;
      bool done = false;
      std::optional<std::uint64_t> head;
    };
    auto w = std::make_shared<waiter>();
    index->get_async([w](std::optional<std::uint64_t> head) {
      {
        std::lock_guard lock{w->mtx};
        w->head = head;
        w->done = true;
      }
      w->cv.notify_one();
    });
    std::optional<std::uint64_t> head;
    {
      std::unique_lock lock{w->mtx};
      if (!w->cv.wait_until(lock, deadline, [&w] {
            return w->done;
          }))
        return caf::make_error(errc::unavailable,
                               "no read index within the timeout");
      head = w->head;
    }
    if (head
        && !await_cache(
          *cache, *head,
          std::min(deadline, std::chrono::steady_clock::now() + cfg.cache_wait),
          wake_bus()))
      return std::optional<std::uint64_t>{};
    return head;
  }

  // The blocking projection on the caller's thread when the cache holds the
  // whole log: a read index (the query every read waiting then shares),
  // then the fold over memory, with no actor in between. Nothing when the
  // readers must do it (also when the cache does not hold the whole log).
  std::optional<caf::expected<projection>>
  project_here(std::vector<projector>& projectors,
               std::chrono::steady_clock::time_point deadline) {
    if (!cache || !index
        || !cache_may_answer(*cache, read_options{}, union_query(projectors)))
      return std::nullopt;
    try {
      validate(projectors, cfg.store.limits);
    } catch (...) {
      return caf::expected<projection>{detail::error_from_current_exception()};
    }
    auto head = index_here(deadline);
    if (!head)
      return caf::expected<projection>{std::move(head.error())};
    if (!*head)
      return std::nullopt;
    try {
      auto p = project_from_cache(*cache, projectors, **head, cfg.store.limits,
                                  cfg.reader.project_chunking);
      if (!p)
        return std::nullopt;
      return caf::expected<projection>{std::move(*p)};
    } catch (...) {
      return caf::expected<projection>{detail::error_from_current_exception()};
    }
  }

  // The blocking read on the caller's thread when the cache can answer it
  // whole (at most `max_read_events` events, as the readers allow), after a
  // read index. Nothing when the readers must serve it: they also report
  // bad input and reads too large.
  std::optional<caf::expected<read_result>>
  read_here(const query& q, const read_options& options,
            std::chrono::steady_clock::time_point deadline) {
    if (!cache || !index || !cache_may_answer(*cache, options, q))
      return std::nullopt;
    auto head = index_here(deadline);
    if (!head)
      return caf::expected<read_result>{std::move(head.error())};
    if (!*head)
      return std::nullopt;
    read_result out;
    try {
      auto answer = visit_from_cache(*cache, q, options, **head,
                                     cfg.reader.max_read_events,
                                     cfg.store.limits,
                                     [&out](const sequenced_event& e) {
                                       out.events.push_back(e);
                                     });
      if (!answer)
        return std::nullopt;
      out.head = answer->head;
    } catch (...) {
      return std::nullopt; // the readers report it
    }
    return caf::expected<read_result>{std::move(out)};
  }

  reader_actor readers() const {
    return caf::actor_cast<reader_actor>(reader_pool);
  }

  appender_actor appenders() const {
    return caf::actor_cast<appender_actor>(appender_pool);
  }

  // Hands a valid append to this node's store actor through the gate.
  void submit_local(validated_append valid,
                    std::function<void(caf::expected<append_ack>)> done) {
    auto g = gate;
    if (!g->try_enter())
      return done(
        caf::make_error(errc::overloaded, "the store queue is full ("
                                            + std::to_string(g->capacity())
                                            + " requests); retry later"));
    // The gate is left with the answer, whichever way it comes (see
    // `append_callback`: also when the store never takes the message).
    auto callback = std::make_shared<append_callback>(
      [g, done = std::move(done)](caf::expected<append_ack> r) {
        g->leave();
        done(std::move(r));
      });
    caf::anon_send(store, append_atom::value, std::move(valid),
                   std::move(callback));
  }

  // Hands a valid append where appends go: the route when one is set and
  // takes it (its receiver validates again on arrival), else this node's
  // store actor.
  void submit(validated_append valid,
              std::function<void(caf::expected<append_ack>)> done) {
    std::shared_ptr<const append_route> r;
    {
      std::lock_guard guard{route_mtx};
      r = route;
    }
    if (!r)
      return submit_local(std::move(valid), std::move(done));
    auto normalized = std::move(valid).take_request();
    if ((*r)(normalized, done))
      return;
    try {
      valid = validate_append(std::move(normalized), cfg.store.limits);
    } catch (const store_error& e) {
      return done(to_error(e));
    }
    submit_local(std::move(valid), std::move(done));
  }

  // `execute_on` this node's appenders.
  void execute_on_appenders(
    command_ptr cmd, std::uint32_t first, bool optimistic,
    std::function<void(caf::expected<command_outcome>)> done) const {
    execute_on(sys, cfg.timeout, appenders(), std::move(cmd), first, optimistic,
               std::move(done));
  }

  // A command's first round on the calling thread, as the appenders' first
  // round runs it (see actors/appender.cpp): the model projected at the
  // cache's head with no read index, decide(), and the append with the
  // model's condition straight to this node's store actor (as the
  // appenders send it, never through the append route). What needs another
  // round (a conflict; a verdict without append, which no condition
  // protects) goes to the appenders, linearizably. False, having done
  // nothing, when the cache cannot project the model whole or the model
  // holds more than one projection chunk of events (user code on the
  // caller's thread stays short): then the appenders run it all. The
  // projectors are valid (`execute_unbounded` validated them).
  bool execute_here(const command_ptr& cmd,
                    std::function<void(caf::expected<command_outcome>)>& done) {
    // project_from_cache itself declines, before any work, when the cache
    // does not cover the model.
    if (!cache)
      return false;
    std::optional<projection> model;
    try {
      model = project_from_cache(*cache, cmd->projectors, 0, cfg.store.limits,
                                 cfg.reader.project_chunking,
                                 cfg.reader.project_chunking.chunk_events);
    } catch (...) {
      done(detail::error_from_current_exception());
      return true;
    }
    if (!model)
      return false;
    auto v = command_round::decide(*cmd, *model->states);
    if (!v) {
      done(std::move(v.error()));
      return true;
    }
    if (!command_round::writes(*v)) {
      execute_on_appenders(cmd, 1, false, std::move(done));
      return true;
    }
    auto req = command_round::to_append(*cmd, *v, model->condition,
                                        cfg.store.limits);
    if (!req) {
      done(std::move(req.error()));
      return true;
    }
    // The answer comes on the store actor's thread: a conflict only starts
    // the next round there, as an actor of its own.
    auto next = [&sys = sys, timeout = cfg.timeout, appenders = appenders(),
                 max = std::max<std::uint32_t>(cfg.max_attempts, 1), cmd,
                 done = std::move(done)](caf::expected<append_ack> r) mutable {
      if (r)
        return done(
          command_round::accepted(1, r->first_position, r->last_position));
      if (code_of(r.error()) != errc::append_condition_failed)
        return done(std::move(r.error()));
      if (max <= 1)
        return done(command_round::exhausted(*cmd, 1, r.error()));
      execute_on(sys, timeout, appenders, std::move(cmd), 2, false,
                 std::move(done));
    };
    submit_local(std::move(*req), std::move(next));
    return true;
  }
};

engine::engine(caf::actor_system& sys, engine_config cfg)
  : impl_(std::make_unique<impl>(sys, std::move(cfg))) {
  auto& d = *impl_;
  d.cfg.reader.limits = d.cfg.store.limits;
  d.gate = std::make_shared<store_gate>(d.cfg.group.max_queue);
  if (d.cfg.cache_bytes > 0)
    d.cache = std::make_shared<event_cache>(d.cfg.cache_bytes);
  if (!d.cfg.replica.dsn.empty())
    d.replica = std::make_shared<standby>(d.cfg.replica, d.cfg.store.schema);
  if (d.cache || d.replica) {
    // One connection of its own to the primary: the read index is one
    // query at a time.
    d.index = make_read_index(d.open(1));
    // After the schema is installed (it adds the lease's columns), before
    // the store actor's store opens (its commits carry the lease's id).
    if (d.cfg.read_lease.count() > 0 && !d.cfg.store_factory) {
      read_lease_config lc;
      lc.dsn = d.cfg.store.dsn;
      lc.schema = d.cfg.store.schema;
      lc.term = d.cfg.read_lease;
      lc.quiet = d.cfg.read_lease_quiet;
      d.lease = std::make_shared<read_lease>(std::move(lc));
      d.cfg.store.lease = d.lease;
      d.index->use_lease([lease = d.lease] {
        return lease->index();
      });
    }
  }
  // The store actor writes with one connection; a second one lets it settle
  // an in-doubt group while the first reconnects. Behind the cache, it adds
  // each group's events to it before it answers.
  d.store = spawn_store(sys, d.open_cached(2), d.cfg.group, d.cfg.metrics,
                        spawn_mode::detached, d.groups);
  auto reader_cfg = d.cfg.reader;
  auto connections = d.cfg.reader_connections;
  d.reader_pool = spawn_pool(
    sys, "reader",
    [&sys, &d, connections, reader_cfg] {
      return caf::actor_cast<caf::actor>(
        spawn_reader(sys, d.open_cached(connections, true), reader_cfg));
    },
    d.cfg.readers);
  appender_config acfg;
  acfg.store = d.store;
  acfg.readers = d.readers();
  acfg.gate = d.gate;
  acfg.max_attempts = d.cfg.max_attempts;
  acfg.timeout = d.cfg.timeout;
  acfg.limits = d.cfg.store.limits;
  d.appender_pool = spawn_pool(
    sys, "appender",
    [&sys, acfg] {
      return caf::actor_cast<caf::actor>(spawn_appender(sys, acfg));
    },
    d.cfg.appenders);
  auto bcfg = d.cfg.bus;
  bcfg.limits = d.cfg.store.limits;
  bcfg.read_timeout = d.cfg.timeout;
  // The bus reads through the bounded `read`: its pages must fit.
  bcfg.feed_page = std::clamp<std::size_t>(bcfg.feed_page, 1,
                                           d.cfg.reader.max_read_events);
  bcfg.cache = d.cache;
  bcfg.local_groups = d.groups;
  d.bus = spawn_bus(sys, d.store, d.readers(), std::move(bcfg));
  d.bus_ready->store(true, std::memory_order_release);
  if (d.cfg.listen && !d.cfg.store_factory) {
    auto bus = d.bus;
    d.listener
      = std::make_unique<pg_listener>(d.cfg.store, [bus](std::uint64_t head) {
          caf::anon_send(bus, wake_atom::value, head);
        });
  }
}

engine::~engine() {
  auto& d = *impl_;
  caf::scoped_actor self{d.sys};
  auto stop = [&](const caf::actor& a) {
    self->monitor(a);
    self->send_exit(a, caf::exit_reason::user_shutdown);
    self->receive([](const caf::down_msg&) {});
  };
  // The listener and the appenders first (the appenders still need the
  // readers and the store for the commands they are running); then the bus,
  // which ends every subscription; then the readers; then the store, which
  // commits what it has taken before it exits.
  d.listener.reset();
  stop_pool(d.sys, d.appender_pool);
  stop(caf::actor_cast<caf::actor>(d.bus));
  stop_pool(d.sys, d.reader_pool);
  stop(caf::actor_cast<caf::actor>(d.store));
}

store_actor engine::store() const {
  return impl_->store;
}

appender_actor engine::appenders() const {
  return impl_->appenders();
}

reader_actor engine::readers() const {
  return impl_->readers();
}

const std::shared_ptr<store_gate>& engine::gate() const {
  return impl_->gate;
}

const engine_config& engine::config() const {
  return impl_->cfg;
}

bus_actor engine::bus() const {
  return impl_->bus;
}

std::shared_ptr<event_cache> engine::cache() const {
  return impl_->cache;
}

std::shared_ptr<read_index> engine::index() const {
  return impl_->index;
}

read_index_stats engine::index_stats() const {
  auto s = impl_->index ? impl_->index->stats() : read_index_stats{};
  if (impl_->lease) {
    auto l = impl_->lease->stats();
    s.lease_held = l.held;
    s.lease_acquisitions = l.acquisitions;
    s.lease_losses = l.losses;
  }
  return s;
}

void engine::read_from_cache(
  query q, read_options options, std::size_t max_events,
  std::function<void(std::function<void()>)> run,
  std::function<void(const sequenced_event&)> each,
  std::function<void(std::optional<cache_answer>)> done) const {
  auto& d = *impl_;
  auto cache = d.cache;
  if (!cache || !d.index || !cache_may_answer(*cache, options, q))
    return done(std::nullopt);
  auto lim = d.cfg.store.limits;
  auto answer =
    [cache, lim, max_events, q = std::move(q), options, each = std::move(each),
     done = std::move(done)](std::optional<std::uint64_t> index) mutable {
      if (!index)
        return done(std::nullopt);
      // Initialized, never assigned: g++ 12 built `r = visit_from_cache(..)`
      // to write the answer in place, and a call that threw (bad input) left
      // `r` half-written, a garbage answer instead of none.
      auto r = [&]() -> std::optional<cache_answer> {
        try {
          return visit_from_cache(*cache, q, options, *index, max_events, lim,
                                  each);
        } catch (const std::exception&) {
          return std::nullopt; // the usual path reports it
        }
      }();
      done(r);
    };
  // A held read lease gives the index at once: read on the caller's thread,
  // with no hand-over.
  if (auto index = d.index->leased())
    return answer(index);
  d.index->get_async([answer = std::move(answer), run = std::move(run)](
                       std::optional<std::uint64_t> index) mutable {
    // On the index's thread only the hand-over: the read runs on `run`'s.
    run([answer = std::move(answer), index]() mutable {
      answer(index);
    });
  });
}

replica_stats engine::replica() const {
  return impl_->replica ? impl_->replica->stats() : replica_stats{};
}

int engine::listener_pid() const {
  return impl_->listener ? impl_->listener->backend_pid() : 0;
}

void subscription::cancel() const {
  if (bus_)
    caf::anon_send(bus_, cancel_atom::value, id_);
}

void subscription::grant(std::uint32_t n) const {
  if (bus_ && n > 0)
    caf::anon_send(bus_, credit_atom::value, id_, n);
}

// -- blocking calls -----------------------------------------------------------

caf::expected<append_ack> engine::append(append_request req) {
  auto& d = *impl_;
  // Shared: the store may answer after this call gave up.
  auto p = std::make_shared<std::promise<caf::expected<append_ack>>>();
  auto f = p->get_future();
  append_unbounded(std::move(req), [p](caf::expected<append_ack> r) {
    p->set_value(std::move(r));
  });
  if (f.wait_for(d.cfg.timeout) != std::future_status::ready)
    return caf::make_error(errc::unavailable,
                           "the store did not answer within "
                             + std::to_string(d.cfg.timeout.count())
                             + " ms; the append may still be committed");
  return f.get();
}

caf::expected<read_result> engine::read(query q, read_options options) {
  auto& d = *impl_;
  auto deadline = std::chrono::steady_clock::now() + d.cfg.timeout;
  if (auto here = d.read_here(q, options, deadline))
    return std::move(*here);
  return blocking_request<read_result>(d.sys, d.cfg.timeout, d.readers(),
                                       read_atom::value, std::move(q), options);
}

caf::expected<stream_summary>
engine::stream(query q, read_options options, const chunk_handler& on_chunk,
               std::uint32_t window, stream_options chunking) {
  auto& d = *impl_;
  caf::scoped_actor self{d.sys};
  auto req = stream_of(std::move(q), options, window, chunking);
  auto id = req.id;
  self->send(d.readers(), stream_atom::value, std::move(req),
             caf::actor_cast<caf::actor>(self));
  caf::expected<stream_summary> result{caf::error{}};
  bool done = false;
  while (!done) {
    self->receive(
      [&](chunk_atom, stream_chunk& c) {
        auto reader = caf::actor_cast<reader_actor>(self->current_sender());
        try {
          on_chunk(c.events);
        } catch (...) {
          self->send(reader, cancel_atom::value, id);
          throw;
        }
        self->send(reader, credit_atom::value, id, std::uint32_t{1});
      },
      [&](end_atom, stream_end& e) {
        done = true;
        if (e.code != errc::none)
          result = caf::make_error(e.code, std::move(e.message));
        else
          result = stream_summary{e.head, e.events};
      },
      caf::after(d.cfg.timeout) >>
        [&] {
          done = true;
          result = caf::make_error(errc::unavailable,
                                   "the stream stalled: no chunk within the "
                                   "timeout");
        });
  }
  return result;
}

caf::expected<projection> engine::project(std::vector<projector> projectors) {
  auto& d = *impl_;
  auto deadline = std::chrono::steady_clock::now() + d.cfg.timeout;
  if (auto here = d.project_here(projectors, deadline))
    return std::move(*here);
  auto model = decision_model{
    std::make_shared<const std::vector<projector>>(std::move(projectors))};
  return blocking_request<projection>(d.sys, d.cfg.timeout, d.readers(),
                                      project_atom::value, std::move(model));
}

caf::expected<command_outcome> engine::execute(command cmd) {
  auto& d = *impl_;
  // Shared: the command may finish after this call gave up.
  auto p = std::make_shared<std::promise<caf::expected<command_outcome>>>();
  auto f = p->get_future();
  execute_unbounded(std::move(cmd), [p](caf::expected<command_outcome> r) {
    p->set_value(std::move(r));
  });
  if (f.wait_for(d.cfg.timeout) != std::future_status::ready)
    return caf::make_error(errc::unavailable,
                           "the command did not finish within "
                             + std::to_string(d.cfg.timeout.count())
                             + " ms; its append may still be committed");
  return f.get();
}

caf::expected<std::uint64_t> engine::head() {
  auto& d = *impl_;
  return blocking_request<std::uint64_t>(d.sys, d.cfg.timeout, d.readers(),
                                         head_atom::value);
}

caf::expected<store_stats> engine::stats() {
  auto& d = *impl_;
  return blocking_request<store_stats>(d.sys, d.cfg.timeout, d.store,
                                       stats_atom::value);
}

caf::expected<dcbd::bus_stats> engine::bus_stats() {
  auto& d = *impl_;
  return blocking_request<dcbd::bus_stats>(d.sys, d.cfg.timeout, d.bus,
                                           bus_stats_atom::value);
}

// -- asynchronous calls -------------------------------------------------------

void engine::append(append_request req,
                    std::function<void(caf::expected<append_ack>)> done) {
  auto& d = *impl_;
  async_request<append_ack>(d.sys, d.cfg.timeout, d.appenders(),
                            std::move(done), append_atom::value,
                            std::move(req));
}

void engine::set_append_route(append_route route) {
  auto& d = *impl_;
  auto p = route ? std::make_shared<const append_route>(std::move(route))
                 : nullptr;
  std::lock_guard guard{d.route_mtx};
  d.route = std::move(p);
}

void engine::append_unbounded(
  append_request req, std::function<void(caf::expected<append_ack>)> done) {
  auto& d = *impl_;
  std::optional<validated_append> valid;
  try {
    valid = validate_append(std::move(req), d.cfg.store.limits);
  } catch (const store_error& e) {
    return done(to_error(e));
  }
  d.submit(std::move(*valid), std::move(done));
}

void engine::append_local(append_request req,
                          std::function<void(caf::expected<append_ack>)> done) {
  auto& d = *impl_;
  std::optional<validated_append> valid;
  try {
    valid = validate_append(std::move(req), d.cfg.store.limits);
  } catch (const store_error& e) {
    return done(to_error(e));
  }
  d.submit_local(std::move(*valid), std::move(done));
}

void engine::head(std::function<void(caf::expected<std::uint64_t>)> done) {
  auto& d = *impl_;
  async_request<std::uint64_t>(d.sys, d.cfg.timeout, d.readers(),
                               std::move(done), head_atom::value);
}

void engine::read(query q, read_options options,
                  std::function<void(caf::expected<read_result>)> done) {
  auto& d = *impl_;
  async_request<read_result>(d.sys, d.cfg.timeout, d.readers(), std::move(done),
                             read_atom::value, std::move(q), options);
}

void engine::stream(query q, read_options options, chunk_handler on_chunk,
                    std::function<void(caf::expected<stream_summary>)> done,
                    std::uint32_t window, stream_options chunking) {
  auto& d = *impl_;
  auto req = stream_of(std::move(q), options, window, chunking);
  spawn_stream_sink(d.sys, d.readers(), std::move(req), std::move(on_chunk),
                    std::move(done), d.cfg.timeout);
}

void engine::stream_paced(
  query q, read_options options, paced_chunk_handler on_chunk,
  std::function<void(caf::expected<stream_summary>)> done, std::uint32_t window,
  stream_options chunking) {
  auto& d = *impl_;
  auto req = stream_of(std::move(q), options, window, chunking);
  spawn_paced_sink(d.sys, d.readers(), std::move(req), std::move(on_chunk),
                   std::move(done), d.cfg.timeout);
}

void engine::project(std::vector<projector> projectors,
                     std::function<void(caf::expected<projection>)> done) {
  auto& d = *impl_;
  auto model = decision_model{
    std::make_shared<const std::vector<projector>>(std::move(projectors))};
  async_request<projection>(d.sys, d.cfg.timeout, d.readers(), std::move(done),
                            project_atom::value, std::move(model));
}

void engine::execute(command cmd,
                     std::function<void(caf::expected<command_outcome>)> done) {
  auto& d = *impl_;
  d.execute_on_appenders(std::make_shared<const command>(std::move(cmd)), 1,
                         true, std::move(done));
}

void engine::execute_unbounded(
  command cmd, std::function<void(caf::expected<command_outcome>)> done) {
  auto& d = *impl_;
  // A command without decide() goes to the appenders, which refuse it.
  if (!cmd.decide)
    return d.execute_on_appenders(
      std::make_shared<const command>(std::move(cmd)), 1, true,
      std::move(done));
  // Validated (and normalized) once, before the command is shared.
  try {
    validate(cmd.projectors, d.cfg.store.limits);
  } catch (...) {
    return done(detail::error_from_current_exception());
  }
  auto code = std::make_shared<const command>(std::move(cmd));
  if (!d.execute_here(code, done))
    d.execute_on_appenders(std::move(code), 1, true, std::move(done));
}

// -- subscriptions ------------------------------------------------------------

subscription
engine::subscribe(query q, std::uint64_t after,
                  std::function<void(std::vector<bus_item>&)> on_items,
                  subscription_end_handler on_end, subscribe_options opts) {
  return subscribe_paced(
    std::move(q), after,
    [on_items = std::move(on_items)](std::vector<bus_item>& items,
                                     std::function<void(bool)> ack) {
      if (!items.empty())
        on_items(items);
      ack(true);
    },
    std::move(on_end), opts);
}

subscription engine::subscribe_paced(query q, std::uint64_t after,
                                     paced_items_handler on_items,
                                     subscription_end_handler on_end,
                                     subscribe_options opts) {
  auto& d = *impl_;
  subscribe_request req;
  req.id = fresh_stream_id();
  req.q = std::move(q);
  req.after = after;
  req.credit = opts.manual_credit ? opts.credit
                                  : std::max<std::uint32_t>(opts.credit, 1);
  req.heartbeat = opts.heartbeat;
  auto id = req.id;
  spawn_subscription_sink(d.sys, d.bus, std::move(req), std::move(on_items),
                          std::move(on_end), d.cfg.bus.metrics,
                          !opts.manual_credit);
  return subscription{d.bus, id};
}

} // namespace dcbd
