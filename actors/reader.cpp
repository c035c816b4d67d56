// Readers (detached, each with its own store connections) and the stream
// sinks that consume their streams under credit flow control.
#include "actors/errors.hpp"
#include "actors/reader_protocol.hpp"
#include "store/cached_store.hpp"
#include "store/validation.hpp"

#include <caf/actor_system.hpp>
#include <caf/after.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <atomic>
#include <map>
#include <set>
#include <unordered_map>
#include <utility>

namespace dcbd {

namespace {

using detail::error_from_current_exception;
using detail::install_exception_handler;

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

// A read of at most `max_read_events` events, served as `consistency`
// asks when the backend has an event cache (store/cached_store.hpp).
caf::result<read_result> bounded_read(reader_state& st, const query& q,
                                      const read_options& options,
                                      read_consistency consistency) {
  auto max = st.cfg.max_read_events;
  auto bounded = options;
  bool capped = !options.limit || *options.limit > max;
  if (capped)
    bounded.limit = max + 1;
  try {
    read_scope scope{cache_route::read, consistency};
    auto result = st.backend->read(q, bounded);
    if (capped && result.events.size() > max)
      return caf::make_error(errc::invalid_argument,
                             "the result has more than " + std::to_string(max)
                               + " events; read with options.limit <= "
                               + std::to_string(max) + " or stream it");
    return result;
  } catch (...) {
    return error_from_current_exception();
  }
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
      return bounded_read(self->state, q, options,
                          read_consistency::linearizable);
    },
    [self](read_atom, const query& q, const read_options& options,
           snapshot_atom) -> caf::result<read_result> {
      return bounded_read(self->state, q, options, read_consistency::snapshot);
    },
    [self](read_atom, const query& q, const read_options& options,
           direct_atom) -> caf::result<read_result> {
      return bounded_read(self->state, q, options, read_consistency::database);
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
        read_scope scope{cache_route::stream};
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
        read_scope scope{cache_route::project,
                         model.at_cache_head ? read_consistency::snapshot
                                             : read_consistency::linearizable};
        return project(*st.backend, projectors, st.cfg.project_chunking);
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

// -- stream sink --------------------------------------------------------------

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

caf::actor spawn_sink(caf::actor_system& sys, reader_actor readers,
                      stream_request req, sink_handlers handlers,
                      summary_handler done,
                      std::chrono::milliseconds idle_timeout) {
  if (req.id == 0)
    req.id = next_stream_id.fetch_add(1, std::memory_order_relaxed);
  return sys.spawn(sink_impl, std::move(readers), std::move(req),
                   std::move(handlers), std::move(done), idle_timeout);
}

} // namespace

std::uint64_t fresh_stream_id() {
  return next_stream_id.fetch_add(1, std::memory_order_relaxed);
}

reader_actor spawn_reader(caf::actor_system& sys,
                          std::shared_ptr<event_store> backend,
                          reader_config cfg) {
  return sys.spawn<caf::detached>(reader_impl, std::move(backend),
                                  std::move(cfg));
}

caf::actor spawn_stream_sink(caf::actor_system& sys, reader_actor readers,
                             stream_request req, chunk_handler on_chunk,
                             summary_handler done,
                             std::chrono::milliseconds idle_timeout) {
  return spawn_sink(sys, std::move(readers), std::move(req),
                    sink_handlers{std::move(on_chunk), {}}, std::move(done),
                    idle_timeout);
}

caf::actor spawn_paced_sink(caf::actor_system& sys, reader_actor readers,
                            stream_request req, paced_chunk_handler on_chunk,
                            summary_handler done,
                            std::chrono::milliseconds idle_timeout) {
  return spawn_sink(sys, std::move(readers), std::move(req),
                    sink_handlers{{}, std::move(on_chunk)}, std::move(done),
                    idle_timeout);
}

} // namespace dcbd
