// Readers and appenders.
#include "actors/appender_protocol.hpp"
#include "actors/reader_protocol.hpp"
#include "store/validation.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <map>
#include <set>
#include <unordered_map>
#include <utility>

namespace dcbd {

namespace {

// Maps whatever a handler threw to a CAF error: nothing escapes a handler.
caf::error error_from_current_exception() {
  try {
    throw;
  } catch (const store_error& e) {
    return to_error(e);
  } catch (const std::exception& e) {
    return caf::make_error(errc::internal, std::string{e.what()});
  } catch (...) {
    return caf::make_error(errc::internal, "unknown exception");
  }
}

// Turns an exception that escaped a handler anyway into the actor's exit
// reason instead of a crash of the process.
template <class Self>
void install_exception_handler(Self* self) {
  self->set_exception_handler([](std::exception_ptr& eptr) -> caf::error {
    try {
      std::rethrow_exception(eptr);
    } catch (...) {
      return error_from_current_exception();
    }
  });
}

// -- reader -------------------------------------------------------------------

struct open_stream {
  stream_sink_actor sink;
  std::uint64_t id = 0;
  std::unique_ptr<event_stream> stream;
  std::uint32_t credit = 0;
  std::uint64_t seq = 0;
  std::uint64_t events = 0;
};

struct reader_state {
  // A declared constructor keeps this from being an aggregate: CAF 0.17
  // constructs states from the actor pointer when it can, and C++20 would
  // aggregate-initialize the first member from it.
  reader_state() = default;

  std::shared_ptr<event_store> backend;
  reader_config cfg;
  // Streams by a reader-local serial; the sink names them by (sink, id).
  std::unordered_map<std::uint64_t, open_stream> streams;
  std::map<std::pair<caf::actor_addr, std::uint64_t>, std::uint64_t> by_sink;
  std::set<caf::actor_addr> monitored;
  std::uint64_t next_serial = 1;
  static inline const char* name = "dcbd.reader";
};

using reader_pointer = reader_actor::stateful_pointer<reader_state>;

void close_stream(reader_pointer self, std::uint64_t serial) {
  auto& st = self->state;
  auto i = st.streams.find(serial);
  if (i == st.streams.end())
    return;
  st.by_sink.erase({i->second.sink.address(), i->second.id});
  st.streams.erase(i);
}

void end_stream(reader_pointer self, std::uint64_t serial, errc code,
                std::string message) {
  auto& s = self->state.streams.at(serial);
  stream_end end;
  end.id = s.id;
  end.head = s.stream ? s.stream->head() : 0;
  end.events = s.events;
  end.code = code;
  end.message = std::move(message);
  self->send(s.sink, end_atom::value, std::move(end));
  close_stream(self, serial);
}

// Sends the next chunk of a stream if it has credit; schedules itself again
// (behind other work, for fairness) while credit remains.
void pump(reader_pointer self, std::uint64_t serial) {
  auto i = self->state.streams.find(serial);
  if (i == self->state.streams.end() || i->second.credit == 0)
    return;
  auto& s = i->second;
  std::vector<sequenced_event> events;
  bool more = false;
  try {
    more = s.stream->next(events);
  } catch (...) {
    auto err = error_from_current_exception();
    end_stream(self, serial, code_of(err), message_of(err));
    return;
  }
  if (!more) {
    end_stream(self, serial, errc::none, {});
    return;
  }
  --s.credit;
  s.events += events.size();
  self->send(s.sink, chunk_atom::value,
             stream_chunk{s.id, s.seq++, std::move(events)});
  if (s.credit > 0)
    self->send(self, pump_atom::value, serial);
}

reader_actor::behavior_type reader_impl(reader_pointer self,
                                        std::shared_ptr<event_store> backend,
                                        reader_config cfg) {
  self->state.backend = std::move(backend);
  self->state.cfg = std::move(cfg);
  install_exception_handler(self);
  // On exit, tell every open stream's sink instead of leaving it waiting.
  self->set_exit_handler([self](caf::exit_msg& em) {
    std::vector<std::uint64_t> open;
    for (auto& [serial, s] : self->state.streams)
      open.push_back(serial);
    for (auto serial : open)
      end_stream(self, serial, errc::unavailable,
                 "the reader is shutting down");
    self->quit(std::move(em.reason));
  });
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    st.monitored.erase(dm.source);
    std::vector<std::uint64_t> gone;
    for (auto& [serial, s] : st.streams)
      if (s.sink.address() == dm.source)
        gone.push_back(serial);
    for (auto serial : gone)
      close_stream(self, serial);
  });
  return {
    [self](read_atom, const query& q,
           const read_options& options) -> caf::result<read_result> {
      auto& st = self->state;
      auto max = st.cfg.max_read_events;
      auto bounded = options;
      bool capped = !options.limit || *options.limit > max;
      if (capped)
        bounded.limit = max + 1;
      try {
        auto result = st.backend->read(q, bounded);
        if (capped && result.events.size() > max)
          return caf::make_error(errc::invalid_argument,
                                 "the result has more than "
                                   + std::to_string(max)
                                   + " events; read with options.limit <= "
                                   + std::to_string(max) + " or stream it");
        return result;
      } catch (...) {
        return error_from_current_exception();
      }
    },
    [self](stream_atom, stream_request& req, const caf::actor& sink) {
      if (!sink)
        return;
      auto& st = self->state;
      auto key = std::make_pair(sink.address(), req.id);
      if (st.by_sink.count(key) > 0) {
        stream_end end;
        end.id = req.id;
        end.code = errc::invalid_argument;
        end.message = "stream id " + std::to_string(req.id)
                      + " is already open for this sink";
        self->send(caf::actor_cast<stream_sink_actor>(sink), end_atom::value,
                   std::move(end));
        return;
      }
      auto serial = st.next_serial++;
      open_stream s;
      s.sink = caf::actor_cast<stream_sink_actor>(sink);
      s.id = req.id;
      s.credit = std::max<std::uint32_t>(req.window, 1);
      st.by_sink.emplace(key, serial);
      auto& slot = st.streams.emplace(serial, std::move(s)).first->second;
      if (st.monitored.insert(sink.address()).second)
        self->monitor(sink);
      try {
        slot.stream = st.backend->stream(req.q, req.options, req.chunking);
      } catch (...) {
        auto err = error_from_current_exception();
        end_stream(self, serial, code_of(err), message_of(err));
        return;
      }
      pump(self, serial);
    },
    [self](credit_atom, std::uint64_t id, std::uint32_t n) {
      auto& st = self->state;
      auto sender = caf::actor_cast<caf::actor_addr>(self->current_sender());
      auto i = st.by_sink.find({sender, id});
      if (i == st.by_sink.end())
        return; // ended or cancelled meanwhile
      auto& s = st.streams.at(i->second);
      bool idle = s.credit == 0;
      s.credit += n;
      if (idle)
        pump(self, i->second);
    },
    [self](cancel_atom, std::uint64_t id) {
      auto& st = self->state;
      auto sender = caf::actor_cast<caf::actor_addr>(self->current_sender());
      auto i = st.by_sink.find({sender, id});
      if (i != st.by_sink.end())
        end_stream(self, i->second, errc::none, "cancelled by the sink");
    },
    [self](pump_atom, std::uint64_t serial) {
      pump(self, serial);
    },
    [self](project_atom,
           const decision_model& model) -> caf::result<projection> {
      auto& st = self->state;
      if (!model.projectors)
        return caf::make_error(errc::invalid_argument,
                               "the decision model carries no projectors; "
                               "projectors run on the node that defines "
                               "them");
      try {
        auto projectors = *model.projectors;
        validate(projectors, st.cfg.limits);
        auto d = project(*st.backend, projectors, st.cfg.project_chunking);
        projection reply;
        reply.states
          = std::make_shared<const decision_states>(std::move(d.states));
        reply.condition = std::move(d.condition);
        reply.head = d.head;
        reply.events_read = d.events_read;
        return reply;
      } catch (...) {
        return error_from_current_exception();
      }
    },
    [self](head_atom) -> caf::result<std::uint64_t> {
      try {
        return self->state.backend->head();
      } catch (...) {
        return error_from_current_exception();
      }
    },
  };
}

// -- appender -----------------------------------------------------------------

struct appender_state {
  // A declared constructor keeps this from being an aggregate: CAF 0.17
  // constructs states from the actor pointer when it can, and C++20 would
  // aggregate-initialize the first member from it.
  appender_state() = default;

  appender_config cfg;
  // Calls taken and not yet answered; on exit the appender waits for them.
  std::size_t in_flight = 0;
  bool stopping = false;
  caf::error exit_reason;
  static inline const char* name = "dcbd.appender";
};

using appender_pointer = appender_actor::stateful_pointer<appender_state>;

void call_finished(appender_pointer self) {
  auto& st = self->state;
  if (--st.in_flight == 0 && st.stopping)
    self->quit(st.exit_reason);
}

// A response promise that counts the appender's calls in flight.
template <class T>
struct tracked_promise {
  tracked_promise(appender_pointer self, caf::typed_response_promise<T> promise)
    : self(self)
    , rp(std::move(promise)) {
    ++self->state.in_flight;
  }

  template <class U>
  void deliver(U&& x) {
    rp.deliver(std::forward<U>(x));
    call_finished(self);
  }

  appender_pointer self;
  caf::typed_response_promise<T> rp;
};

caf::error shutting_down() {
  return caf::make_error(errc::unavailable, "the appender is shutting down");
}

caf::error overloaded_error(const store_gate& gate) {
  return caf::make_error(errc::overloaded, "the store queue is full ("
                                             + std::to_string(gate.capacity())
                                             + " requests); retry later");
}

command_outcome accepted(std::uint32_t attempt, std::uint64_t first = 0,
                         std::uint64_t last = 0) {
  command_outcome o;
  o.accepted = true;
  o.first_position = first;
  o.last_position = last;
  o.attempts = attempt;
  return o;
}

// One round of the DCB loop: project, decide, append; on a conflict, again.
void attempt(appender_pointer self, command_ptr cmd,
             tracked_promise<command_outcome> rp, std::uint32_t n) {
  auto& cfg = self->state.cfg;
  projectors_ptr projectors{cmd, &cmd->projectors};
  self
    ->request(cfg.readers, cfg.timeout, project_atom::value,
              decision_model{std::move(projectors)})
    .then(
      [self, cmd, rp, n](const projection& d) mutable {
        auto& cfg = self->state.cfg;
        auto prefix = "command '" + cmd->name + "': ";
        verdict v;
        try {
          v = cmd->decide(*d.states);
        } catch (const std::exception& e) {
          rp.deliver(caf::make_error(errc::internal,
                                     prefix + "decide() threw: " + e.what()));
          return;
        } catch (...) {
          rp.deliver(
            caf::make_error(errc::internal, prefix + "decide() threw"));
          return;
        }
        if (v.rejection) {
          command_outcome o;
          o.rejection = std::move(*v.rejection);
          o.attempts = n;
          rp.deliver(std::move(o));
          return;
        }
        if (v.events.empty()) {
          rp.deliver(accepted(n));
          return;
        }
        append_request req{std::move(v.events), d.condition};
        try {
          validate(req, cfg.limits);
        } catch (const store_error& e) {
          rp.deliver(caf::make_error(
            errc::invalid_argument,
            prefix + "decide() returned invalid events: " + e.what()));
          return;
        }
        auto gate = cfg.gate;
        if (!gate->try_enter()) {
          rp.deliver(overloaded_error(*gate));
          return;
        }
        self
          ->request(cfg.store, cfg.timeout, append_atom::value, std::move(req))
          .then(
            [gate, rp, n](const append_ack& ack) mutable {
              gate->leave();
              rp.deliver(accepted(n, ack.first_position, ack.last_position));
            },
            [self, cmd, gate, rp, n, prefix](caf::error& err) mutable {
              gate->leave();
              if (code_of(err) != errc::append_condition_failed) {
                rp.deliver(std::move(err));
              } else if (n < self->state.cfg.max_attempts) {
                attempt(self, cmd, rp, n + 1);
              } else {
                rp.deliver(caf::make_error(errc::append_condition_failed,
                                           prefix + "conflicted on all "
                                             + std::to_string(n) + " attempts: "
                                             + message_of(err)));
              }
            });
      },
      [rp](caf::error& err) mutable {
        rp.deliver(std::move(err));
      });
}

appender_actor::behavior_type appender_impl(appender_pointer self,
                                            appender_config cfg) {
  cfg.max_attempts = std::max<std::uint32_t>(cfg.max_attempts, 1);
  self->state.cfg = std::move(cfg);
  install_exception_handler(self);
  // Graceful exit: answer every call taken, refuse new ones, then quit.
  self->set_exit_handler([self](caf::exit_msg& em) {
    auto& st = self->state;
    st.stopping = true;
    st.exit_reason = std::move(em.reason);
    if (st.in_flight == 0)
      self->quit(st.exit_reason);
  });
  return {
    [self](append_atom, append_request& req) -> caf::result<append_ack> {
      auto& cfg = self->state.cfg;
      if (self->state.stopping)
        return shutting_down();
      try {
        validate(req, cfg.limits);
      } catch (const store_error& e) {
        return to_error(e);
      }
      auto gate = cfg.gate;
      if (!gate->try_enter())
        return overloaded_error(*gate);
      tracked_promise<append_ack> rp{self,
                                     self->make_response_promise<append_ack>()};
      self->request(cfg.store, cfg.timeout, append_atom::value, std::move(req))
        .then(
          [gate, rp](const append_ack& ack) mutable {
            gate->leave();
            rp.deliver(ack);
          },
          [gate, rp](caf::error& err) mutable {
            gate->leave();
            rp.deliver(std::move(err));
          });
      return rp.rp;
    },
    [self](execute_atom, command_request& req) -> caf::result<command_outcome> {
      if (!req.code)
        return caf::make_error(errc::invalid_argument,
                               "command '" + req.name
                                 + "' carries no code here; commands run on "
                                   "the node that defines them");
      if (!req.code->decide)
        return caf::make_error(errc::invalid_argument,
                               "command '" + req.name
                                 + "': decide must be set");
      if (self->state.stopping)
        return shutting_down();
      tracked_promise<command_outcome> rp{
        self, self->make_response_promise<command_outcome>()};
      attempt(self, std::move(req.code), rp, 1);
      return rp.rp;
    },
  };
}

} // namespace

reader_actor spawn_reader(caf::actor_system& sys,
                          std::unique_ptr<event_store> backend,
                          reader_config cfg) {
  std::shared_ptr<event_store> shared{std::move(backend)};
  return sys.spawn<caf::detached>(reader_impl, std::move(shared),
                                  std::move(cfg));
}

appender_actor spawn_appender(caf::actor_system& sys, appender_config cfg) {
  return sys.spawn(appender_impl, std::move(cfg));
}

} // namespace dcbd
