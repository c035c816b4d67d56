// The /v1 API:
//
//   POST /v1/append                 -> {first_position, last_position};
//                                      409 on a failed condition. The body
//                                      may carry "jobs" (runtime/json_api),
//                                      enqueued in the transaction of the
//                                      events: they exist iff it is accepted
//   GET  /v1/read?query=..&options=..  stream of events (NDJSON, or msgpack
//                                      documents back to back), then
//                                      {"head": n}, or {"error": {code,
//                                      message}} when it fails midway
//   GET  /v1/head                   -> {"head": n}
//
// /v1/read is answered from the event cache in one body when the cache can
// (see /read in routes_dcb.cpp), else, when the answer is at most one chunk,
// from one statement on the I/O threads (`read_from_database`), else it runs
// `engine::stream_paced` into the session's chunk writer: a chunk is
// acknowledged once it is on the socket, so memory stays bounded by the credit
// window however slow the client, and no thread is started per stream. At most
// `http_config::max_streams` run at once (more wait in line for a slot, 503
// when none comes); a client that goes away cancels its stream (499 in the
// metrics).
#include "actors/engine.hpp"
#include "runtime/http_routes.hpp"
#include "runtime/json_api.hpp"
#include "runtime/metrics.hpp"
#include "runtime/routes_common.hpp"

#include <iostream>

namespace dcbd::http {

namespace {

// One event as a /v1/read line: JSON text with its metadata, or msgpack.
void append_line(const exchange& x, std::string& out,
                 const sequenced_event& e) {
  if (x.msgpack_out())
    out += x.line(to_json(e, true, true));
  else {
    append_json(out, e, true);
    out += '\n';
  }
}

void append(route_env& env, const std::shared_ptr<exchange>& x) {
  auto req = parse_append(x->body());
  append_within_timeout(
    env.eng, x, std::move(req), [](exchange& x, caf::expected<append_ack>& r) {
      append_done(x, r ? errc::none : code_of(r.error()));
      if (!r)
        return x.fail(r.error());
      x.reply(200, json{{"first_position", r->first_position},
                        {"last_position", r->last_position}});
    });
}

void head(route_env& env, const std::shared_ptr<exchange>& x) {
  env.eng.head([x](caf::expected<std::uint64_t> r) {
    x->on_strand([x, r = std::move(r)]() mutable {
      if (!r)
        return x->fail(r.error());
      x->reply(200, json{{"head", *r}});
    });
  });
}

// One streaming read: its slot, its writer, what it delivered. The strand
// serializes every use after `read` returns.
struct read_stream {
  std::shared_ptr<exchange> x;
  std::shared_ptr<chunk_writer> out;
  std::shared_ptr<stream_slot> slot;
  std::uint64_t events = 0;

  read_stream(std::shared_ptr<exchange> ex, std::shared_ptr<chunk_writer> w,
              std::shared_ptr<stream_slot> s)
    : x(std::move(ex))
    , out(std::move(w))
    , slot(std::move(s)) {
    // nop
  }

  ~read_stream() {
    release();
  }

  void release() {
    if (slot)
      slot->release();
  }

  // Formats a chunk as lines and queues it; `ack` follows its write.
  void chunk(const std::vector<sequenced_event>& events_in,
             std::function<void(bool)> ack) {
    std::string lines;
    try {
      for (auto& e : events_in)
        append_line(*x, lines, e);
    } catch (const std::exception& e) {
      // Cancel rather than leave the stream waiting for this chunk.
      std::cerr << "dcbd http: /v1/read: " << e.what() << std::endl;
      out->abort();
      return ack(false);
    }
    events += events_in.size();
    out->write(std::move(lines), [ack = std::move(ack)](bool written) {
      ack(written);
    });
  }

  // The stream ended: count it, write the last line, end the response.
  static void finish(const std::shared_ptr<read_stream>& self,
                     caf::expected<stream_summary> r) {
    auto& x = *self->x;
    // A client that went away has cancelled the stream by now.
    bool delivered = self->out->open();
    auto code = !delivered ? errc::unavailable
                           : (r ? errc::none : code_of(r.error()));
    read_done(x, code, self->events);
    x.count(delivered ? 200 : 499);
    if (delivered) {
      auto last = r ? json{{"head", r->head}}
                    : json{{"error",
                            {{"code", std::string{to_string(code)}},
                             {"message", message_of(r.error())}}}};
      self->out->write(x.line(last));
    }
    self->out->end([self](bool) {
      self->release();
    });
  }
};

void stream_lines(route_env& env, const std::shared_ptr<exchange>& x,
                  std::shared_ptr<stream_slot> slot, query q,
                  read_options options);

void stream_read(route_env& env, const std::shared_ptr<exchange>& x, query q,
                 read_options options);

void read(route_env& env, const std::shared_ptr<exchange>& x) {
  auto q = query_parameter(*x);
  auto options = options_parameter(*x);
  // From memory when the cache can answer whole (one chunk's worth at
  // most): the same lines, in one body.
  auto lines = std::make_shared<std::string>();
  env.eng.read_from_cache(
    q, options, env.cfg.stream_chunk_events,
    [x](std::function<void()> f) {
      x->on_strand(std::move(f));
    },
    [x = x.get(), lines](const sequenced_event& e) {
      append_line(*x, *lines, e);
    },
    [&env, x, q, options, lines](std::optional<cache_answer> r) mutable {
      if (x->answered())
        return;
      if (!r)
        return read_from_database(
          env, x, q, options,
          [x](read_result& r) {
            std::string out;
            for (auto& e : r.events)
              append_line(*x, out, e);
            return out + x->line(json{{"head", r.head}});
          },
          x->msgpack_out() ? msgpack_type : ndjson_type,
          [&env, x, q, options]() mutable {
            stream_read(env, x, std::move(q), options);
          });
      *lines += x->line(json{{"head", r->head}});
      read_done(*x, errc::none, r->events);
      x->reply_bytes(200, x->msgpack_out() ? msgpack_type : ndjson_type,
                     std::move(*lines));
    });
}

void stream_read(route_env& env, const std::shared_ptr<exchange>& x, query q,
                 read_options options) {
  with_stream_slot(env.streams, x,
                   [&env, x, q = std::move(q),
                    options](std::shared_ptr<stream_slot> slot) mutable {
                     stream_lines(env, x, std::move(slot), std::move(q),
                                  options);
                   });
}

void stream_lines(route_env& env, const std::shared_ptr<exchange>& x,
                  std::shared_ptr<stream_slot> slot, query q,
                  read_options options) {
  // The head goes out before the first event: the status is 200 from here
  // on, and a failure later is the last line.
  auto s = std::make_shared<read_stream>(
    x, x->open_stream(x->msgpack_out() ? msgpack_type : ndjson_type),
    std::move(slot));
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
        read_stream::finish(s, std::move(r));
      });
    },
    4, chunking);
}

} // namespace

route_table v1_routes(route_env& env) {
  return {
    {"/v1/append", bhttp::verb::post,
     [&env](const auto& x) {
       append(env, x);
     }},
    {"/v1/read", bhttp::verb::get,
     [&env](const auto& x) {
       read(env, x);
     }},
    {"/v1/head", bhttp::verb::get,
     [&env](const auto& x) {
       head(env, x);
     }},
  };
}

} // namespace dcbd::http
