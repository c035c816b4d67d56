// Streaming reads (/v1/read) without a thread per stream: many concurrent
// streams to clients that do not read keep the process's thread count flat
// and still deliver every event in order; a client that disconnects frees
// its stream slot.
#include "runtime/http_client.hpp"
#include "runtime/http_server.hpp"
#include "runtime/metrics.hpp"
#include "tests/runtime/http_test_client.hpp"
#include "tests/support/engine_fixture.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <prometheus/text_serializer.h>

#include <filesystem>
#include <sstream>
#include <thread>

namespace dcbd::test {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using namespace std::chrono_literals;

// Threads of this process.
std::size_t thread_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] auto& e :
       std::filesystem::directory_iterator{"/proc/self/task"})
    ++n;
  return n;
}

using http_support::sample;
using http_support::slow_client;

class HttpStream : public EngineTest {
protected:
  static constexpr int events = 400;

  void SetUp() override {
    EngineTest::SetUp();
    metrics_ = std::make_shared<node_metrics>();
    start();
    std::vector<event> batch;
    for (int i = 1; i <= events; ++i)
      batch.push_back(
        event{"E", {"t"}, std::to_string(i) + std::string(10'000, 'x'), {}});
    ASSERT_TRUE(engine_->append(std::move(batch)));
  }

  void TearDown() override {
    server_.reset();
    EngineTest::TearDown();
  }

  void serve(std::size_t max_streams,
             std::chrono::milliseconds max_wait = 10'000ms) {
    http_config hc;
    hc.port = 0;
    hc.max_streams = max_streams;
    // A stream waits for a slot this long.
    hc.request_timeout = max_wait;
    hc.stream_chunk_events = 10;
    server_.emplace(*engine_, metrics_, hc);
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

  // Checks a full stream: every event in order, then the head.
  void expect_complete(const std::string& body) {
    std::istringstream in{body};
    std::string line;
    int expected = 1;
    json last;
    while (std::getline(in, line)) {
      auto j = json::parse(line);
      if (j.contains("position")) {
        ASSERT_EQ(j["position"], expected) << "out of order";
        ASSERT_EQ(
          j["data"].get<std::string>().rfind(std::to_string(expected) + "x", 0),
          0u);
        ++expected;
      }
      last = j;
    }
    EXPECT_EQ(expected, events + 1) << "events missing";
    EXPECT_EQ(last, (json{{"head", events}}));
  }

  std::string target() {
    return "/v1/read?query=" + client::url_encode(R"({"items": []})");
  }

  std::shared_ptr<node_metrics> metrics_;
  std::optional<http_server> server_;
};

TEST_F(HttpStream, ManyStalledStreamsNeedNoThreadEachAndDeliverAll) {
  constexpr std::size_t streams = 40;
  serve(streams + 8);
  ASSERT_NE(metric("dcb_http_open_streams"), -1) << "gauge missing";
  auto before = thread_count();
  std::vector<std::unique_ptr<slow_client>> clients;
  for (std::size_t i = 0; i < streams; ++i) {
    clients.push_back(std::make_unique<slow_client>(server_->port()));
    clients.back()->request(target());
  }
  // 400 events of ~10 KB do not fit the socket buffers: every stream is open
  // and stalled on its client.
  ASSERT_TRUE(open_streams_reach(streams, 20s));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(metric("dcb_http_open_streams"), streams) << "a stream finished";
  auto during = thread_count();
  EXPECT_LT(during, before + 8) << before << " threads before, " << during
                                << " with " << streams << " open streams";
  // Now every client reads its stream to the end, all at once: read one
  // after the other, the last ones would sit stalled for longer than the
  // server's write timeout on a slow (e.g. sanitized) build.
  std::vector<bhttp::response<bhttp::string_body>> responses(streams);
  std::vector<std::string> errors(streams);
  {
    std::vector<std::jthread> readers;
    for (std::size_t i = 0; i < streams; ++i)
      readers.emplace_back([&, i] {
        try {
          responses[i] = clients[i]->response();
        } catch (const std::exception& e) {
          errors[i] = e.what();
        }
      });
  }
  for (std::size_t i = 0; i < streams; ++i) {
    ASSERT_EQ(errors[i], "") << "stream " << i;
    auto& res = responses[i];
    ASSERT_EQ(res.result_int(), 200u);
    EXPECT_EQ(res[bhttp::field::content_type], "application/x-ndjson");
    expect_complete(res.body());
  }
  EXPECT_TRUE(open_streams_reach(0, 10s));
  EXPECT_EQ(metric(R"(dcb_http_requests_total{code="200",route="/v1/read"})"),
            streams);
}

TEST_F(HttpStream, ClientGoingAwayFreesItsSlotForTheNextInLine) {
  serve(1);
  slow_client gone{server_->port()};
  gone.request(target());
  EXPECT_GT(gone.read_some(), 0u);
  ASSERT_TRUE(open_streams_reach(1, 10s));
  // The one slot is taken: the next stream waits in line.
  slow_client second{server_->port()};
  second.request(target());
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(server_->open_streams(), 1u);
  EXPECT_EQ(server_->waiting_streams(), 1u);
  // The client leaves with the stream half read; its slot passes on.
  gone.close();
  auto res = second.response();
  ASSERT_EQ(res.result_int(), 200u) << res.body();
  expect_complete(res.body());
  EXPECT_TRUE(open_streams_reach(0, 20s)) << "the slot was not freed";
  EXPECT_EQ(metric(R"(dcb_http_requests_total{code="499",route="/v1/read"})"),
            1);
  EXPECT_EQ(server_->waiting_streams(), 0u);
}

TEST_F(HttpStream, PastTheLineOrItsWaitA503) {
  serve(1, 3s);
  slow_client holder{server_->port()};
  holder.request(target());
  EXPECT_GT(holder.read_some(), 0u);
  ASSERT_TRUE(open_streams_reach(1, 10s));
  // Eight may wait for the one slot; the ninth is refused at once.
  std::vector<std::unique_ptr<slow_client>> line;
  for (int i = 0; i < 8; ++i) {
    line.push_back(std::make_unique<slow_client>(server_->port()));
    line.back()->request(target());
  }
  std::this_thread::sleep_for(100ms);
  slow_client ninth{server_->port()};
  auto t0 = std::chrono::steady_clock::now();
  ninth.request(target());
  auto refused = ninth.response();
  EXPECT_EQ(refused.result_int(), 503u) << refused.body();
  EXPECT_EQ(json::parse(refused.body())["code"], "overloaded");
  EXPECT_FALSE(refused[bhttp::field::retry_after].empty());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s) << "it waited";
  // Those in line get 503 once they waited 3 s with the slot held.
  for (auto& c : line) {
    auto r = c->response();
    EXPECT_EQ(r.result_int(), 503u) << r.body();
    EXPECT_EQ(json::parse(r.body())["code"], "overloaded") << r.body();
  }
  EXPECT_EQ(metric(R"(dcb_http_requests_total{code="503",route="/v1/read"})"),
            9);
  // Nothing leaked: once the holder leaves, the line is empty (those past
  // their time leave it at the next release) and a stream runs.
  holder.close();
  ASSERT_TRUE(open_streams_reach(0, 20s));
  EXPECT_EQ(server_->waiting_streams(), 0u);
  slow_client next{server_->port()};
  next.request(target());
  auto res = next.response();
  ASSERT_EQ(res.result_int(), 200u) << res.body();
  expect_complete(res.body());
}

} // namespace
} // namespace dcbd::test
