// GET /read (dcb.events) streamed: results larger than max-read-events come
// back whole, as one JSON array in order; options from, limit and backwards;
// errors before the first event are plain {"code", "message"} answers; a
// failure midway cuts the connection; a client that goes away frees its
// stream slot; msgpack answers stay bounded. The memory bound of a 200,000
// event read is measured on the dcbd process in node_test.cpp.
#include "tests/runtime/http_test_client.hpp"

#include <atomic>
#include <chrono>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace dcbd::test {
namespace {

using namespace http_support;

// A store over a shared in-memory one whose streams fail: at once when
// `fail_after` is 0 (as with the database down), or after that many chunks;
// never when it is negative.
class failing_store final : public event_store {
public:
  std::vector<append_result>
  append_validated(const std::vector<validated_append>& group) override {
    return inner_.append_validated(group);
  }

  read_result read(const query& q, const read_options& options) override {
    return inner_.read(q, options);
  }

  std::unique_ptr<event_stream>
  stream(const query& q, const read_options& options,
         const stream_options& chunking) override {
    int after = fail_after;
    if (after == 0)
      throw store_error(errc::unavailable, "the database is down (test)");
    return std::make_unique<failing_stream>(inner_.stream(q, options, chunking),
                                            after);
  }

  std::uint64_t head() override {
    return inner_.head();
  }

  std::atomic<int> fail_after{-1};

private:
  class failing_stream final : public event_stream {
  public:
    failing_stream(std::unique_ptr<event_stream> inner, int after)
      : inner_(std::move(inner))
      , left_(after) {
      // nop
    }

    bool next(std::vector<sequenced_event>& chunk) override {
      if (left_ == 0)
        throw store_error(errc::unavailable, "the connection broke (test)");
      --left_;
      return inner_->next(chunk);
    }

    std::uint64_t head() const noexcept override {
      return inner_->head();
    }

  private:
    std::unique_ptr<event_stream> inner_;
    int left_;
  };

  memory_event_store inner_;
};

class DcbRead : public EngineTest {
protected:
  static constexpr std::size_t bound = 50;

  void SetUp() override {
    EngineTest::SetUp();
    metrics_ = std::make_shared<node_metrics>();
  }

  void TearDown() override {
    server_.reset();
    EngineTest::TearDown();
  }

  // Starts the engine (reads bounded at `bound` events) and a server that
  // streams chunks of 7 events. With `store`, the engine runs on it.
  void serve(std::size_t max_streams = 32,
             std::shared_ptr<failing_store> store = nullptr) {
    auto cfg = config();
    cfg.metrics = metrics_->store_hooks();
    cfg.reader.max_read_events = bound;
    if (store) {
      cfg.listen = false;
      // The failures under test are the store's: no event cache in front
      // of it (the cache would serve these reads from memory).
      cfg.cache_bytes = 0;
      cfg.store_factory = [store](std::size_t) {
        return store;
      };
    }
    start(cfg);
    http_config hc;
    hc.port = 0;
    hc.max_streams = max_streams;
    hc.stream_chunk_events = 7;
    server_.emplace(*engine_, metrics_, hc);
  }

  std::uint16_t port() const {
    return server_->port();
  }

  // Appends `n` events "E" tagged "t" whose data starts with their position
  // and has `pad` more bytes.
  void append(int n, std::size_t pad = 10) {
    std::vector<event> batch;
    for (int i = 1; i <= n; ++i)
      batch.push_back(
        event{"E", {"t"}, std::to_string(i) + std::string(pad, 'x'), {}});
    auto r = engine_->append(std::move(batch));
    ASSERT_TRUE(r) << message_of(r.error());
  }

  double metric(const std::string& series) {
    return sample(
      prometheus::TextSerializer().Serialize(metrics_->registry()->Collect()),
      series);
  }

  // Waits until the open-streams gauge reads `n`.
  bool open_streams_reach(double n, std::chrono::seconds wait) {
    auto deadline = std::chrono::steady_clock::now() + wait;
    while (std::chrono::steady_clock::now() < deadline) {
      if (metric("dcb_http_open_streams") == n)
        return true;
      std::this_thread::sleep_for(20ms);
    }
    return metric("dcb_http_open_streams") == n;
  }

  // Checks that `body` is a JSON array of the events at `positions`, in that
  // order, in the compact form a whole answer had.
  static void expect_events(const std::string& body,
                            const std::vector<int>& positions) {
    auto arr = json::parse(body, nullptr, false);
    ASSERT_TRUE(arr.is_array()) << body.substr(0, 200);
    ASSERT_EQ(arr.size(), positions.size());
    for (std::size_t i = 0; i < positions.size(); ++i) {
      ASSERT_EQ(arr[i]["position"], positions[i]) << "at index " << i;
      ASSERT_EQ(arr[i]["type"], "E");
      ASSERT_EQ(arr[i]["tags"], json::array({"t"}));
      ASSERT_EQ(arr[i]["data"].get<std::string>().rfind(
                  std::to_string(positions[i]) + "x", 0),
                0u);
    }
    EXPECT_EQ(body, arr.dump()) << "not byte-compatible";
  }

  // first, first ± 1, ..., last.
  static std::vector<int> range(int first, int last) {
    std::vector<int> out;
    int step = first <= last ? 1 : -1;
    for (int i = first; i != last + step; i += step)
      out.push_back(i);
    return out;
  }

  static json all() {
    return json{{"items", json::array()}};
  }

  std::shared_ptr<node_metrics> metrics_;
  std::optional<http_server> server_;
};

TEST_F(DcbRead, ReturnsMoreThanMaxReadEventsAsOneArrayInOrder) {
  serve();
  append(300);
  client c{port()};
  auto r = c.get(read_target("/read", all()));
  ASSERT_EQ(r.status, 200u) << r.body.substr(0, 200);
  EXPECT_EQ(r.content_type, "application/json");
  expect_events(r.body, range(1, 300));
  // The same through a query, and again on the same connection.
  auto q = c.get(read_target("/read", items({"E"}, {"t"})));
  ASSERT_EQ(q.status, 200u);
  expect_events(q.body, range(1, 300));
  EXPECT_TRUE(open_streams_reach(0, 10s)) << "a slot was not freed";
  EXPECT_EQ(metric(R"(dcb_http_requests_total{code="200",route="/read"})"), 2);
  EXPECT_EQ(metric(R"(dcb_read_requests_total{result="ok"})"), 2);
  EXPECT_EQ(metric("dcb_events_read_total"), 600);
}

// A result of at most one chunk (7 events here) whose range the cache holds
// is answered from memory in one body; a larger one is streamed. Both look
// the same to the client, and both hold every event appended before them.
TEST_F(DcbRead, SmallResultsComeFromMemoryLargeOnesAreStreamed) {
  serve();
  ASSERT_TRUE(engine_->cache()) << "the fixture runs with the cache";
  auto hits = [&] {
    auto s = engine_->cache()->snapshot();
    return s.served[static_cast<int>(cache_route::read)]
                   [static_cast<int>(cache_outcome::hit)];
  };
  auto streamed = [&] {
    auto s = engine_->cache()->snapshot();
    std::uint64_t n = 0;
    for (auto o : s.served[static_cast<int>(cache_route::stream)])
      n += o;
    return n;
  };
  // Events whose data starts with their position, as `append` makes them
  // for a fresh log.
  auto add = [&](int first, int n) {
    std::vector<event> batch;
    for (int p = first; p < first + n; ++p)
      batch.push_back(event{"E", {"t"}, std::to_string(p) + "xxxx", {}});
    ASSERT_TRUE(engine_->append(std::move(batch)));
  };
  client c{port()};
  for (int round = 1; round <= 5; ++round) {
    add(round, 1);
    auto before = hits();
    auto r = c.get(read_target("/read", all()));
    ASSERT_EQ(r.status, 200u) << r.body;
    EXPECT_EQ(r.content_type, "application/json");
    expect_events(r.body, range(1, round));
    EXPECT_EQ(hits(), before + 1) << "round " << round;
    // /v1/read too: the lines, then the head.
    auto v1 = c.get(read_target("/v1/read", all()));
    ASSERT_EQ(v1.status, 200u) << v1.body;
    EXPECT_EQ(v1.content_type, "application/x-ndjson");
    std::istringstream lines{v1.body};
    std::string line;
    int n = 0;
    json last;
    while (std::getline(lines, line)) {
      last = json::parse(line);
      if (last.contains("position")) {
        ++n;
        EXPECT_EQ(last["position"], n);
      }
    }
    EXPECT_EQ(n, round);
    EXPECT_EQ(last, (json{{"head", round}}));
  }
  EXPECT_EQ(streamed(), 0u) << "a small read took the stream";
  // Options are honoured on the memory path too.
  auto back = c.get(
    read_target("/read", all(), json{{"backwards", true}, {"limit", 2}}));
  ASSERT_EQ(back.status, 200u);
  expect_events(back.body, range(5, 4));
  // Past one chunk: streamed, the same array.
  add(6, 10);
  auto big = c.get(read_target("/read", all()));
  ASSERT_EQ(big.status, 200u);
  expect_events(big.body, range(1, 15));
  // The reader records the stream's outcome when it drops the stream, which
  // may come after the client has the whole body.
  for (auto until = std::chrono::steady_clock::now() + 10s;
       streamed() == 0 && std::chrono::steady_clock::now() < until;)
    std::this_thread::sleep_for(5ms);
  EXPECT_GT(streamed(), 0u);
  EXPECT_TRUE(open_streams_reach(0, 10s));
  // 15 events by each route in the rounds, 2 backwards, 15 streamed.
  EXPECT_EQ(metric(R"(dcb_events_read_total)"), 15 + 15 + 2 + 15);
}

TEST_F(DcbRead, EmptyResultIsAnEmptyArray) {
  serve();
  client c{port()};
  auto empty_store = c.get(read_target("/read", all()));
  ASSERT_EQ(empty_store.status, 200u);
  EXPECT_EQ(empty_store.body, "[]");
  EXPECT_EQ(empty_store.content_type, "application/json");
  append(20);
  auto none = c.get(read_target("/read", items({}, {"nobody"})));
  ASSERT_EQ(none.status, 200u);
  EXPECT_EQ(none.body, "[]");
  auto past_head
    = c.get(read_target("/read", all(), json{{"from", 21}, {"limit", 5}}));
  ASSERT_EQ(past_head.status, 200u);
  EXPECT_EQ(past_head.body, "[]");
  EXPECT_TRUE(open_streams_reach(0, 10s));
  EXPECT_EQ(metric(R"(dcb_http_requests_total{code="200",route="/read"})"), 3);
}

TEST_F(DcbRead, OptionsFromLimitAndBackwards) {
  serve();
  append(300);
  client c{port()};
  // Backwards with a limit above the bound: the newest 120.
  auto back = c.get(
    read_target("/read", all(), json{{"backwards", true}, {"limit", 120}}));
  ASSERT_EQ(back.status, 200u);
  expect_events(back.body, range(300, 181));
  // Backwards from a position (inclusive maximum).
  auto from_back = c.get(read_target(
    "/read", all(), json{{"backwards", true}, {"from", 100}, {"limit", 3}}));
  ASSERT_EQ(from_back.status, 200u);
  expect_events(from_back.body, {100, 99, 98});
  // Backwards without a limit: everything, newest first.
  auto whole = c.get(read_target("/read", all(), json{{"backwards", true}}));
  ASSERT_EQ(whole.status, 200u);
  expect_events(whole.body, range(300, 1));
  // Forwards from a position, more than the bound.
  auto from = c.get(read_target("/read", all(), json{{"from", 240}}));
  ASSERT_EQ(from.status, 200u);
  expect_events(from.body, range(240, 300));
  auto limited
    = c.get(read_target("/read", all(), json{{"from", 10}, {"limit", 7}}));
  ASSERT_EQ(limited.status, 200u);
  expect_events(limited.body, range(10, 16));
}

TEST_F(DcbRead, ClientGoingAwayMidStreamFreesItsSlot) {
  serve(1);
  // About 4 MB of JSON: more than the socket buffers hold, even when the
  // kernel grows loopback buffers (260 KB sometimes fitted whole).
  append(1000, 4000);
  auto target = read_target("/read", all());
  slow_client gone{port()};
  gone.request(target);
  EXPECT_GT(gone.read_some(), 0u);
  ASSERT_TRUE(open_streams_reach(1, 10s));
  // The one slot is taken: the next read waits in line for it.
  slow_client second{port()};
  second.request(target);
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(server_->waiting_streams(), 1u);
  // The client leaves with the array half read; its slot passes on.
  gone.close();
  auto res = second.response();
  ASSERT_EQ(res.result_int(), 200u);
  auto arr = json::parse(res.body());
  ASSERT_EQ(arr.size(), 1000u);
  EXPECT_EQ(arr.back()["position"], 1000);
  EXPECT_TRUE(open_streams_reach(0, 20s)) << "the slot was not freed";
  EXPECT_EQ(metric(R"(dcb_http_requests_total{code="499",route="/read"})"), 1);
  EXPECT_EQ(metric(R"(dcb_read_requests_total{result="unavailable"})"), 1);
}

TEST_F(DcbRead, BadInputIsA400WithNothingWritten) {
  serve(1);
  append(60);
  client c{port()};
  std::vector<std::pair<std::string, std::string>> cases{
    // Refused while parsing the request.
    {"/read?query=" + url_encode("{"), "query"},
    {read_target("/read", json{{"items", "x"}}), "items"},
    {read_target("/read", all(), json{{"backwards", "yes"}}), "backwards"},
    // Refused by the store's validation, before the first event.
    {read_target("/read", items({}, {std::string(300, 't')})), "tag"},
  };
  for (auto& [target, mentions] : cases) {
    SCOPED_TRACE(target);
    auto r = c.get(target);
    ASSERT_EQ(r.status, 400u) << r.body;
    EXPECT_EQ(r.content_type, "application/json");
    auto j = r.j();
    ASSERT_TRUE(j.is_object()) << r.body;
    EXPECT_EQ(j.size(), 2u) << r.body;
    EXPECT_EQ(j["code"], "invalid_argument");
    EXPECT_NE(j["message"].get<std::string>().find(mentions), std::string::npos)
      << r.body;
  }
  // No slot leaked (max_streams is 1) and nothing was written.
  EXPECT_TRUE(open_streams_reach(0, 10s));
  EXPECT_EQ(metric(R"(dcb_http_requests_total{code="400",route="/read"})"), 4);
  auto h = engine_->head();
  ASSERT_TRUE(h);
  EXPECT_EQ(*h, 60u);
  auto ok = c.get(read_target("/read", all()));
  ASSERT_EQ(ok.status, 200u);
  expect_events(ok.body, range(1, 60));
}

TEST_F(DcbRead, MsgpackStaysBoundedByMaxReadEvents) {
  serve();
  append(bound + 10);
  client c{port()};
  auto msgpack = [&](const json& options) {
    return c.send(bhttp::verb::get, read_target("/read", all(), options), {},
                  "application/json", "application/msgpack");
  };
  // A msgpack array states its length first: past the bound, a 400.
  auto over = msgpack(nullptr);
  ASSERT_EQ(over.status, 400u);
  EXPECT_EQ(over.content_type, "application/msgpack");
  auto err = json::from_msgpack(over.body);
  EXPECT_EQ(err["code"], "invalid_argument");
  EXPECT_NE(err["message"].get<std::string>().find("limit"), std::string::npos)
    << err;
  // Within it, the whole array.
  auto page = msgpack(json{{"from", 11}, {"limit", bound}});
  ASSERT_EQ(page.status, 200u);
  auto arr = json::from_msgpack(page.body);
  ASSERT_EQ(arr.size(), bound);
  EXPECT_EQ(arr.front()["position"], 11);
  EXPECT_EQ(arr.back()["position"], bound + 10);
}

TEST_F(DcbRead, DatabaseDownBeforeTheFirstEventIsA503) {
  auto store = std::make_shared<failing_store>();
  serve(32, store);
  append(30);
  store->fail_after = 0;
  client c{port()};
  auto r = c.get(read_target("/read", all()));
  ASSERT_EQ(r.status, 503u) << r.body;
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(r.j()["code"], "unavailable");
  EXPECT_NE(r.j()["message"].get<std::string>().find("down"),
            std::string::npos);
  EXPECT_TRUE(open_streams_reach(0, 10s));
  store->fail_after = -1;
  auto ok = c.get(read_target("/read", all()));
  ASSERT_EQ(ok.status, 200u);
  expect_events(ok.body, range(1, 30));
}

TEST_F(DcbRead, FailureMidwayCutsTheConnectionInsteadOfEndingTheArray) {
  auto store = std::make_shared<failing_store>();
  serve(32, store);
  append(100);
  // Two chunks of 7 events, then the stream fails.
  store->fail_after = 2;
  client c{port()};
  auto r = c.get(read_target("/read", all()));
  // Never a complete response: the body is cut short (or nothing came).
  EXPECT_TRUE(r.closed);
  EXPECT_EQ(r.status, 0u) << "a complete response: " << r.body;
  EXPECT_TRUE(open_streams_reach(0, 10s));
  EXPECT_EQ(metric(R"(dcb_http_requests_total{code="503",route="/read"})"), 1);
  EXPECT_EQ(metric(R"(dcb_read_requests_total{result="unavailable"})"), 1);
  // The node carries on.
  store->fail_after = -1;
  client again{port()};
  auto ok = again.get(read_target("/read", all()));
  ASSERT_EQ(ok.status, 200u);
  expect_events(ok.body, range(1, 100));
}

} // namespace
} // namespace dcbd::test
