// The dcb.events contract (DESIGN §4):
//
//   GET  /read?query=<json>&options=<json>   JSON array of
//                                            {type, tags, data, position}
//   POST /append                             {events, condition} ->
//                                            {durationInMicroseconds,
//                                             appendConditionFailed}
//
// A failed append condition is a 200 with appendConditionFailed: true. An
// extension of the contract: the body may carry "jobs" (as /v1/append,
// runtime/json_api), enqueued iff the events are appended.
//
// /read first asks the event cache (engine::read_from_cache): a read index
// taken without blocking a thread, shared with every read waiting for one,
// then the answer read from memory on the connection's strand, without the
// actors, when the cache holds the whole range and at most one chunk's worth
// of events (`http_config::stream_chunk_events`). Else an answer of at most
// that many events comes straight from PostgreSQL in one statement on the
// I/O threads (`read_from_database`, runtime/database_reads.hpp).
// Otherwise:
//
// /read answers results of any size with bounded memory: like /v1/read it
// runs `engine::stream_paced` into the session's chunk writer, a chunk
// acknowledged once it is on the socket, and takes one of the
// `http_config::max_streams` slots (waiting in line for one past them, 503
// when none comes; 499 in the metrics when the client goes away). The body
// is the same JSON array as a whole answer would be, `[` + elements
// separated by `,` + `]`, sent chunked.
//
// - The response opens with the first event, so an error before it (a bad
//   query or options, the database down) is still a plain {"code",
//   "message"} answer with its status, and an empty result is a plain `[]`.
// - A failure after the array started (status 200 already sent) aborts the
//   connection: the client sees a body cut short, never a valid-looking
//   short array. It is counted with the status of the error.
// - msgpack (`Accept: application/msgpack`): a msgpack array states its
//   length before its elements, which a stream does not know. Those answers
//   keep the bounded in-memory read: at most `max-read-events` events, a
//   400 (invalid_argument) past that; read more with options.limit pages or
//   /v1/read. HEAD requests (a GET route answers HEAD) take that path too:
//   their answer has no body, and the chunk writer has no HEAD mode.
#include "actors/engine.hpp"
#include "runtime/http_routes.hpp"
#include "runtime/json_api.hpp"
#include "runtime/metrics.hpp"
#include "runtime/routes_common.hpp"

#include <iostream>

namespace dcbd::http {

namespace {

// The whole array in memory, bounded by `max_read_events` (the reader
// refuses more): for msgpack, and for HEAD.
void read_bounded(route_env& env, const std::shared_ptr<exchange>& x, query q,
                  read_options options) {
  env.eng.read(std::move(q), options, [x](caf::expected<read_result> r) {
    x->on_strand([x, r = std::move(r)]() mutable {
      if (!r) {
        read_done(*x, code_of(r.error()), 0);
        return x->fail(r.error());
      }
      read_done(*x, errc::none, r->events.size());
      json out = json::array();
      for (auto& e : r->events)
        out.push_back(to_json(e, false, x->msgpack_out()));
      x->reply(200, out);
    });
  });
}

// One streamed /read: its slot, its writer once the array started, what it
// delivered. The strand serializes every use after `read` returns.
struct array_stream {
  std::shared_ptr<exchange> x;
  std::shared_ptr<stream_slot> slot;
  // Null until the first event: until then nothing was sent.
  std::shared_ptr<chunk_writer> out;
  std::uint64_t events = 0;
  // Set when a chunk could not be formatted (the stream is then cancelled).
  errc failure = errc::none;
  std::string failure_message;

  array_stream(std::shared_ptr<exchange> ex, std::shared_ptr<stream_slot> s)
    : x(std::move(ex))
    , slot(std::move(s)) {
    // nop
  }

  ~array_stream() {
    release();
  }

  void release() {
    if (slot)
      slot->release();
  }

  // Formats a chunk as array elements and queues it, opening the response
  // with the first one; `ack` follows its write.
  void chunk(const std::vector<sequenced_event>& events_in,
             std::function<void(bool)> ack) {
    if (events_in.empty())
      return ack(true);
    std::string text;
    try {
      bool first = events == 0;
      for (auto& e : events_in) {
        text += first ? '[' : ',';
        first = false;
        append_json(text, e);
      }
    } catch (const std::exception& e) {
      failure = errc::internal;
      failure_message = e.what();
      return ack(false);
    }
    if (!out)
      out = x->open_stream(json_type);
    events += events_in.size();
    out->write(std::move(text), std::move(ack));
  }

  // The stream ended: count it and close the array, or answer plainly when
  // nothing was sent, or abort when it failed midway.
  static void finish(const std::shared_ptr<array_stream>& self,
                     caf::expected<stream_summary> r) {
    auto& x = *self->x;
    auto code = self->failure;
    auto message = self->failure_message;
    if (code == errc::none && !r) {
      code = code_of(r.error());
      message = message_of(r.error());
    }
    if (!self->out) {
      self->release();
      read_done(x, code, 0);
      if (code != errc::none)
        return x.fail(code, std::move(message));
      return x.reply(200, json::array());
    }
    // A client that went away has cancelled the stream by now.
    if (!self->out->open()) {
      read_done(x, errc::unavailable, self->events);
      x.count(499);
      return self->out->end([self](bool) {
        self->release();
      });
    }
    read_done(x, code, self->events);
    if (code != errc::none) {
      // The status went out as 200: cut the body rather than close the
      // array over a partial result.
      std::cerr << "dcbd http: /read failed after " << self->events
                << " events, aborting the response: " << message << std::endl;
      x.count(status_of(code));
      self->out->abort();
      return self->release();
    }
    x.count(200);
    self->out->write("]");
    self->out->end([self](bool) {
      self->release();
    });
  }
};

void stream_array(route_env& env, const std::shared_ptr<exchange>& x,
                  std::shared_ptr<stream_slot> slot, query q,
                  read_options options);

void stream_read(route_env& env, const std::shared_ptr<exchange>& x, query q,
                 read_options options);

void read(route_env& env, const std::shared_ptr<exchange>& x) {
  auto q = query_parameter(*x);
  auto options = options_parameter(*x);
  if (x->msgpack_out() || x->req().method() == bhttp::verb::head)
    return read_bounded(env, x, std::move(q), options);
  // From memory when the cache can answer whole (one chunk's worth at
  // most), in one body as the stream would have sent it; else streamed.
  auto text = std::make_shared<std::string>("[");
  env.eng.read_from_cache(
    q, options, env.cfg.stream_chunk_events,
    [x](std::function<void()> f) {
      x->on_strand(std::move(f));
    },
    [text](const sequenced_event& e) {
      if (text->size() > 1)
        *text += ',';
      append_json(*text, e);
    },
    [&env, x, q, options, text](std::optional<cache_answer> r) mutable {
      if (x->answered())
        return;
      if (!r)
        return read_from_database(
          env, x, q, options,
          [](read_result& r) {
            std::string out = "[";
            for (auto& e : r.events) {
              if (out.size() > 1)
                out += ',';
              append_json(out, e);
            }
            return out + ']';
          },
          json_type,
          [&env, x, q, options]() mutable {
            stream_read(env, x, std::move(q), options);
          });
      *text += ']';
      read_done(*x, errc::none, r->events);
      x->reply_bytes(200, json_type, std::move(*text));
    });
}

void stream_read(route_env& env, const std::shared_ptr<exchange>& x, query q,
                 read_options options) {
  with_stream_slot(env.streams, x,
                   [&env, x, q = std::move(q),
                    options](std::shared_ptr<stream_slot> slot) mutable {
                     stream_array(env, x, std::move(slot), std::move(q),
                                  options);
                   });
}

void stream_array(route_env& env, const std::shared_ptr<exchange>& x,
                  std::shared_ptr<stream_slot> slot, query q,
                  read_options options) {
  auto s = std::make_shared<array_stream>(x, std::move(slot));
  stream_options chunking;
  chunking.chunk_events = env.cfg.stream_chunk_events;
  // Chunks arrive on an actor thread; they are formatted on the strand, in
  // the order they came.
  env.eng.stream_paced(
    std::move(q), options,
    [s](std::vector<sequenced_event>& chunk, std::function<void(bool)> ack) {
      s->x->on_strand(
        [s, chunk = std::move(chunk), ack = std::move(ack)]() mutable {
          s->chunk(chunk, std::move(ack));
        });
    },
    [s](caf::expected<stream_summary> r) {
      s->x->on_strand([s, r = std::move(r)]() mutable {
        array_stream::finish(s, std::move(r));
      });
    },
    4, chunking);
}

void append(route_env& env, const std::shared_ptr<exchange>& x) {
  auto req = parse_append(x->body());
  auto t0 = clock::now();
  append_within_timeout(
    env.eng, x, std::move(req),
    [t0](exchange& x, caf::expected<append_ack>& r) {
      auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                  clock::now() - t0)
                  .count();
      auto code = r ? errc::none : code_of(r.error());
      append_done(x, code);
      if (!r && code != errc::append_condition_failed)
        return x.fail(r.error());
      x.reply(200, json{{"durationInMicroseconds", us},
                        {"appendConditionFailed", !r}});
    });
}

} // namespace

route_table dcb_routes(route_env& env) {
  return {
    {"/read", bhttp::verb::get,
     [&env](const auto& x) {
       read(env, x);
     }},
    {"/append", bhttp::verb::post,
     [&env](const auto& x) {
       append(env, x);
     }},
  };
}

} // namespace dcbd::http
