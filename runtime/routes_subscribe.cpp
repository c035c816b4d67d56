// Live subscriptions over HTTP (API.md §5):
//
//   GET /v1/subscribe?query=<json>&after=<P>
//       Accept: text/event-stream -> SSE; otherwise NDJSON. `Last-Event-ID`
//       wins over `after`. Frames: runtime/subscribe_frames.hpp.
//
// Each request is one bus subscription (engine::subscribe_paced): a batch is
// acknowledged once it is on the socket, so a slow client holds at most
// `subscribe_window` events here plus its bounded queue in the bus; behind
// that the bus falls back to reads and writers never wait. The answer's
// head goes out when the bus accepts the subscription, so a bad query or
// an `after` past the head is a plain 400. The stream watches its socket: a
// client that goes away cancels the subscription and frees its slot at
// once. Subscriptions are exempt from the idle timeout (nothing is read
// while one streams) but not from `max_subscriptions` (503), and a server
// stop ends each with an error frame ("unavailable").
#include "actors/engine.hpp"
#include "runtime/http_routes.hpp"
#include "runtime/routes_common.hpp"
#include "runtime/subscribe_frames.hpp"

#include <boost/algorithm/string/predicate.hpp>

#include <atomic>

namespace dcbd::http {

namespace {

// One subscription on one connection. Everything after the handler runs
// on the connection's strand.
struct sub_stream : std::enable_shared_from_this<sub_stream> {
  std::shared_ptr<exchange> x;
  bool sse = false;
  subscription sub;
  std::shared_ptr<chunk_writer> out;
  // The server is stopping (set from the stopping thread): the end is an
  // error frame.
  std::atomic<bool> stopping{false};
  bool ended = false;
  std::uint64_t events = 0;

  sub_stream(std::shared_ptr<exchange> ex, bool is_sse)
    : x(std::move(ex))
    , sse(is_sse) {
    // nop
  }

  // The first batch (the subscription is accepted): the head goes out.
  void open() {
    std::vector<std::pair<std::string, std::string>> headers{
      {"Cache-Control", "no-cache"}};
    if (sse) // no buffering in a reverse proxy (nginx)
      headers.emplace_back("X-Accel-Buffering", "no");
    out = x->open_stream(sse ? "text/event-stream" : ndjson_type, headers);
    out->watch_close([weak = weak_from_this()] {
      if (auto self = weak.lock())
        self->sub.cancel();
    });
    if (sse)
      out->write(std::string{sse_preamble});
  }

  void deliver(std::vector<bus_item>& items, std::function<void(bool)> ack) {
    if (ended || stopping)
      return ack(false);
    if (!out)
      open();
    if (!out->open())
      return ack(false);
    std::string text;
    for (auto& item : items) {
      if (item.kind == bus_item_kind::event)
        ++events;
      if (sse) {
        text += sse_frame(item);
      } else {
        append_frame(text, item);
        text += '\n';
      }
    }
    if (text.empty())
      return ack(true);
    out->write(std::move(text), [ack = std::move(ack)](bool written) {
      ack(written);
    });
  }

  void finish(const bus_end& e) {
    if (ended)
      return;
    ended = true;
    std::string code{to_string(e.code)};
    std::string message = e.message;
    if (stopping) {
      code = to_string(errc::unavailable);
      message = "the node is stopping";
    }
    if (!out) {
      // Not accepted: a plain error answer.
      if (e.code == errc::invalid_argument)
        return x->error(400, code, message);
      return x->error(503, std::string{to_string(errc::unavailable)},
                      message.empty() ? "the subscription ended" : message);
    }
    bool delivered = out->open();
    x->count(delivered ? 200 : 499);
    if (delivered && (stopping || e.code != errc::none))
      out->write(sse ? sse_error(code, message)
                     : dump(error_frame_json(code, message)) + "\n");
    out->end();
  }
};

bool wants_sse(const exchange& x) {
  auto accept = x.req()[bhttp::field::accept];
  return boost::algorithm::icontains(
    std::string_view{accept.data(), accept.size()}, "text/event-stream");
}

void subscribe(route_env& env, const std::shared_ptr<exchange>& x) {
  auto q = query_parameter(*x);
  // Last-Event-ID, when present, wins (API.md §5): `after` is then not
  // even read, so a stale or bad one in a reconnecting client's URL does
  // not refuse the resume.
  std::uint64_t after = 0;
  auto last_id = x->req()["Last-Event-ID"];
  if (!last_id.empty())
    after = parse_position(std::string_view{last_id.data(), last_id.size()},
                           "Last-Event-ID");
  else if (auto text = x->parameter("after"))
    after = parse_position(*text, "after");
  auto& hub = env.subscriptions;
  auto token = hub.open();
  if (token == 0 && hub.closing())
    return x->error(503, "unavailable", "the node is stopping");
  if (token == 0)
    return x->error(503, "overloaded",
                    "too many subscriptions (" + std::to_string(hub.max())
                      + "); retry later");
  auto s = std::make_shared<sub_stream>(x, wants_sse(*x));
  // The sink's hold on the stream (and so on its connection) goes before
  // its slot: `http_server::stop` stops the transport once every slot is
  // back.
  auto hold = std::make_shared<hub_hold<std::shared_ptr<sub_stream>>>(hub,
                                                                      token, s);
  subscribe_options opts;
  opts.credit = env.cfg.subscribe_window;
  opts.heartbeat = env.cfg.subscribe_heartbeat;
  // Batches arrive on an actor thread; they are written on the strand, in
  // the order they came.
  s->sub = env.eng.subscribe_paced(
    std::move(q), after,
    [hold](std::vector<bus_item>& items, std::function<void(bool)> ack) {
      auto& s = hold->held();
      s->x->on_strand(
        [s = s, items = std::move(items), ack = std::move(ack)]() mutable {
          s->deliver(items, std::move(ack));
        });
    },
    [hold](const bus_end& e) {
      auto& s = hold->held();
      s->x->on_strand([s = s, e] {
        s->finish(e);
      });
    },
    opts);
  hub.arm(token, [weak = std::weak_ptr<sub_stream>{s}, sub = s->sub] {
    if (auto s = weak.lock())
      s->stopping = true;
    sub.cancel();
  });
}

} // namespace

route_table subscribe_routes(route_env& env) {
  return {
    {"/v1/subscribe", bhttp::verb::get,
     [&env](const auto& x) {
       subscribe(env, x);
     }},
  };
}

} // namespace dcbd::http
