// The embedding API, the worker pools and their supervisors.
#include "actors/engine.hpp"

#include "store/pg_store.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_pool.hpp>
#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/scoped_execution_unit.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>

#include <atomic>
#include <future>
#include <utility>

namespace dcbd {

namespace {

using respawn_atom = caf::atom_constant<caf::atom("dcbRespawn")>;

// -- supervision --------------------------------------------------------------

using worker_factory = std::function<caf::actor()>;

struct supervisor_state {
  caf::actor pool;
  worker_factory make;
  std::uint64_t restarts = 0;
  static inline const char* name = "dcbd.supervisor";
};

// Keeps `pool` at `size` workers: spawns them, monitors them, and replaces
// any that dies (the pool drops dead workers by itself). A worker that
// cannot be made (the database is down) is retried every second.
caf::behavior supervisor_impl(caf::stateful_actor<supervisor_state>* self,
                              caf::actor pool, worker_factory make,
                              std::size_t size) {
  self->state.pool = std::move(pool);
  self->state.make = std::move(make);
  auto add_worker = [self]() -> bool {
    caf::actor w;
    try {
      w = self->state.make();
    } catch (const std::exception&) {
      self->delayed_send(self, std::chrono::seconds(1), respawn_atom::value);
      return false;
    }
    self->monitor(w);
    self->send(self->state.pool, caf::sys_atom::value, caf::put_atom::value, w);
    return true;
  };
  for (std::size_t i = 0; i < size; ++i)
    add_worker();
  self->set_down_handler([self, add_worker](caf::down_msg&) {
    ++self->state.restarts;
    add_worker();
  });
  return {
    [add_worker](respawn_atom) {
      add_worker();
    },
    [self](stats_atom) {
      return self->state.restarts;
    },
  };
}

// -- stream sink --------------------------------------------------------------

using summary_handler = std::function<void(caf::expected<stream_summary>)>;

struct sink_state {
  bool done = false;
  static inline const char* name = "dcbd.stream_sink";
};

caf::behavior sink_impl(caf::stateful_actor<sink_state>* self,
                        reader_actor readers, stream_request req,
                        chunk_handler on_chunk, summary_handler done,
                        std::chrono::milliseconds idle_timeout) {
  auto finish = [self, done](caf::expected<stream_summary> r) {
    if (self->state.done)
      return;
    self->state.done = true;
    done(std::move(r));
    self->quit();
  };
  auto id = req.id;
  self->send(readers, stream_atom::value, std::move(req),
             caf::actor_cast<caf::actor>(self));
  return {
    [self, on_chunk, finish, id](chunk_atom, stream_chunk& c) {
      auto reader = caf::actor_cast<reader_actor>(self->current_sender());
      try {
        on_chunk(c.events);
      } catch (const std::exception& e) {
        self->send(reader, cancel_atom::value, id);
        finish(caf::make_error(
          errc::internal, std::string{"stream handler threw: "} + e.what()));
        return;
      }
      self->send(reader, credit_atom::value, id, std::uint32_t{1});
    },
    [finish](end_atom, stream_end& e) {
      if (e.code != errc::none)
        finish(caf::make_error(e.code, std::move(e.message)));
      else
        finish(stream_summary{e.head, e.events});
    },
    caf::after(idle_timeout) >>
      [finish] {
        finish(caf::make_error(errc::unavailable,
                               "the stream stalled: no chunk within the "
                               "timeout"));
      },
  };
}

std::atomic<std::uint64_t> next_stream_id{1};

std::uint64_t fresh_stream_id() {
  return next_stream_id.fetch_add(1, std::memory_order_relaxed);
}

// -- helpers for the API ------------------------------------------------------

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

projection to_projection(decision_reply& d) {
  return projection{std::move(d.states), std::move(d.condition), d.head};
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
  caf::actor reader_supervisor;
  caf::actor appender_supervisor;

  impl(caf::actor_system& s, engine_config c) : sys(s), cfg(std::move(c)) {
    // nop
  }

  pg_config connection(std::size_t connections) const {
    auto pc = cfg.store;
    pc.pool_size = std::max<std::size_t>(connections, 1);
    return pc;
  }

  reader_actor readers() const {
    return caf::actor_cast<reader_actor>(reader_pool);
  }

  appender_actor appenders() const {
    return caf::actor_cast<appender_actor>(appender_pool);
  }
};

engine::engine(caf::actor_system& sys, engine_config cfg)
  : impl_(std::make_unique<impl>(sys, std::move(cfg))) {
  auto& d = *impl_;
  d.cfg.reader.limits = d.cfg.store.limits;
  d.gate = std::make_shared<store_gate>(d.cfg.group.max_queue);
  // The store actor writes with one connection; a second one lets it settle
  // an in-doubt group while the first reconnects.
  d.store = spawn_store(sys, std::make_unique<pg_event_store>(d.connection(2)),
                        d.cfg.group, d.cfg.metrics);
  caf::scoped_execution_unit context{&sys};
  d.reader_pool = caf::actor_pool::make(&context,
                                        caf::actor_pool::round_robin());
  d.appender_pool = caf::actor_pool::make(&context,
                                          caf::actor_pool::round_robin());
  auto reader_pc = d.connection(d.cfg.reader_connections);
  auto reader_cfg = d.cfg.reader;
  d.reader_supervisor = sys.spawn(
    supervisor_impl, d.reader_pool,
    worker_factory{[&sys, reader_pc, reader_cfg] {
      return caf::actor_cast<caf::actor>(spawn_reader(
        sys, std::make_unique<pg_event_store>(reader_pc), reader_cfg));
    }},
    std::max<std::size_t>(d.cfg.readers, 1));
  appender_config acfg;
  acfg.store = d.store;
  acfg.readers = d.readers();
  acfg.gate = d.gate;
  acfg.max_attempts = d.cfg.max_attempts;
  acfg.timeout = d.cfg.timeout;
  acfg.limits = d.cfg.store.limits;
  d.appender_supervisor
    = sys.spawn(supervisor_impl, d.appender_pool, worker_factory{[&sys, acfg] {
                  return caf::actor_cast<caf::actor>(spawn_appender(sys, acfg));
                }},
                std::max<std::size_t>(d.cfg.appenders, 1));
}

engine::~engine() {
  auto& d = *impl_;
  // Supervisors first, or they would replace the workers the pools stop.
  caf::scoped_actor self{d.sys};
  for (auto* sup : {&d.appender_supervisor, &d.reader_supervisor}) {
    self->monitor(*sup);
    self->send_exit(*sup, caf::exit_reason::user_shutdown);
    self->receive([](const caf::down_msg&) {});
  }
  for (auto* pool : {&d.appender_pool, &d.reader_pool})
    self->send_exit(*pool, caf::exit_reason::user_shutdown);
  // The store answers what is queued before the exit (it is a normal
  // message behind them), so every caller gets a reply.
  self->monitor(d.store);
  self->send(d.store, group_atom::value);
  self->send_exit(d.store, caf::exit_reason::user_shutdown);
  self->receive([](const caf::down_msg&) {});
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

// -- blocking calls -----------------------------------------------------------

caf::expected<append_ack>
engine::append(std::vector<event> events,
               std::optional<append_condition> condition) {
  auto& d = *impl_;
  return blocking_request<append_ack>(
    d.sys, d.cfg.timeout, d.appenders(), append_atom::value,
    append_request{std::move(events), std::move(condition)});
}

caf::expected<read_result> engine::read(query q, read_options options) {
  auto& d = *impl_;
  return blocking_request<read_result>(d.sys, d.cfg.timeout, d.readers(),
                                       read_atom::value, std::move(q), options);
}

caf::expected<stream_summary>
engine::stream(query q, read_options options, const chunk_handler& on_chunk,
               std::uint32_t window, stream_options chunking) {
  auto& d = *impl_;
  caf::scoped_actor self{d.sys};
  stream_request req;
  req.id = fresh_stream_id();
  req.q = std::move(q);
  req.options = options;
  req.window = window;
  req.chunking = chunking;
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
  auto model = decision_model{
    std::make_shared<const std::vector<projector>>(std::move(projectors))};
  auto r = blocking_request<decision_reply>(
    d.sys, d.cfg.timeout, d.readers(), project_atom::value, std::move(model));
  if (!r)
    return r.error();
  return to_projection(*r);
}

caf::expected<command_outcome> engine::execute(command cmd) {
  auto& d = *impl_;
  auto name = cmd.name;
  return blocking_request<command_outcome>(
    d.sys, d.cfg.timeout, d.appenders(), execute_atom::value,
    command_request{std::move(name),
                    std::make_shared<const command>(std::move(cmd))});
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

// -- asynchronous calls -------------------------------------------------------

void engine::append(std::vector<event> events,
                    std::optional<append_condition> condition,
                    std::function<void(caf::expected<append_ack>)> done) {
  auto& d = *impl_;
  async_request<append_ack>(
    d.sys, d.cfg.timeout, d.appenders(), std::move(done), append_atom::value,
    append_request{std::move(events), std::move(condition)});
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
  stream_request req;
  req.id = fresh_stream_id();
  req.q = std::move(q);
  req.options = options;
  req.window = window;
  req.chunking = chunking;
  d.sys.spawn(sink_impl, d.readers(), std::move(req), std::move(on_chunk),
              std::move(done), d.cfg.timeout);
}

void engine::project(std::vector<projector> projectors,
                     std::function<void(caf::expected<projection>)> done) {
  auto& d = *impl_;
  auto model = decision_model{
    std::make_shared<const std::vector<projector>>(std::move(projectors))};
  std::function<void(caf::expected<decision_reply>)> convert
    = [done = std::move(done)](caf::expected<decision_reply> r) {
        if (!r)
          done(r.error());
        else
          done(to_projection(*r));
      };
  async_request<decision_reply>(d.sys, d.cfg.timeout, d.readers(),
                                std::move(convert), project_atom::value,
                                std::move(model));
}

void engine::execute(command cmd,
                     std::function<void(caf::expected<command_outcome>)> done) {
  auto& d = *impl_;
  auto name = cmd.name;
  async_request<command_outcome>(
    d.sys, d.cfg.timeout, d.appenders(), std::move(done), execute_atom::value,
    command_request{std::move(name),
                    std::make_shared<const command>(std::move(cmd))});
}

caf::actor
spawn_stream_sink(caf::actor_system& sys, reader_actor readers,
                  stream_request req, chunk_handler on_chunk,
                  std::function<void(caf::expected<stream_summary>)> done) {
  if (req.id == 0)
    req.id = fresh_stream_id();
  return sys.spawn(sink_impl, std::move(readers), std::move(req),
                   std::move(on_chunk), std::move(done),
                   std::chrono::milliseconds{30'000});
}

} // namespace dcbd
