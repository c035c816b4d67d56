// GET /v1/subscribe over a real node (engine + HTTP server, real
// PostgreSQL): SSE and NDJSON frames as API.md §5 says, resume with
// Last-Event-ID, random disconnects, bad input, the subscription limit, a
// client that goes away, heartbeats, metrics and a server stop.
#include "tests/runtime/http_test_client.hpp"
#include "tests/runtime/sub_client.hpp"
#include "tests/runtime/ws_client.hpp"

#include <random>
#include <regex>

namespace dcbd::test {
namespace {

using namespace http_support;

std::string target(const json& q, std::optional<std::uint64_t> after = {}) {
  auto t = "/v1/subscribe?query=" + dcbd::client::url_encode(q.dump());
  if (after)
    t += "&after=" + std::to_string(*after);
  return t;
}

class Subscribe : public EngineTest {
protected:
  void SetUp() override {
    EngineTest::SetUp();
    metrics_ = std::make_shared<node_metrics>();
    auto cfg = config();
    cfg.bus.tick = std::chrono::milliseconds{20};
    cfg.bus.checkpoint_interval = std::chrono::milliseconds{100};
    cfg.bus.metrics = metrics_->bus_hooks();
    start(cfg);
  }

  void TearDown() override {
    server_.reset();
    EngineTest::TearDown();
  }

  std::uint16_t serve(http_config hc = {}) {
    hc.port = 0;
    server_.emplace(*engine_, metrics_, hc);
    return server_->port();
  }

  void append(int n, const std::string& type = "A",
              const std::string& tag = "t:1") {
    std::vector<event> evs;
    for (int i = 0; i < n; ++i)
      evs.push_back(event{type, {tag}, "x" + std::to_string(i), {}});
    ASSERT_TRUE(engine_->append(std::move(evs)));
  }

  std::vector<std::uint64_t> oracle(const query& q, std::uint64_t after) {
    read_options o;
    o.from = after + 1;
    std::vector<std::uint64_t> out;
    auto s = engine_->stream(q, o, [&](std::vector<sequenced_event>& c) {
      for (auto& e : c)
        out.push_back(e.position);
    });
    EXPECT_TRUE(s);
    return out;
  }

  double metric(const std::string& series) {
    return sample(
      prometheus::TextSerializer().Serialize(metrics_->registry()->Collect()),
      series);
  }

  // Positions and the prev chain of `events` (objects with position and
  // prev), starting from `prev`.
  static std::vector<std::uint64_t> chain(const std::vector<json>& events,
                                          std::uint64_t prev) {
    std::vector<std::uint64_t> out;
    for (auto& e : events) {
      EXPECT_EQ(e["prev"].get<std::uint64_t>(), prev) << e.dump();
      prev = e["position"].get<std::uint64_t>();
      out.push_back(prev);
    }
    return out;
  }

  std::shared_ptr<node_metrics> metrics_;
  std::optional<http_server> server_;
};

TEST_F(Subscribe, SseCatchesUpThenFollowsLive) {
  append(5, "A");
  append(5, "B");
  auto port = serve();
  auto q = items({"A"}, {});
  sub_client c{port, target(q), true};
  ASSERT_EQ(c.status(), 200u);
  EXPECT_EQ(c.head().content_type, "text/event-stream");
  EXPECT_TRUE(c.head().chunked);
  ASSERT_TRUE(c.wait_kind("caught_up"));
  append(3, "A");
  append(3, "B");
  ASSERT_TRUE(c.wait_events(8));
  auto frames = c.frames();
  ASSERT_FALSE(frames.empty());
  EXPECT_EQ(c.raw().rfind("retry: 2000\n\n", 0), 0u);
  EXPECT_EQ(frames[0]["retry"], 2000);
  auto evs = c.events();
  EXPECT_EQ(chain(evs, 0), oracle(query{{query_item{{"A"}, {}}}}, 0));
  for (auto& f : frames) {
    if (f["kind"] == "event") {
      EXPECT_EQ(f["id"], std::to_string(f["data"]["position"].get<int>()));
      EXPECT_EQ(f["data"]["type"], "A");
      EXPECT_TRUE(f["data"]["data"].is_string());
      EXPECT_EQ(f["data"]["tags"], json::array({"t:1"}));
    }
    if (f["kind"] == "caught_up") {
      EXPECT_EQ(f["data"]["position"], 10);
      EXPECT_EQ(f["data"]["head"], 10);
    }
  }
  EXPECT_EQ(c.count("caught_up"), 1u);
}

// Subscriptions are exempt from the idle timeout (API.md §5): with
// heartbeats off and nothing to deliver, an SSE and an NDJSON stream stay
// open for six idle timeouts, and the next append still arrives on both.
TEST_F(Subscribe, StreamsOutliveTheIdleTimeout) {
  append(1, "A");
  http_config hc;
  hc.idle_timeout = 200ms;
  hc.subscribe_heartbeat = 0ms;
  auto port = serve(hc);
  auto q = items({"A"}, {});
  sub_client sse{port, target(q), true};
  sub_client nd{port, target(q), false};
  ASSERT_EQ(sse.status(), 200u);
  ASSERT_EQ(nd.status(), 200u);
  ASSERT_TRUE(sse.wait_kind("caught_up")) << sse.raw();
  ASSERT_TRUE(nd.wait_kind("caught_up")) << nd.raw();
  std::this_thread::sleep_for(1200ms);
  append(1, "A");
  EXPECT_TRUE(sse.wait_events(2)) << sse.raw();
  EXPECT_TRUE(nd.wait_events(2)) << nd.raw();
  EXPECT_EQ(sse.count("heartbeat") + nd.count("heartbeat"), 0u);
}

TEST_F(Subscribe, NdjsonWithKindsHeartbeatsAndCheckpoints) {
  append(3, "A");
  http_config hc;
  hc.subscribe_heartbeat = 100ms;
  auto port = serve(hc);
  auto q = items({"Rare"}, {});
  sub_client c{port, target(q, 1), false};
  ASSERT_EQ(c.status(), 200u);
  EXPECT_EQ(c.head().content_type, "application/x-ndjson");
  // Heartbeats every 100 ms while nothing matches (a bound, not a sleep:
  // the subscription starts only after its prev lookup).
  EXPECT_TRUE(c.wait_count("heartbeat", 2, 5s));
  // Caught up at 3 before the noise (else caught_up says 23 itself).
  ASSERT_TRUE(c.wait_kind("caught_up")) << c.raw();
  append(20, "Noise");
  // A checkpoint covers the noise without any event.
  ASSERT_TRUE(c.wait_frame([](const json& f) {
    return f["kind"] == "checkpoint" && f["position"] == 23;
  }));
  append(1, "Rare");
  ASSERT_TRUE(c.wait_events(1));
  auto frames = c.frames();
  std::uint64_t last_cp = 0;
  for (auto& f : frames) {
    ASSERT_TRUE(f.contains("kind")) << f.dump();
    if (f["kind"] == "heartbeat") {
      EXPECT_TRUE(f["head"].is_number());
    }
    if (f["kind"] == "checkpoint") {
      EXPECT_LE(f["position"].get<std::uint64_t>(), 23u);
      EXPECT_GE(f["position"].get<std::uint64_t>(), last_cp);
      last_cp = f["position"];
      EXPECT_TRUE(f["head"].is_number());
    }
  }
  auto evs = c.events();
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0]["position"], 24);
  EXPECT_EQ(evs[0]["prev"], 0);
  EXPECT_EQ(evs[0]["kind"], "event");
}

TEST_F(Subscribe, LastEventIdWinsAndPrevChainsAcrossTheResume) {
  append(10, "A");
  auto port = serve();
  auto q = items({"A"}, {});
  sub_client c{port, target(q, 2), true, {{"Last-Event-ID", "6"}}};
  ASSERT_TRUE(c.wait_events(4));
  auto evs = c.events();
  ASSERT_EQ(evs.front()["position"], 7);
  EXPECT_EQ(evs.front()["prev"], 6);
  EXPECT_EQ(chain(evs, 6), oracle(query{{query_item{{"A"}, {}}}}, 6));
  // The header wins even over an `after` that is not a position at all.
  sub_client bad_after{
    port, "/v1/subscribe?after=abc", true, {{"Last-Event-ID", "8"}}};
  ASSERT_TRUE(bad_after.wait_events(2)) << bad_after.raw();
  EXPECT_EQ(bad_after.events().front()["position"], 9);
  EXPECT_EQ(bad_after.events().front()["prev"], 8);
}

TEST_F(Subscribe, EmptyParametersAreAbsent) {
  append(3, "A");
  append(2, "B");
  auto port = serve();
  // As API.md writes its templates: `query=` is every event, `after=` 0.
  sub_client c{port, "/v1/subscribe?query=&after=", false};
  ASSERT_EQ(c.status(), 200u) << c.raw();
  ASSERT_TRUE(c.wait_kind("caught_up"));
  EXPECT_EQ(chain(c.events(), 0), oracle(query::all(), 0));
}

// The wire form of API.md §5 for the control frames over SSE: a checkpoint
// is `id: <pos>` / `event: checkpoint` / `data: {"position","head"}`, a
// heartbeat the comment `: heartbeat head=<h>`, and heartbeats come on a
// busy stream too ("every --dcbd.subscribe-heartbeat-ms").
TEST_F(Subscribe, SseCheckpointsAndHeartbeatsInTheirWireForm) {
  append(3, "A");
  http_config hc;
  hc.subscribe_heartbeat = 100ms;
  auto port = serve(hc);
  sub_client rare{port, target(items({"Rare"}, {}), 1), true};
  // Caught up at 3 before the noise: a subscription that catches up only
  // after it says so with caught_up at 23 and owes no checkpoint.
  ASSERT_TRUE(rare.wait_kind("caught_up")) << rare.raw();
  ASSERT_TRUE(rare.wait_kind("heartbeat", 5s)) << rare.raw();
  append(20, "Noise");
  ASSERT_TRUE(rare.wait_frame([](const json& f) {
    return f["kind"] == "checkpoint" && f["data"]["position"] == 23;
  }))
    << rare.raw();
  for (auto& f : rare.frames()) {
    if (f["kind"] == "checkpoint") {
      EXPECT_EQ(f["id"], std::to_string(f["data"]["position"].get<int>()));
      EXPECT_EQ(f["data"].size(), 2u) << f.dump();
      EXPECT_TRUE(f["data"]["head"].is_number()) << f.dump();
    }
    if (f["kind"] == "heartbeat") {
      auto text = f["comment"].get<std::string>();
      EXPECT_TRUE(std::regex_match(text, std::regex{": heartbeat head=[0-9]+"}))
        << text;
    }
  }
  // A busy stream: matching events every few milliseconds for a second
  // still carry heartbeats among them.
  sub_client busy{port, "/v1/subscribe", true};
  ASSERT_TRUE(busy.wait_kind("caught_up"));
  auto until = std::chrono::steady_clock::now() + 1s;
  int appended = 0;
  while (std::chrono::steady_clock::now() < until) {
    append(1, "A");
    ++appended;
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_TRUE(busy.wait_events(23u + static_cast<std::size_t>(appended)));
  // Heartbeats between the first and the last event of the burst.
  auto frames = busy.frames();
  std::size_t seen = 0, beats = 0;
  for (auto& f : frames) {
    if (f["kind"] == "event" && f["data"]["position"].get<int>() > 23)
      ++seen;
    else if (f["kind"] == "heartbeat" && seen > 0
             && seen < static_cast<std::size_t>(appended))
      ++beats;
  }
  EXPECT_GE(beats, 3u) << appended << " events in a second";
}

TEST_F(Subscribe, RandomDisconnectsAndResumesMissNothing) {
  append(5, "A", "k:1");
  auto port = serve();
  std::atomic<bool> stop{false};
  std::thread writer{[&] {
    int i = 0;
    while (!stop) {
      (void) engine_->append(
        {event{++i % 3 ? "A" : "B", {"k:" + std::to_string(i % 2)}, "d", {}}});
      std::this_thread::sleep_for(1ms);
    }
  }};
  std::mt19937 rng{11};
  for (bool sse : {true, false}) {
    auto q = items({"A"}, {"k:1"});
    std::vector<json> all;
    std::uint64_t last = 0;
    for (int round = 0; round < 12; ++round) {
      dcbd::client::streaming_get::headers extra;
      std::string t = target(q);
      if (sse && last > 0)
        extra.emplace_back("Last-Event-ID", std::to_string(last));
      else
        t = target(q, last);
      sub_client c{port, t, sse, extra};
      auto want = 1 + rng() % 6;
      ASSERT_TRUE(c.wait_events(want)) << "round " << round;
      c.close();
      auto evs = c.events();
      for (auto& e : evs)
        all.push_back(e);
      last = all.back()["position"];
    }
    auto got = chain(all, 0);
    auto want = oracle(query{{query_item{{"A"}, {"k:1"}}}}, 0);
    ASSERT_LE(got.size(), want.size());
    want.resize(got.size());
    EXPECT_EQ(got, want) << (sse ? "SSE" : "NDJSON");
  }
  stop = true;
  writer.join();
}

TEST_F(Subscribe, BadInputIsA400AndChangesNothing) {
  append(2);
  auto port = serve();
  client c{port};
  auto head = engine_->head();
  for (std::string t : std::vector<std::string>{
         "/v1/subscribe?query=%7Bnope", "/v1/subscribe?after=-1",
         "/v1/subscribe?after=abc", "/v1/subscribe?after=1.5",
         "/v1/subscribe?after=99999999999999999999",
         "/v1/subscribe?after=9223372036854775808",
         "/v1/subscribe?query=" + dcbd::client::url_encode(R"({"items":[{}]})"),
         "/v1/subscribe?after=3"}) {
    auto r = c.get(t);
    EXPECT_EQ(r.status, 400u) << t << " " << r.body;
    EXPECT_EQ(r.j()["code"], "invalid_argument") << t;
    EXPECT_FALSE(r.j()["message"].get<std::string>().empty());
  }
  sub_client bad_id{port, "/v1/subscribe", true, {{"Last-Event-ID", "x"}}};
  EXPECT_EQ(bad_id.status(), 400u)
    << bad_id.error() << "|" << bad_id.raw() << "|" << bad_id.head().status;
  EXPECT_EQ(engine_->head(), head);
  // Still serving.
  sub_client ok{port, "/v1/subscribe?after=1", false};
  ASSERT_TRUE(ok.wait_events(1));
  EXPECT_EQ(metric("dcb_subscriptions"), 1);
}

TEST_F(Subscribe, LimitAndAClientThatGoesAwayFreesItsSlot) {
  http_config hc;
  hc.max_subscriptions = 2;
  auto port = serve(hc);
  auto a = std::make_unique<sub_client>(port, "/v1/subscribe", false);
  sub_client b{port, "/v1/subscribe", true};
  ASSERT_EQ(a->status(), 200u);
  ASSERT_EQ(b.status(), 200u);
  client c{port};
  auto r = c.get("/v1/subscribe");
  EXPECT_EQ(r.status, 503u);
  EXPECT_EQ(r.j()["code"], "overloaded");
  EXPECT_EQ(r.retry_after, "1") << "API.md: 503 with Retry-After";
  // An idle subscriber leaves: its slot frees without any write failing.
  a->close();
  a.reset();
  std::unique_ptr<sub_client> d;
  auto until = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < until) {
    d = std::make_unique<sub_client>(port, "/v1/subscribe", false);
    if (d->status() == 200u)
      break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(d->status(), 200u);
  auto gone = [&] {
    return metric("dcb_subscriptions") == 2;
  };
  until = std::chrono::steady_clock::now() + 5s;
  while (!gone() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(20ms);
  EXPECT_TRUE(gone());
}

TEST_F(Subscribe, MetricsCountDeliveriesAndLatency) {
  http_config hc;
  hc.subscribe_heartbeat = 50ms;
  auto port = serve(hc);
  sub_client c{port, "/v1/subscribe", true};
  ASSERT_TRUE(c.wait_kind("caught_up"));
  append(7);
  ASSERT_TRUE(c.wait_events(7));
  // The latency is observed when the events' write completes on the
  // server, which may run after the client has read them; a heartbeat
  // after them was written after that completion.
  ASSERT_TRUE(c.wait_kind_after_events("heartbeat", 7));
  EXPECT_EQ(metric("dcb_head_position"), 7);
  EXPECT_EQ(metric("dcb_subscriptions"), 1);
  EXPECT_GE(metric("dcb_subscription_events_delivered_total"), 7);
  EXPECT_GE(metric("dcb_commit_to_delivery_seconds_count"), 7);
  EXPECT_GE(metric("dcb_subscription_fell_behind_total"), 0);
}

TEST_F(Subscribe, ServerStopEndsSubscriptionsWithAnError) {
  auto port = serve();
  sub_client sse{port, "/v1/subscribe", true};
  sub_client nd{port, "/v1/subscribe", false};
  ASSERT_TRUE(sse.wait_kind("caught_up"));
  ASSERT_TRUE(nd.wait_kind("caught_up"));
  auto t0 = std::chrono::steady_clock::now();
  server_->stop(10s);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  ASSERT_TRUE(sse.wait_end());
  ASSERT_TRUE(nd.wait_end());
  ASSERT_TRUE(nd.wait_kind("error"));
  auto last = nd.frames().back();
  EXPECT_EQ(last["kind"], "error");
  EXPECT_EQ(last["code"], "unavailable");
  ASSERT_TRUE(sse.wait_kind("error"));
  EXPECT_EQ(sse.frames().back()["data"]["code"], "unavailable");
}

// -- WebSocket
// ------------------------------------------------------------------

class WsSubscribe : public Subscribe {
protected:
  // Reads frames until `done(frames)` or the connection ends; heartbeats
  // (every 50 ms here) keep reads from timing out.
  template <class Done>
  std::vector<json>
  read_until(ws_client& c, std::vector<json>& frames, Done done) {
    // Heartbeats keep coming: bound the wait as a whole too.
    auto until = std::chrono::steady_clock::now() + 30s;
    while (!done(frames)) {
      if (std::chrono::steady_clock::now() > until) {
        std::string seen;
        for (auto& f : frames)
          if (f["kind"] != "heartbeat")
            seen += f.dump() + "\n";
        ADD_FAILURE() << "not there within 30 s; frames but heartbeats:\n"
                      << seen;
        break;
      }
      auto [ec, text] = c.read(5s);
      if (ec) {
        ADD_FAILURE() << "the WebSocket ended: " << ec.message();
        break;
      }
      frames.push_back(json::parse(text));
    }
    return frames;
  }

  static std::size_t count(const std::vector<json>& frames,
                           const std::string& sub, const std::string& kind) {
    return static_cast<std::size_t>(
      std::count_if(frames.begin(), frames.end(), [&](const json& f) {
        return f.value("sub", "") == sub && f["kind"] == kind;
      }));
  }

  static std::vector<json> events_of(const std::vector<json>& frames,
                                     const std::string& sub) {
    std::vector<json> out;
    for (auto& f : frames)
      if (f.value("sub", "") == sub && f["kind"] == "event")
        out.push_back(f);
    return out;
  }

  http_config fast() {
    http_config hc;
    hc.subscribe_heartbeat = 50ms;
    return hc;
  }
};

TEST_F(WsSubscribe, CreditsAreNeverExceededAndSubscriptionsShareASocket) {
  append(10, "A");
  append(10, "B");
  auto port = serve(fast());
  ws_client c{port};
  ASSERT_FALSE(c.handshake("/v1/ws"));
  ASSERT_FALSE(c.send(json{
    {"op", "subscribe"},
    {"sub", "s1"},
    {"query", items({"A"}, {})},
    {"credit", 3}}.dump()));
  ASSERT_FALSE(c.send(json{
    {"op", "subscribe"},
    {"sub", "s2"},
    {"query", items({"B"}, {})},
    {"after", 15},
    {"credit", 100}}.dump()));
  std::vector<json> frames;
  // s2 catches up; s1 stops at its credit: several heartbeats pass and no
  // fourth event.
  read_until(c, frames, [&](auto& fs) {
    return count(fs, "s2", "caught_up") == 1 && count(fs, "s1", "event") >= 3
           && count(fs, "s1", "heartbeat") >= 4;
  });
  EXPECT_EQ(count(frames, "s1", "event"), 3u);
  EXPECT_EQ(count(frames, "s1", "caught_up"), 0u);
  EXPECT_EQ(chain(events_of(frames, "s2"), 15),
            oracle(query{{query_item{{"B"}, {}}}}, 15));
  ASSERT_FALSE(c.send(json{{"op", "credit"}, {"sub", "s1"}, {"n", 4}}.dump()));
  read_until(c, frames, [&](auto& fs) {
    return count(fs, "s1", "event") >= 7 && count(fs, "s1", "heartbeat") >= 8;
  });
  EXPECT_EQ(count(frames, "s1", "event"), 7u);
  ASSERT_FALSE(
    c.send(json{{"op", "credit"}, {"sub", "s1"}, {"n", 1000}}.dump()));
  append(2, "A");
  read_until(c, frames, [&](auto& fs) {
    return count(fs, "s1", "event") >= 12;
  });
  EXPECT_EQ(count(frames, "s1", "caught_up"), 1u);
  EXPECT_EQ(chain(events_of(frames, "s1"), 0),
            oracle(query{{query_item{{"A"}, {}}}}, 0));
  for (auto& f : frames)
    EXPECT_TRUE(f.contains("sub")) << f.dump();
}

TEST_F(WsSubscribe, CheckpointsOfASparseQueryNameTheirSubscription) {
  append(3, "A");
  auto port = serve(fast());
  ws_client c{port};
  ASSERT_FALSE(c.handshake("/v1/ws"));
  ASSERT_FALSE(c.send(json{
    {"op", "subscribe"},
    {"sub", "cp"},
    {"query", items({"Rare"}, {})},
    {"after", 1},
    {"credit", 10}}.dump()));
  std::vector<json> frames;
  read_until(c, frames, [&](auto& fs) {
    return count(fs, "cp", "caught_up") == 1;
  });
  append(20, "Noise");
  read_until(c, frames, [&](auto& fs) {
    return std::any_of(fs.begin(), fs.end(), [](const json& f) {
      return f.value("sub", "") == "cp" && f["kind"] == "checkpoint"
             && f["position"] == 23;
    });
  });
  for (auto& f : frames) {
    EXPECT_EQ(f.value("sub", ""), "cp") << f.dump();
    if (f["kind"] == "checkpoint") {
      EXPECT_TRUE(f["head"].is_number()) << f.dump();
      EXPECT_LE(f["position"].get<std::uint64_t>(), 23u);
    }
  }
  EXPECT_EQ(count(frames, "cp", "event"), 0u);
}

TEST_F(WsSubscribe, BadFramesGetErrorFramesAndChangeNothing) {
  append(3);
  auto port = serve(fast());
  ws_client c{port};
  ASSERT_FALSE(c.handshake("/v1/ws"));
  ASSERT_FALSE(
    c.send(json{{"op", "subscribe"}, {"sub", "ok"}, {"credit", 10}}.dump()));
  std::vector<std::string> bad{
    "not json",
    "[1,2]",
    R"({"sub":"x"})",
    R"({"op":"nope","sub":"x"})",
    R"({"op":"credit","sub":"missing","n":1})",
    R"({"op":"credit","sub":"ok","n":0})",
    R"({"op":"credit","sub":"ok","n":-1})",
    R"({"op":"credit","sub":"ok","n":"5"})",
    R"({"op":"credit","sub":"ok"})",
    R"({"op":"subscribe","sub":"ok"})",
    R"({"op":"subscribe","sub":""})",
    R"({"op":"subscribe","sub":"q","query":{"items":[{}]}})",
    R"({"op":"subscribe","sub":"q","after":-2})",
    R"({"op":"subscribe","sub":"q","credit":1.5})",
    R"({"op":"subscribe","sub":"q","credit":0})",
    R"({"op":"unsubscribe","sub":"missing"})"};
  for (auto& b : bad)
    ASSERT_FALSE(c.send(b));
  // A binary message is no JSON frame either: an error frame, the
  // connection stays.
  ASSERT_FALSE(c.send(R"({"op":"subscribe","sub":"b","credit":1})", true));
  bad.emplace_back("binary");
  std::vector<json> frames;
  read_until(c, frames, [&](auto& fs) {
    return static_cast<std::size_t>(std::count_if(fs.begin(), fs.end(),
                                                  [](auto& f) {
                                                    return f["kind"] == "error";
                                                  }))
             >= bad.size()
           && count(fs, "ok", "caught_up") == 1;
  });
  for (auto& f : frames) {
    if (f["kind"] == "error") {
      EXPECT_EQ(f["code"], "invalid_argument") << f.dump();
      EXPECT_FALSE(f["message"].get<std::string>().empty());
    }
  }
  // The good subscription is untouched: it got its events, and no other
  // subscription exists.
  EXPECT_EQ(count(frames, "ok", "event"), 3u);
  EXPECT_EQ(metric("dcb_subscriptions"), 1);
  EXPECT_EQ(engine_->head(), 3u);
}

TEST_F(WsSubscribe, LimitUnsubscribeAndDisconnectFreeSlots) {
  auto hc = fast();
  hc.max_subscriptions = 2;
  auto port = serve(hc);
  ws_client c{port};
  ASSERT_FALSE(c.handshake("/v1/ws"));
  for (auto name : {"s1", "s2", "s3"})
    ASSERT_FALSE(
      c.send(json{{"op", "subscribe"}, {"sub", name}, {"credit", 10}}.dump()));
  std::vector<json> frames;
  read_until(c, frames, [&](auto& fs) {
    return count(fs, "s3", "error") == 1 && count(fs, "s1", "caught_up") == 1
           && count(fs, "s2", "caught_up") == 1;
  });
  auto err = std::find_if(frames.begin(), frames.end(), [](auto& f) {
    return f["kind"] == "error";
  });
  EXPECT_EQ((*err)["code"], "overloaded");
  ASSERT_FALSE(c.send(json{{"op", "unsubscribe"}, {"sub", "s1"}}.dump()));
  ASSERT_FALSE(
    c.send(json{{"op", "subscribe"}, {"sub", "s3"}, {"credit", 10}}.dump()));
  read_until(c, frames, [&](auto& fs) {
    return count(fs, "s3", "caught_up") == 1 || count(fs, "s3", "error") > 1;
  });
  // An unsubscribed slot is free for the next frame at once, also while
  // the ended subscription's sink is still winding down.
  for (std::size_t round = 2; round < 12; ++round) {
    ASSERT_FALSE(c.send(json{{"op", "unsubscribe"}, {"sub", "s3"}}.dump()));
    ASSERT_FALSE(
      c.send(json{{"op", "subscribe"}, {"sub", "s3"}, {"credit", 10}}.dump()));
    read_until(c, frames, [&](auto& fs) {
      return count(fs, "s3", "caught_up") == round
             || count(fs, "s3", "error") > 1;
    });
  }
  ASSERT_EQ(count(frames, "s3", "error"), 1u);
  append(1);
  read_until(c, frames, [&](auto& fs) {
    return count(fs, "s3", "event") == 1 && count(fs, "s2", "event") == 1;
  });
  EXPECT_EQ(count(frames, "s1", "event"), 0u);
  c.disconnect();
  auto until = std::chrono::steady_clock::now() + 5s;
  while (metric("dcb_subscriptions") != 0
         && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(20ms);
  EXPECT_EQ(metric("dcb_subscriptions"), 0);
  // Slots are free again.
  ws_client d{port};
  ASSERT_FALSE(d.handshake("/v1/ws"));
  ASSERT_FALSE(
    d.send(json{{"op", "subscribe"}, {"sub", "a"}, {"credit", 1}}.dump()));
  ASSERT_FALSE(
    d.send(json{{"op", "subscribe"}, {"sub", "b"}, {"credit", 1}}.dump()));
  std::vector<json> more;
  read_until(d, more, [&](auto& fs) {
    return count(fs, "a", "event") == 1 && count(fs, "b", "event") == 1;
  });
  EXPECT_EQ(std::count_if(more.begin(), more.end(),
                          [](auto& f) {
                            return f["kind"] == "error";
                          }),
            0);
}

// Clients that go away while their subscriptions stream, and the server
// stopping right then: the sinks end on actor threads while the transport
// stops and goes. A sink that held a connection past the transport crashed
// (a WebSocket destroyed after its io_context) or, under ASan, reports a
// use after free.
TEST_F(WsSubscribe, ClientsGoneMidStreamWhileTheServerStops) {
  append(200);
  for (int round = 0; round < 10; ++round) {
    auto port = serve(fast());
    ws_client c{port};
    ASSERT_FALSE(c.handshake("/v1/ws"));
    sub_client sse{port, "/v1/subscribe", true};
    for (auto name : {"s1", "s2", "s3"})
      ASSERT_FALSE(c.send(
        json{{"op", "subscribe"}, {"sub", name}, {"credit", 1000}}.dump()));
    auto [ec, text] = c.read();
    ASSERT_FALSE(ec) << ec.message();
    ASSERT_TRUE(sse.wait_events(1));
    c.disconnect();
    sse.close();
    server_.reset();
  }
}

} // namespace
} // namespace dcbd::test
