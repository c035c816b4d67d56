// WebSocket upgrades (`responder::accept_websocket`, `exchange::upgrade`):
// a test-only echo route served by the transport, driven by a Beast
// WebSocket client. Echo and ordering, 400 for a plain GET, the binary and
// size policies, `on_closed` on every way a connection ends, the metrics
// (one 101), and a server stop that closes open WebSockets promptly.
#include "tests/runtime/transport_fixture.hpp"
#include "tests/runtime/ws_client.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <future>
#include <mutex>
#include <optional>
#include <set>
#include <vector>

namespace dcbd::test {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace bws = beast::websocket;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

class WebSocket : public TransportTest {
protected:
  void SetUp() override {
    serve(routes());
  }

  // The echo route "/ws": echoes text; "bye" closes with reason "bye";
  // "burst" sends 100 numbered messages; "batches" sends batches
  // (`send_batch`); "throw" throws.
  http::route_table routes() {
    return {{"/ws", bhttp::verb::get, [this](const auto& x) {
               http::websocket_handlers h;
               h.on_message = [](const std::shared_ptr<http::websocket>& ws,
                                 std::string text) {
                 if (text == "bye")
                   return ws->close("bye");
                 if (text == "long bye")
                   return ws->close(std::string(200, 'z'));
                 if (text == "throw")
                   throw std::runtime_error("a test handler throws");
                 if (text == "batches") {
                   // Two batches, a single frame and an empty batch; each
                   // completion answers "done <batch> <ok>".
                   for (int b = 0; b < 2; ++b) {
                     std::vector<std::string> frames;
                     for (int i = 0; i < 50; ++i)
                       frames.push_back(std::to_string(b) + "-"
                                        + std::to_string(i));
                     ws->send_batch(std::move(frames), [ws, b](bool ok) {
                       ws->send("done " + std::to_string(b) + " "
                                + std::to_string(ok));
                     });
                   }
                   ws->send("single");
                   ws->send_batch({}, [ws](bool ok) {
                     ws->send("done empty " + std::to_string(ok));
                   });
                   return;
                 }
                 if (text == "burst") {
                   for (int i = 0; i < 100; ++i)
                     ws->send(std::to_string(i));
                   return;
                 }
                 ws->send(std::move(text));
               };
               h.on_closed = [this] {
                 ++closed_;
               };
               if (auto ws = x->upgrade(std::move(h))) {
                 std::lock_guard<std::mutex> guard{mtx_};
                 last_ = ws;
                 ++upgraded_;
               }
             }}};
  }

  bool closed_once(std::chrono::milliseconds wait = 2s) {
    return eventually(
      [this] {
        return closed_ > 0;
      },
      wait);
  }

  void TearDown() override {
    // A websocket must not outlive its transport.
    {
      std::lock_guard<std::mutex> guard{mtx_};
      last_.reset();
    }
    TransportTest::TearDown();
  }

  std::shared_ptr<http::websocket> last() {
    std::lock_guard<std::mutex> guard{mtx_};
    return last_;
  }

  std::mutex mtx_;
  // The last connection upgraded; held past its close.
  std::shared_ptr<http::websocket> last_;
  std::atomic<int> upgraded_{0};
  std::atomic<int> closed_{0};
};

TEST_F(WebSocket, EchoesSeveralMessagesWithTheServerHeader) {
  ws_client c{port()};
  ASSERT_FALSE(c.handshake());
  EXPECT_EQ(c.upgrade_response().result_int(), 101u);
  EXPECT_EQ(c.upgrade_response()[bhttp::field::server], "dcbd");
  std::vector<std::string> texts{"one", "two", "", std::string(60'000, 'x'),
                                 "end"};
  for (auto& text : texts) {
    ASSERT_FALSE(c.send(text));
    auto [ec, echo] = c.read();
    ASSERT_FALSE(ec) << ec.message();
    EXPECT_EQ(echo, text);
  }
  EXPECT_EQ(upgraded_, 1);
  EXPECT_EQ(closed_, 0);
}

TEST_F(WebSocket, PlainGetToTheRouteGets400) {
  net::io_context ioc;
  beast::tcp_stream s{ioc};
  s.connect({net::ip::make_address("127.0.0.1"), port()});
  bhttp::request<bhttp::empty_body> req{bhttp::verb::get, "/ws", 11};
  req.set(bhttp::field::host, "127.0.0.1");
  bhttp::write(s, req);
  beast::flat_buffer buf;
  bhttp::response<bhttp::string_body> res;
  bhttp::read(s, buf, res);
  EXPECT_EQ(res.result_int(), 400u);
  EXPECT_EQ(nlohmann::json::parse(res.body())["code"], "invalid_argument");
  EXPECT_EQ(upgraded_, 0);
  EXPECT_EQ(metric(R"(dcb_http_requests_total{code="400",route="/ws"})"), 1);
  EXPECT_EQ(metric(R"(dcb_http_requests_total{code="101",route="/ws"})"), -1);
}

TEST(WebSocketResponder, PlainRequestGets400AndNoWebSocket) {
  std::atomic<int> answers{0};
  std::atomic<bool> upgrade{true};
  std::atomic<bool> null{false};
  http::transport_handlers h;
  h.on_request = [&](http::responder r) {
    upgrade = r.is_websocket_upgrade();
    null = r.accept_websocket({}) == nullptr;
    ++answers;
  };
  h.on_refused = [](http::responder, unsigned, std::string, std::string) {};
  http_config cfg;
  cfg.port = 0;
  http::http_transport t{cfg, std::move(h)};
  net::io_context ioc;
  beast::tcp_stream s{ioc};
  s.connect({net::ip::make_address("127.0.0.1"), t.port()});
  bhttp::request<bhttp::empty_body> req{bhttp::verb::get, "/anything", 11};
  req.set(bhttp::field::host, "127.0.0.1");
  bhttp::write(s, req);
  beast::flat_buffer buf;
  bhttp::response<bhttp::string_body> res;
  bhttp::read(s, buf, res);
  EXPECT_EQ(res.result_int(), 400u);
  EXPECT_EQ(res[bhttp::field::server], "dcbd");
  EXPECT_EQ(nlohmann::json::parse(res.body())["code"], "invalid_argument");
  EXPECT_EQ(answers, 1);
  EXPECT_FALSE(upgrade);
  EXPECT_TRUE(null);
}

TEST_F(WebSocket, UpgradeIsCountedOnceAs101) {
  {
    ws_client c{port()};
    ASSERT_FALSE(c.handshake());
    ASSERT_FALSE(c.send("hi"));
    ASSERT_FALSE(c.read().first);
    ASSERT_FALSE(c.close());
  }
  ASSERT_TRUE(closed_once());
  EXPECT_EQ(metric(R"(dcb_http_requests_total{code="101",route="/ws"})"), 1);
  for (auto code : {"200", "400", "499", "500"})
    EXPECT_EQ(metric(std::string{R"(dcb_http_requests_total{code=")"} + code
                     + R"(",route="/ws"})"),
              -1)
      << code;
}

TEST_F(WebSocket, BinaryMessageClosesWithUnsupportedData) {
  ws_client c{port()};
  ASSERT_FALSE(c.handshake());
  ASSERT_FALSE(c.send("bin", true));
  auto [ec, text] = c.read();
  EXPECT_EQ(ec, bws::error::closed) << ec.message();
  EXPECT_EQ(c.reason().code, bws::close_code::unknown_data);
  EXPECT_TRUE(closed_once());
}

// Beast 1.74 deadlocks its close against a read that fails the connection
// (a binary message starts the server's close, then a text message that is
// no UTF-8, or a ping, arrives). Each such connection still ends: on_closed
// runs for it and a stop does not wait for it.
TEST_F(WebSocket, CloseStuckInBeastStillEndsTheConnection) {
  auto sequences = {ws_frame("bin", 2) + ws_frame("\xff\xfe", 1),
                    ws_frame("bin", 2) + ws_frame("p", 9)};
  int n = 0;
  for (const auto& bytes : sequences)
    for (int k = 0; k < 3; ++k, ++n) {
      net::io_context ioc;
      tcp::socket s{ioc};
      ASSERT_EQ(ws_upgrade(s, port(), "/ws").substr(0, 12), "HTTP/1.1 101");
      beast::error_code ec;
      net::write(s, net::buffer(bytes), ec);
      std::this_thread::sleep_for(20ms);
      s.close(ec);
    }
  EXPECT_TRUE(eventually(
    [&] {
      return closed_ == n;
    },
    http::websocket_close_timeout + http::websocket_stuck_timeout + 5s))
    << closed_ << " of " << n << " connections ended";
  auto stopped = std::async(std::launch::async, [this] {
    transport_->stop(1s);
  });
  EXPECT_EQ(stopped.wait_for(10s), std::future_status::ready)
    << "stop waits for a connection that never ends";
}

TEST_F(WebSocket, MessageOverTheLimitClosesWithTooBig) {
  ws_client c{port()};
  ASSERT_FALSE(c.handshake());
  c.send(std::string(http::websocket_max_message + 1, 'x'));
  auto [ec, text] = c.read();
  EXPECT_TRUE(ec);
  EXPECT_EQ(c.reason().code, bws::close_code::too_big);
  EXPECT_TRUE(closed_once());
}

TEST_F(WebSocket, ClientDisconnectRunsOnClosedOnce) {
  ws_client c{port()};
  ASSERT_FALSE(c.handshake());
  ASSERT_FALSE(c.send("hi"));
  ASSERT_FALSE(c.read().first);
  c.disconnect();
  ASSERT_TRUE(closed_once()) << "on_closed did not run";
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(closed_, 1);
  // The server side is closed; sending on it fails.
  auto ws = last();
  ASSERT_TRUE(ws);
  EXPECT_FALSE(ws->open());
  std::promise<bool> sent;
  ws->send("late", [&sent](bool written) {
    sent.set_value(written);
  });
  auto f = sent.get_future();
  ASSERT_EQ(f.wait_for(2s), std::future_status::ready);
  EXPECT_FALSE(f.get());
}

TEST_F(WebSocket, ClientCloseHandshakeRunsOnClosedOnce) {
  ws_client c{port()};
  ASSERT_FALSE(c.handshake());
  EXPECT_FALSE(c.close());
  ASSERT_TRUE(closed_once());
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(closed_, 1);
}

TEST_F(WebSocket, ServerCloseSendsItsReason) {
  ws_client c{port()};
  ASSERT_FALSE(c.handshake());
  ASSERT_FALSE(c.send("bye"));
  auto [ec, text] = c.read();
  EXPECT_EQ(ec, bws::error::closed) << ec.message();
  EXPECT_EQ(c.reason().code, bws::close_code::normal);
  EXPECT_EQ(c.reason().reason, "bye");
  EXPECT_TRUE(closed_once());
}

TEST_F(WebSocket, OverlongCloseReasonIsCutToTheFrameLimit) {
  ws_client c{port()};
  ASSERT_FALSE(c.handshake());
  ASSERT_FALSE(c.send("long bye"));
  auto [ec, text] = c.read();
  EXPECT_EQ(ec, bws::error::closed) << ec.message();
  auto& reason = c.reason().reason;
  EXPECT_EQ(std::string(reason.data(), reason.size()), std::string(123, 'z'));
  EXPECT_TRUE(closed_once());
}

TEST_F(WebSocket, HundredMessagesInABurstArriveInOrder) {
  ws_client c{port()};
  ASSERT_FALSE(c.handshake());
  // Client to server (echoed back).
  for (int i = 0; i < 100; ++i)
    ASSERT_FALSE(c.send("m" + std::to_string(i)));
  for (int i = 0; i < 100; ++i) {
    auto [ec, text] = c.read();
    ASSERT_FALSE(ec) << ec.message();
    ASSERT_EQ(text, "m" + std::to_string(i));
  }
  // Server to client: 100 sends queued at once.
  ASSERT_FALSE(c.send("burst"));
  for (int i = 0; i < 100; ++i) {
    auto [ec, text] = c.read();
    ASSERT_FALSE(ec) << ec.message();
    ASSERT_EQ(text, std::to_string(i));
  }
  auto ws = last();
  ASSERT_TRUE(ws);
  EXPECT_TRUE(eventually(
    [&ws] {
      return ws->queued() == 0;
    },
    2s));
  EXPECT_TRUE(ws->open());
}

TEST_F(WebSocket, BatchesGoOutWholeInOrderWithOneCompletionEach) {
  ws_client c{port()};
  ASSERT_FALSE(c.handshake());
  ASSERT_FALSE(c.send("batches"));
  std::vector<std::string> expected;
  for (int b = 0; b < 2; ++b)
    for (int i = 0; i < 50; ++i)
      expected.push_back(std::to_string(b) + "-" + std::to_string(i));
  expected.push_back("single");
  for (auto& want : expected) {
    auto [ec, text] = c.read();
    ASSERT_FALSE(ec) << ec.message();
    ASSERT_EQ(text, want);
  }
  // The completions come after the frames, each once and successful.
  std::multiset<std::string> done;
  for (int i = 0; i < 3; ++i) {
    auto [ec, text] = c.read();
    ASSERT_FALSE(ec) << ec.message();
    done.insert(text);
  }
  EXPECT_EQ(
    done, (std::multiset<std::string>{"done 0 1", "done 1 1", "done empty 1"}));
  auto ws = last();
  ASSERT_TRUE(ws);
  EXPECT_TRUE(eventually(
    [&ws] {
      return ws->queued() == 0;
    },
    2s));
  // After a close, a batch completes with false and goes nowhere.
  std::promise<bool> after_close;
  ws->close("bye");
  ws->send_batch({"late"}, [&after_close](bool ok) {
    after_close.set_value(ok);
  });
  auto f = after_close.get_future();
  ASSERT_EQ(f.wait_for(2s), std::future_status::ready);
  EXPECT_FALSE(f.get());
  EXPECT_EQ(ws->queued(), 0u);
}

// Beast answers a ping itself, through the same write layer as the frames
// (runtime/http_websocket `coalescing_stream`): the pong goes out whole,
// between frames, while batches gather.
TEST_F(WebSocket, APingDuringBatchesIsAnsweredAndNoFrameIsTorn) {
  ws_client c{port()};
  ASSERT_FALSE(c.handshake());
  ASSERT_FALSE(c.send("batches"));
  ASSERT_FALSE(c.ping("p1"));
  std::vector<std::string> frames;
  // 100 batched, "single", three completions.
  for (int i = 0; i < 104; ++i) {
    auto [ec, text] = c.read();
    ASSERT_FALSE(ec) << ec.message();
    frames.push_back(text);
  }
  EXPECT_EQ(frames[0], "0-0");
  EXPECT_EQ(frames[99], "1-49");
  EXPECT_EQ(frames[100], "single");
  // The ping came before the echo's request, so its pong before the echo.
  ASSERT_FALSE(c.send("after"));
  auto [ec, text] = c.read();
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(text, "after");
  EXPECT_EQ(c.pongs(), std::vector<std::string>{"p1"});
}

TEST_F(WebSocket, HandlerExceptionIsLoggedAndTheConnectionCarriesOn) {
  ws_client c{port()};
  ASSERT_FALSE(c.handshake());
  ASSERT_FALSE(c.send("throw"));
  ASSERT_FALSE(c.send("after"));
  auto [ec, text] = c.read();
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(text, "after");
  EXPECT_EQ(closed_, 0);
}

TEST_F(WebSocket, IdleConnectionOutlivesTheHttpTimeouts) {
  transport_.reset();
  http_config cfg;
  cfg.idle_timeout = 100ms;
  cfg.request_timeout = 100ms;
  cfg.write_timeout = 100ms;
  serve(routes(), cfg);
  ws_client c{port()};
  ASSERT_FALSE(c.handshake());
  std::this_thread::sleep_for(500ms);
  ASSERT_FALSE(c.send("still here"));
  auto [ec, text] = c.read();
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(text, "still here");
  EXPECT_EQ(closed_, 0);
}

TEST_F(WebSocket, ServerStopClosesOpenWebSocketsPromptly) {
  ws_client c{port()};
  ASSERT_FALSE(c.handshake());
  ASSERT_FALSE(c.send("hi"));
  ASSERT_FALSE(c.read().first);
  auto start = std::chrono::steady_clock::now();
  // The grace period waits for requests in flight; an upgraded connection
  // is none.
  auto stopped = std::async(std::launch::async, [this] {
    transport_->stop(5s);
  });
  auto [ec, text] = c.read(3s);
  EXPECT_EQ(ec, bws::error::closed) << ec.message();
  EXPECT_EQ(c.reason().code, bws::close_code::going_away);
  EXPECT_EQ(c.reason().reason, "server stopping");
  ASSERT_EQ(stopped.wait_for(3s), std::future_status::ready)
    << "stop did not return";
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
  EXPECT_EQ(closed_, 1);
}

TEST_F(WebSocket, ServerStopDropsAPeerThatDoesNotAnswerTheClose) {
  ws_client c{port()};
  ASSERT_FALSE(c.handshake());
  // The client reads nothing, so it never answers the close frame.
  auto start = std::chrono::steady_clock::now();
  transport_->stop(0ms);
  EXPECT_LT(std::chrono::steady_clock::now() - start,
            http::websocket_close_timeout + 2s);
  EXPECT_EQ(closed_, 1);
}

} // namespace
} // namespace dcbd::test
