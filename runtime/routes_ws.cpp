// Live subscriptions over a WebSocket (API.md §5):
//
//   GET /v1/ws (upgrade). Client text frames:
//     {"op":"subscribe","sub":"s1","query":{..},"after":P,"credit":N}
//     {"op":"credit","sub":"s1","n":N}
//     {"op":"unsubscribe","sub":"s1"}
//   Server frames: the NDJSON objects of /v1/subscribe plus "sub"; errors
//   as {"kind":"error","code","message"} (with "sub" when about one).
//
// Several subscriptions share one socket, each paced by its own credits:
// cumulative, consumed by `event` frames only, never exceeded. `credit` in
// subscribe is optional (default 0: nothing is sent until a credit op),
// `after` defaults to 0, `query` to every event. Behind the client's
// credit the bus holds at most `subscribe_window` events per subscription
// (credit is passed on to the bus only as the socket drains), so a client
// that grants much and reads little cannot grow the node's memory. Each
// subscription takes a slot of `max_subscriptions` ("overloaded" error
// frame past it). A bad frame gets an error frame and changes nothing; the
// connection carries on. Closing the socket ends all its subscriptions.
#include "actors/engine.hpp"
#include "runtime/http_routes.hpp"
#include "runtime/json_api.hpp"
#include "runtime/routes_common.hpp"
#include "runtime/subscribe_frames.hpp"

#include <algorithm>
#include <atomic>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace dcbd::http {

namespace {

constexpr std::size_t max_sub_name = 128;

// Frames queued on a socket past which the client is taken not to read
// (events are bounded by credit; this bounds replies to its own frames).
constexpr std::size_t max_queued_frames = 4096;

struct ws_sub {
  std::string name;
  subscription handle;
  // Its slot in the hub.
  std::uint64_t token = 0;
  // Credit the client granted and events have not used yet.
  std::uint64_t client_left = 0;
  // Credit given to the bus and not yet used by an arriving event.
  std::uint64_t bus_left = 0;
  // Events handed to the socket and not yet written.
  std::uint64_t unwritten = 0;
  bool ended = false;
};

struct ws_conn;

// What a subscription's sink holds (through a `hub_hold`): the connection
// and the subscription.
struct ws_sink {
  std::shared_ptr<ws_conn> conn;
  std::shared_ptr<ws_sub> sub;
};

// One WebSocket connection and its subscriptions; used on its strand only.
struct ws_conn : std::enable_shared_from_this<ws_conn> {
  route_env& env;
  std::shared_ptr<websocket> ws;
  std::map<std::string, std::shared_ptr<ws_sub>> subs;
  bool closed = false;
  // Set from the stopping thread.
  std::atomic<bool> stopping{false};

  explicit ws_conn(route_env& e) : env(e) {
    // nop
  }

  // Closes the socket when its client has stopped reading (too many frames
  // queued); true when it did.
  bool close_if_not_reading() {
    if (ws->queued() < max_queued_frames)
      return false;
    ws->close("the client does not read its frames");
    return true;
  }

  void send(json j, websocket::completion done = {}) {
    if (!ws)
      return;
    if (close_if_not_reading()) {
      if (done)
        done(false);
      return;
    }
    ws->send(dump(j), std::move(done));
  }

  void error(std::string_view code, std::string_view message,
             const std::string& sub = {}) {
    auto j = error_frame_json(code, message);
    if (!sub.empty())
      j["sub"] = sub;
    send(std::move(j));
  }

  // Passes client credit on to the bus as far as the window allows.
  void top_up(ws_sub& s) {
    if (s.ended)
      return;
    std::uint64_t window = env.cfg.subscribe_window;
    auto by_client = s.client_left - std::min(s.client_left, s.bus_left);
    auto used = s.bus_left + s.unwritten;
    auto by_window = window - std::min(window, used);
    auto n = std::min(by_client, by_window);
    n = std::min<std::uint64_t>(n, std::numeric_limits<std::uint32_t>::max());
    if (n == 0)
      return;
    s.bus_left += n;
    s.handle.grant(static_cast<std::uint32_t>(n));
  }

  void on_items(const std::shared_ptr<ws_sub>& s, std::vector<bus_item>& items,
                std::function<void(bool)> ack) {
    if (s->ended || closed)
      return ack(false);
    if (!ws)
      return ack(false);
    // The batch's frames in order (events and checkpoints interleaved), in
    // one hop to the socket's strand and one completion.
    std::uint64_t events = 0;
    std::vector<std::string> frames;
    frames.reserve(items.size());
    for (auto& item : items) {
      events += item.kind == bus_item_kind::event ? 1 : 0;
      append_frame(frames.emplace_back(), item, s->name);
    }
    if (close_if_not_reading())
      return ack(false);
    s->unwritten += events;
    ws->send_batch(std::move(frames),
                   [self = shared_from_this(), s, events](bool) {
                     s->unwritten -= std::min(s->unwritten, events);
                     self->top_up(*s);
                   });
    s->bus_left -= std::min(s->bus_left, events);
    s->client_left -= std::min(s->client_left, events);
    // Latency is measured here; credit flows through top_up.
    ack(true);
  }

  void on_end(const std::shared_ptr<ws_sub>& s, const bus_end& e) {
    if (s->ended)
      return;
    s->ended = true;
    auto i = subs.find(s->name);
    if (i != subs.end() && i->second == s)
      subs.erase(i);
    if (closed)
      return;
    if (stopping)
      error(to_string(errc::unavailable), "the node is stopping", s->name);
    else if (e.code != errc::none)
      error(to_string(e.code), e.message, s->name);
  }

  static std::uint64_t number(const json& j, std::string_view field,
                              bool positive) {
    if (!j.is_number_unsigned() || (positive && j.get<std::uint64_t>() == 0))
      throw store_error{errc::invalid_argument,
                        std::string{field}
                          + (positive ? " must be a positive integer"
                                      : " must be a non-negative integer")};
    return j.get<std::uint64_t>();
  }

  static std::string sub_name(const json& frame) {
    auto i = frame.find("sub");
    if (i == frame.end() || !i->is_string() || i->get<std::string>().empty()
        || i->get<std::string>().size() > max_sub_name)
      throw store_error{errc::invalid_argument,
                        "sub must be a non-empty string of at most "
                          + std::to_string(max_sub_name) + " bytes"};
    return i->get<std::string>();
  }

  void subscribe(const json& frame) {
    auto name = sub_name(frame);
    if (subs.count(name) > 0)
      throw store_error{errc::invalid_argument,
                        "subscription " + name + " already exists"};
    auto q = frame.contains("query") ? parse_query(frame["query"], "query")
                                     : query::all();
    std::uint64_t after = 0;
    if (frame.contains("after"))
      after = number(frame["after"], "after", false);
    if (after
        > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      throw store_error{errc::invalid_argument, "after is too large"};
    // No credit given is none yet; a credit given is a positive integer.
    std::uint64_t credit = 0;
    if (frame.contains("credit"))
      credit = number(frame["credit"], "credit", true);
    auto s = std::make_shared<ws_sub>();
    s->name = name;
    s->client_left = credit;
    auto& hub = env.subscriptions;
    auto token = hub.open();
    if (token == 0) {
      if (hub.closing())
        error("unavailable", "the node is stopping", name);
      else
        error("overloaded",
              "too many subscriptions (" + std::to_string(hub.max())
                + "); retry later",
              name);
      return;
    }
    subscribe_options opts;
    opts.manual_credit = true;
    opts.heartbeat = env.cfg.subscribe_heartbeat;
    std::uint64_t first = std::min<std::uint64_t>(credit,
                                                  env.cfg.subscribe_window);
    opts.credit = static_cast<std::uint32_t>(first);
    s->bus_left = first;
    s->token = token;
    subs.emplace(name, s);
    // The sink's hold on this connection (and so on its WebSocket) goes
    // before its slot: `http_server::stop` destroys the transport once
    // every slot is back.
    auto hold = std::make_shared<hub_hold<ws_sink>>(
      hub, token, ws_sink{shared_from_this(), s});
    s->handle = env.eng.subscribe_paced(
      std::move(q), after,
      [hold](std::vector<bus_item>& items, std::function<void(bool)> ack) {
        auto& [self, s] = hold->held();
        self->ws->post([self = self, s = s, items = std::move(items),
                        ack = std::move(ack)]() mutable {
          self->on_items(s, items, std::move(ack));
        });
      },
      [hold](const bus_end& e) {
        auto& [self, s] = hold->held();
        self->ws->post([self = self, s = s, e] {
          self->on_end(s, e);
        });
      },
      opts);
    hub.arm(token, [weak = weak_from_this(), sub = s->handle] {
      if (auto self = weak.lock())
        self->stopping = true;
      sub.cancel();
    });
  }

  std::shared_ptr<ws_sub> find(const json& frame) {
    auto name = sub_name(frame);
    auto i = subs.find(name);
    if (i == subs.end())
      throw store_error{errc::invalid_argument,
                        "no subscription " + name + " on this connection"};
    return i->second;
  }

  void on_message(const std::string& text) {
    std::string sub;
    try {
      auto frame = json::parse(text, nullptr, false);
      if (frame.is_discarded() || !frame.is_object())
        throw store_error{errc::invalid_argument,
                          "a frame must be a JSON object"};
      if (frame.contains("sub") && frame["sub"].is_string())
        sub = frame["sub"].get<std::string>().substr(0, max_sub_name);
      auto op = frame.find("op");
      if (op == frame.end() || !op->is_string())
        throw store_error{errc::invalid_argument,
                          "op must be subscribe, credit or unsubscribe"};
      auto name = op->get<std::string>();
      if (name == "subscribe") {
        subscribe(frame);
      } else if (name == "credit") {
        auto s = find(frame);
        auto n = number(frame.value("n", json{}), "n", true);
        // Cumulative, saturating.
        s->client_left = n > std::numeric_limits<std::uint64_t>::max()
                               - s->client_left
                           ? std::numeric_limits<std::uint64_t>::max()
                           : s->client_left + n;
        top_up(*s);
      } else if (name == "unsubscribe") {
        auto s = find(frame);
        s->handle.cancel();
        s->ended = true;
        // The client may subscribe again at once, before the sink is gone.
        env.subscriptions.let_go(s->token);
        subs.erase(s->name);
      } else {
        throw store_error{errc::invalid_argument,
                          "unknown op " + name.substr(0, 64)
                            + " (subscribe, credit, unsubscribe)"};
      }
    } catch (const store_error& e) {
      error(to_string(e.code()), e.what(), sub);
    }
  }

  void on_closed() {
    closed = true;
    for (auto& [name, s] : subs) {
      s->ended = true;
      s->handle.cancel();
      env.subscriptions.let_go(s->token);
    }
    subs.clear();
  }
};

void ws(route_env& env, const std::shared_ptr<exchange>& x) {
  auto conn = std::make_shared<ws_conn>(env);
  websocket_handlers h;
  h.on_message = [conn](const std::shared_ptr<websocket>& w, std::string text) {
    conn->ws = w;
    conn->on_message(text);
  };
  // A binary frame is a frame that is not JSON: an error frame, and the
  // connection and its subscriptions carry on.
  h.on_binary = [conn](const std::shared_ptr<websocket>& w) {
    conn->ws = w;
    conn->error("invalid_argument",
                "a frame must be a JSON object in a text message (binary "
                "messages are not supported)");
  };
  h.on_closed = [conn] {
    conn->on_closed();
  };
  // Set once, on the strand, before any message can arrive.
  conn->ws = x->upgrade(std::move(h));
}

} // namespace

route_table ws_routes(route_env& env) {
  return {
    {"/v1/ws", bhttp::verb::get,
     [&env](const auto& x) {
       ws(env, x);
     }},
  };
}

} // namespace dcbd::http
