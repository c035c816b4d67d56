// The HTTP append path (POST /append and /v1/append) when the store does not
// keep up: a stalled database (the head row locked from another connection)
// is answered within the engine's timeout, a full queue at once with 503
// `overloaded`, and a client that leaves before its answer costs nothing.
// The blocking `engine::append` keeps its bound too.
#include "tests/runtime/http_test_client.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <thread>

namespace dcbd::test {
namespace {

using namespace http_support;
using std::chrono::steady_clock;

class HttpAppend : public EngineTest {
protected:
  void SetUp() override {
    EngineTest::SetUp();
    metrics_ = std::make_shared<node_metrics>();
  }

  void TearDown() override {
    server_.reset();
    EngineTest::TearDown();
  }

  // Starts the engine with `timeout` and `max_queue`, and the server.
  void serve(std::chrono::milliseconds timeout,
             std::size_t max_queue = 10'000) {
    auto cfg = config();
    cfg.metrics = metrics_->store_hooks();
    cfg.timeout = timeout;
    cfg.group.max_queue = max_queue;
    start(cfg);
    http_config hc;
    hc.port = 0;
    server_.emplace(*engine_, metrics_, hc);
  }

  std::uint16_t port() const {
    return server_->port();
  }

  // One append on its own tag, as the raw bytes of a request.
  static std::string append_bytes(const std::string& target,
                                  const std::string& tag) {
    auto body = json{{"events", json::array({ev("A", {tag})})}}.dump();
    return "POST " + target
           + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: "
           + std::to_string(body.size()) + "\r\n\r\n" + body;
  }

  static json one_event(const std::string& tag) {
    return json{{"events", json::array({ev("A", {tag})})}};
  }

  // Waits until `n` appends are admitted and not answered.
  bool gate_reaches(std::size_t n, std::chrono::milliseconds wait = 10s) {
    auto until = steady_clock::now() + wait;
    while (engine_->gate()->depth() != n) {
      if (steady_clock::now() > until)
        return false;
      std::this_thread::sleep_for(5ms);
    }
    return true;
  }

  std::uint64_t head() {
    auto h = engine_->head();
    EXPECT_TRUE(h) << message_of(h.error());
    return h ? *h : 0;
  }

  std::string scrape() {
    return prometheus::TextSerializer().Serialize(
      metrics_->registry()->Collect());
  }

  std::shared_ptr<node_metrics> metrics_;
  std::optional<http_server> server_;
};

TEST_F(HttpAppend, StalledStoreIsAnswered503UnavailableWithinTheTimeout) {
  serve(500ms);
  client c{port()};
  ASSERT_EQ(c.post("/append", one_event("k:0")).status, 200u);
  {
    head_lock lock{schema_};
    for (auto target : {"/append", "/v1/append"}) {
      auto t0 = steady_clock::now();
      auto r = c.post(target, one_event("k:1"));
      auto took = steady_clock::now() - t0;
      EXPECT_EQ(r.status, 503u) << target << ": " << r.body;
      EXPECT_EQ(r.j().value("code", ""), "unavailable") << r.body;
      EXPECT_FALSE(r.closed) << "the connection is kept";
      EXPECT_GE(took, 450ms) << target;
      EXPECT_LT(took, 3s) << target;
    }
    // Both wait in the store, still admitted.
    EXPECT_EQ(engine_->gate()->depth(), 2u);
    EXPECT_NE(
      scrape().find(R"(dcb_append_requests_total{result="unavailable"} 2)"),
      std::string::npos)
      << scrape();
  }
  // The store's late answers go nowhere; the appends it took are committed,
  // and the node carries on.
  EXPECT_TRUE(gate_reaches(0));
  auto r = c.post("/v1/append", one_event("k:2"));
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.j()["last_position"], 4u);
  EXPECT_EQ(head(), 4u);
}

TEST_F(HttpAppend, FullQueueIsAnswered503OverloadedAtOnce) {
  serve(30s, 2);
  client warm{port()};
  ASSERT_EQ(warm.post("/append", one_event("k:0")).status, 200u);
  head_lock lock{schema_};
  client a{port()};
  client b{port()};
  a.raw(append_bytes("/append", "k:a"));
  b.raw(append_bytes("/v1/append", "k:b"));
  ASSERT_TRUE(gate_reaches(2));
  client c{port()};
  for (auto target : {"/append", "/v1/append"}) {
    auto t0 = steady_clock::now();
    auto r = c.post(target, one_event("k:c"));
    EXPECT_LT(steady_clock::now() - t0, 1s) << target;
    EXPECT_EQ(r.status, 503u) << target << ": " << r.body;
    EXPECT_EQ(r.j().value("code", ""), "overloaded") << r.body;
  }
  lock.release();
  auto ra = a.receive();
  auto rb = b.receive();
  EXPECT_EQ(ra.status, 200u) << ra.body;
  EXPECT_EQ(rb.status, 200u) << rb.body;
  EXPECT_TRUE(gate_reaches(0));
  EXPECT_EQ(head(), 3u);
}

TEST_F(HttpAppend, ClientLeavingBeforeItsAnswerCostsNothing) {
  serve(700ms);
  client warm{port()};
  ASSERT_EQ(warm.post("/append", one_event("k:0")).status, 200u);
  // Answered by the store after the client left.
  {
    head_lock lock{schema_};
    client gone{port()};
    gone.raw(append_bytes("/append", "k:1"));
    ASSERT_TRUE(gate_reaches(1));
  }
  ASSERT_TRUE(gate_reaches(0));
  // Timed out after the client left; the store answers later still.
  {
    head_lock lock{schema_};
    {
      client gone{port()};
      gone.raw(append_bytes("/v1/append", "k:2"));
      ASSERT_TRUE(gate_reaches(1));
    }
    std::this_thread::sleep_for(1s);
  }
  EXPECT_TRUE(gate_reaches(0));
  EXPECT_EQ(head(), 3u);
  client c{port()};
  auto r = c.post("/v1/append", one_event("k:3"));
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.j()["last_position"], 4u);
  // Nothing keeps the sessions: the server stops at once.
  auto t0 = steady_clock::now();
  server_->stop(0ms);
  EXPECT_LT(steady_clock::now() - t0, 2s);
}

TEST_F(HttpAppend, ServerStopWaitsNoLongerThanTheTimeoutForAStalledStore) {
  serve(500ms);
  client warm{port()};
  ASSERT_EQ(warm.post("/append", one_event("k:0")).status, 200u);
  head_lock lock{schema_};
  client c{port()};
  c.raw(append_bytes("/append", "k:1"));
  ASSERT_TRUE(gate_reaches(1));
  auto t0 = steady_clock::now();
  server_->stop(0ms);
  EXPECT_LT(steady_clock::now() - t0, 3s);
  // The answer went out, or the stop closed the connection first.
  auto r = c.receive();
  EXPECT_TRUE(r.closed || r.status == 503u) << r.status << " " << r.body;
  lock.release();
  EXPECT_TRUE(gate_reaches(0));
}

TEST_F(HttpAppend, BlockingEngineAppendReturnsUnavailableWithinTheTimeout) {
  serve(400ms);
  ASSERT_TRUE(engine_->append(std::vector<event>{event{"A", {"k:0"}}}));
  {
    head_lock lock{schema_};
    auto t0 = steady_clock::now();
    auto r = engine_->append(std::vector<event>{event{"A", {"k:1"}}});
    auto took = steady_clock::now() - t0;
    ASSERT_FALSE(r);
    EXPECT_EQ(code_of(r.error()), errc::unavailable) << message_of(r.error());
    EXPECT_GE(took, 350ms);
    EXPECT_LT(took, 3s);
  }
  EXPECT_TRUE(gate_reaches(0));
  auto r = engine_->append(std::vector<event>{event{"A", {"k:2"}}});
  ASSERT_TRUE(r) << message_of(r.error());
  EXPECT_EQ(r->last_position, 3u);
}

} // namespace
} // namespace dcbd::test
