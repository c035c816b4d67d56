// Close detection of chunked responses (`chunk_writer::watch_close`): a
// client that closes or writes mid-stream fails the writer and runs
// `on_closed` at once, with no write needed to notice; so do abort and a
// server stop; a response that ends normally never runs it.
#include "tests/runtime/transport_fixture.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>

namespace dcbd::test {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

// What the test routes saw, shared with the test thread.
struct watched {
  std::mutex mtx;
  // Held until `on_closed` (or the test) drops it.
  std::shared_ptr<http::chunk_writer> writer;
  std::weak_ptr<http::chunk_writer> seen;
  std::atomic<int> closed{0};
  std::atomic<bool> open_at_close{true};
  // Held by the `on_closed` of the last stream; freed with it.
  std::weak_ptr<int> token;

  // Opens a watched stream on `x` that has written "hello".
  std::shared_ptr<http::chunk_writer>
  open(const std::shared_ptr<http::exchange>& x) {
    auto w = x->open_stream("text/plain");
    x->count(200);
    {
      std::lock_guard<std::mutex> guard{mtx};
      writer = w;
      seen = w;
    }
    w->write("hello");
    auto t = std::make_shared<int>(0);
    token = t;
    w->watch_close([this, t] {
      std::lock_guard<std::mutex> guard{mtx};
      open_at_close = writer ? writer->open() : false;
      ++closed;
      writer.reset();
    });
    return w;
  }

  std::atomic<bool> late_write{true};

  // Aborts a stream on `x`, then watches it and writes to it.
  void open_failed(const std::shared_ptr<http::exchange>& x) {
    auto w = x->open_stream("text/plain");
    x->count(200);
    {
      std::lock_guard<std::mutex> guard{mtx};
      writer = w;
      seen = w;
    }
    w->abort();
    w->watch_close([this] {
      std::lock_guard<std::mutex> guard{mtx};
      open_at_close = writer ? writer->open() : false;
      ++closed;
      writer.reset();
    });
    w->write("x", [this](bool written) {
      late_write = written;
    });
  }

  void drop() {
    std::lock_guard<std::mutex> guard{mtx};
    writer.reset();
  }
};

// A raw HTTP/1.1 client for one connection.
class stream_client {
public:
  explicit stream_client(std::uint16_t port) : stream_(ioc_) {
    stream_.connect({net::ip::make_address("127.0.0.1"), port});
  }

  void get(const std::string& target) {
    bhttp::request<bhttp::empty_body> req{bhttp::verb::get, target, 11};
    req.set(bhttp::field::host, "127.0.0.1");
    stream_.expires_after(10s);
    bhttp::write(stream_, req);
  }

  // Reads until `text` has arrived; false on error or timeout.
  bool read_until(const std::string& text) {
    char buf[256];
    stream_.expires_after(10s);
    while (seen_.find(text) == std::string::npos) {
      beast::error_code ec;
      auto n = stream_.read_some(net::buffer(buf), ec);
      if (ec)
        return false;
      seen_.append(buf, n);
    }
    return true;
  }

  // Reads one whole response.
  bhttp::response<bhttp::string_body> response() {
    bhttp::response<bhttp::string_body> res;
    stream_.expires_after(10s);
    bhttp::read(stream_, buffer_, res);
    return res;
  }

  // Whether the server closed the connection within `wait`.
  bool closed_within(std::chrono::milliseconds wait) {
    stream_.expires_after(wait);
    char buf[256];
    beast::error_code ec;
    while (!ec)
      stream_.read_some(net::buffer(buf), ec);
    return ec != beast::error::timeout;
  }

  void send_raw(const std::string& bytes) {
    net::write(stream_.socket(), net::buffer(bytes));
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().close(ignored);
  }

private:
  net::io_context ioc_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::string seen_;
};

class ChunkWriterWatch : public TransportTest {
protected:
  void SetUp() override {
    http::route_table t{
      // Stays open, writing nothing more.
      {"/idle", bhttp::verb::get,
       [this](const auto& x) {
         state_.open(x);
       }},
      // Ends right after the watch started.
      {"/ends", bhttp::verb::get,
       [this](const auto& x) {
         state_.open(x)->end();
       }},
      // Watched after it was aborted.
      {"/late", bhttp::verb::get,
       [this](const auto& x) {
         state_.open_failed(x);
       }},
      // Aborts (twice) after the watch started.
      {"/aborts", bhttp::verb::get,
       [this](const auto& x) {
         auto w = state_.open(x);
         w->abort();
         w->abort();
       }},
    };
    serve(std::move(t));
  }

  void TearDown() override {
    // A writer held keeps its connection, and so the stop, waiting.
    state_.drop();
    TransportTest::TearDown();
  }

  bool closed_once(std::chrono::milliseconds wait) {
    return eventually(
      [this] {
        return state_.closed > 0;
      },
      wait);
  }

  watched state_;
};

TEST_F(ChunkWriterWatch, ClientClosingAnIdleStreamRunsOnClosedAtOnce) {
  stream_client c{port()};
  c.get("/idle");
  ASSERT_TRUE(c.read_until("hello"));
  auto start = std::chrono::steady_clock::now();
  c.close();
  ASSERT_TRUE(closed_once(2s)) << "on_closed did not run";
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  EXPECT_FALSE(state_.open_at_close) << "the writer was still open";
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(state_.closed, 1);
  // on_closed dropped the last reference, so the writer and its session
  // are gone.
  EXPECT_TRUE(eventually(
    [this] {
      return state_.seen.expired();
    },
    2s));
}

TEST_F(ChunkWriterWatch, ClientSendingBytesMidStreamCountsAsClosing) {
  stream_client c{port()};
  c.get("/idle");
  ASSERT_TRUE(c.read_until("hello"));
  c.send_raw("GET /idle HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(closed_once(2s)) << "on_closed did not run";
  EXPECT_FALSE(state_.open_at_close);
  EXPECT_TRUE(c.closed_within(2s)) << "the connection stayed open";
}

TEST_F(ChunkWriterWatch, ResponseEndingNormallyNeverRunsOnClosed) {
  stream_client c{port()};
  c.get("/ends");
  auto res = c.response();
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_EQ(res.body(), "hello");
  // Keep-alive is off once watched: the server closes after the response.
  EXPECT_TRUE(c.closed_within(2s)) << "the connection was kept alive";
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(state_.closed, 0);
  // The handler was dropped unrun, and what it held with it.
  EXPECT_TRUE(state_.token.expired());
  state_.drop();
  transport_->stop(0ms);
  EXPECT_EQ(state_.closed, 0) << "on_closed ran after the response ended";
}

TEST_F(ChunkWriterWatch, AbortRunsOnClosedOnce) {
  stream_client c{port()};
  c.get("/aborts");
  ASSERT_TRUE(closed_once(2s)) << "on_closed did not run";
  EXPECT_FALSE(state_.open_at_close);
  EXPECT_TRUE(c.closed_within(2s));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(state_.closed, 1);
}

TEST_F(ChunkWriterWatch, WatchAfterTheWriterFailedRunsOnClosedAtOnce) {
  stream_client c{port()};
  c.get("/late");
  ASSERT_TRUE(closed_once(2s)) << "on_closed did not run";
  EXPECT_TRUE(eventually(
    [this] {
      return !state_.late_write;
    },
    2s))
    << "a write after the failure was not refused";
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(state_.closed, 1);
}

TEST_F(ChunkWriterWatch, ServerStopEndsAWatchedStreamAndReturns) {
  stream_client c{port()};
  c.get("/idle");
  ASSERT_TRUE(c.read_until("hello"));
  auto start = std::chrono::steady_clock::now();
  transport_->stop(100ms);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
  EXPECT_EQ(state_.closed, 1);
  EXPECT_FALSE(state_.open_at_close);
  EXPECT_TRUE(c.closed_within(2s));
}

} // namespace
} // namespace dcbd::test
