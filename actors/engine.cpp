// The embedding API and the worker pools, which supervise their workers.
#include "actors/engine.hpp"

#include "store/pg_store.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/mailbox_element.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>

#include <atomic>
#include <future>
#include <utility>

namespace dcbd {

namespace {

using respawn_atom = caf::atom_constant<caf::atom("dcbRespawn")>;

// -- worker pool --------------------------------------------------------------

using worker_factory = std::function<caf::actor()>;

struct pool_state {
  // A declared constructor keeps this from being an aggregate: CAF 0.17
  // constructs states from the actor pointer when it can, and C++20 would
  // aggregate-initialize the first member from it.
  pool_state() = default;

  worker_factory make;
  std::size_t size = 0;
  std::vector<caf::actor> workers;
  std::size_t next = 0;
  bool respawn_scheduled = false;
  bool stopping = false;
  std::string kind;
  static inline const char* name = "dcbd.pool";
};

using pool_pointer = caf::stateful_actor<pool_state>*;

// Makes workers until the pool has `size`; if one cannot be made (the
// database is down), tries again in a second.
void fill(pool_pointer self) {
  auto& st = self->state;
  while (!st.stopping && st.workers.size() < st.size) {
    caf::actor w;
    try {
      w = st.make();
    } catch (const std::exception&) {
      if (!st.respawn_scheduled) {
        st.respawn_scheduled = true;
        self->delayed_send(self, std::chrono::seconds(1), respawn_atom::value);
      }
      return;
    }
    self->monitor(w);
    st.workers.push_back(std::move(w));
  }
}

// A pool of `size` workers that is also their supervisor: it hands each
// message to the next worker in turn (sender and request id intact, so the
// worker answers the caller directly), and replaces a worker that dies.
// Unlike caf::actor_pool it outlives its last worker: while it has none,
// callers get `unavailable`. On exit it stops its workers; each answers
// what it has taken before it quits.
caf::behavior pool_impl(pool_pointer self, std::string kind,
                        worker_factory make, std::size_t size) {
  auto& st = self->state;
  st.kind = std::move(kind);
  st.make = std::move(make);
  st.size = std::max<std::size_t>(size, 1);
  fill(self);
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    auto i = std::find(st.workers.begin(), st.workers.end(), dm.source);
    if (i == st.workers.end())
      return;
    st.workers.erase(i);
    fill(self);
  });
  self->set_exit_handler([self](caf::exit_msg& em) {
    auto& st = self->state;
    st.stopping = true;
    for (auto& w : st.workers)
      self->send_exit(w, em.reason);
    self->quit(std::move(em.reason));
  });
  self->set_default_handler(
    [self](caf::scheduled_actor*,
           caf::message_view& view) -> caf::result<caf::message> {
      auto& st = self->state;
      if (st.workers.empty())
        return caf::make_error(errc::unavailable,
                               "no " + st.kind
                                 + " is running (the database may be down)");
      auto& w = st.workers[st.next++ % st.workers.size()];
      auto* me = self->current_mailbox_element();
      w->enqueue(caf::make_mailbox_element(me->sender, me->mid,
                                           std::move(me->stages),
                                           view.move_content_to_message()),
                 self->context());
      return caf::delegated<caf::message>{};
    });
  return {
    [self](respawn_atom) {
      self->state.respawn_scheduled = false;
      fill(self);
    },
    [self](caf::sys_atom, caf::get_atom) {
      return self->state.workers;
    },
  };
}

// -- stream sink --------------------------------------------------------------

using summary_handler = std::function<void(caf::expected<stream_summary>)>;

using consumed_atom = caf::atom_constant<caf::atom("dcbConsume")>;

struct sink_state {
  // A declared constructor keeps this from being an aggregate: CAF 0.17
  // constructs states from the actor pointer when it can, and C++20 would
  // aggregate-initialize the first member from it.
  sink_state() = default;

  // The reader serving the stream (known from its first chunk).
  reader_actor reader;
  bool done = false;
  static inline const char* name = "dcbd.stream_sink";
};

// What a sink does with a chunk: either consume it at once (`plain`), or
// hand it on with an acknowledgement that comes back later (`paced`).
struct sink_handlers {
  chunk_handler plain;
  paced_chunk_handler paced;
};

caf::behavior sink_impl(caf::stateful_actor<sink_state>* self,
                        reader_actor readers, stream_request req,
                        sink_handlers handlers, summary_handler done,
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
    [self, handlers, finish, id](chunk_atom, stream_chunk& c) {
      auto& st = self->state;
      st.reader = caf::actor_cast<reader_actor>(self->current_sender());
      try {
        if (handlers.paced) {
          // The acknowledgement may come from any thread: it comes back to
          // this actor as a message.
          auto me = caf::actor_cast<caf::actor>(self);
          handlers.paced(c.events, [me](bool more) {
            caf::anon_send(me, consumed_atom::value, more);
          });
          return;
        }
        handlers.plain(c.events);
      } catch (const std::exception& e) {
        self->send(st.reader, cancel_atom::value, id);
        finish(caf::make_error(
          errc::internal, std::string{"stream handler threw: "} + e.what()));
        return;
      }
      self->send(st.reader, credit_atom::value, id, std::uint32_t{1});
    },
    [self, id](consumed_atom, bool more) {
      auto& st = self->state;
      if (st.done)
        return;
      if (more)
        self->send(st.reader, credit_atom::value, id, std::uint32_t{1});
      else
        self->send(st.reader, cancel_atom::value, id);
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

} // namespace

// -- engine -------------------------------------------------------------------

struct engine::impl {
  caf::actor_system& sys;
  engine_config cfg;
  std::shared_ptr<store_gate> gate;
  store_actor store;
  caf::actor reader_pool;
  caf::actor appender_pool;

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
  auto reader_pc = d.connection(d.cfg.reader_connections);
  auto reader_cfg = d.cfg.reader;
  d.reader_pool = sys.spawn(
    pool_impl, "reader", worker_factory{[&sys, reader_pc, reader_cfg] {
      return caf::actor_cast<caf::actor>(spawn_reader(
        sys, std::make_unique<pg_event_store>(reader_pc), reader_cfg));
    }},
    d.cfg.readers);
  appender_config acfg;
  acfg.store = d.store;
  acfg.readers = d.readers();
  acfg.gate = d.gate;
  acfg.max_attempts = d.cfg.max_attempts;
  acfg.timeout = d.cfg.timeout;
  acfg.limits = d.cfg.store.limits;
  d.appender_pool
    = sys.spawn(pool_impl, "appender", worker_factory{[&sys, acfg] {
                  return caf::actor_cast<caf::actor>(spawn_appender(sys, acfg));
                }},
                d.cfg.appenders);
}

engine::~engine() {
  auto& d = *impl_;
  caf::scoped_actor self{d.sys};
  auto stop = [&](const caf::actor& a) {
    self->monitor(a);
    self->send_exit(a, caf::exit_reason::user_shutdown);
    self->receive([](const caf::down_msg&) {});
  };
  // Stops a pool and waits for its workers, which answer what they took.
  auto stop_pool = [&](const caf::actor& pool) {
    std::vector<caf::actor> workers;
    self
      ->request(pool, std::chrono::seconds(5), caf::sys_atom::value,
                caf::get_atom::value)
      .receive(
        [&](std::vector<caf::actor>& ws) {
          workers = std::move(ws);
        },
        [](caf::error&) {});
    for (auto& w : workers)
      self->monitor(w);
    self->send_exit(pool, caf::exit_reason::user_shutdown);
    for (std::size_t i = 0; i < workers.size(); ++i)
      self->receive([](const caf::down_msg&) {});
  };
  // The appenders first, which still need the readers and the store for
  // the commands they are running; then the readers; then the store, which
  // commits what it has taken before it exits.
  stop_pool(d.appender_pool);
  stop_pool(d.reader_pool);
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

// -- blocking calls -----------------------------------------------------------

caf::expected<append_ack> engine::append(append_request req) {
  auto& d = *impl_;
  return blocking_request<append_ack>(d.sys, d.cfg.timeout, d.appenders(),
                                      append_atom::value, std::move(req));
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
  return blocking_request<projection>(d.sys, d.cfg.timeout, d.readers(),
                                      project_atom::value, std::move(model));
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

void engine::append(append_request req,
                    std::function<void(caf::expected<append_ack>)> done) {
  auto& d = *impl_;
  async_request<append_ack>(d.sys, d.cfg.timeout, d.appenders(),
                            std::move(done), append_atom::value,
                            std::move(req));
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
  stream_request req;
  req.id = fresh_stream_id();
  req.q = std::move(q);
  req.options = options;
  req.window = window;
  req.chunking = chunking;
  d.sys.spawn(sink_impl, d.readers(), std::move(req),
              sink_handlers{std::move(on_chunk), {}}, std::move(done),
              d.cfg.timeout);
}

void engine::stream_paced(
  query q, read_options options, paced_chunk_handler on_chunk,
  std::function<void(caf::expected<stream_summary>)> done, std::uint32_t window,
  stream_options chunking) {
  auto& d = *impl_;
  stream_request req;
  req.id = fresh_stream_id();
  req.q = std::move(q);
  req.options = options;
  req.window = window;
  req.chunking = chunking;
  d.sys.spawn(sink_impl, d.readers(), std::move(req),
              sink_handlers{{}, std::move(on_chunk)}, std::move(done),
              d.cfg.timeout);
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
                   sink_handlers{std::move(on_chunk), {}}, std::move(done),
                   std::chrono::milliseconds{30'000});
}

} // namespace dcbd
