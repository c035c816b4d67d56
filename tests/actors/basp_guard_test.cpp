// The cluster port's guard (actors/basp_guard.hpp) between real sockets: a
// client that plays the peer, and a plain listener that plays the
// middleman.
#include "actors/basp_guard.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>
#include <poll.h>

#include <chrono>
#include <optional>
#include <string>
#include <thread>

namespace dcbd {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

// A BASP header: operation, two padding bytes, flags, payload length (big
// endian), operation data, source and destination actor.
std::string header(unsigned char op, std::uint32_t len) {
  std::string h(basp_guard::header_size, '\0');
  h[0] = static_cast<char>(op);
  for (int b = 0; b < 4; ++b)
    h[4 + b] = static_cast<char>((len >> (24 - 8 * b)) & 0xff);
  h[15] = 7;
  h[23] = 1;
  h[31] = 2;
  return h;
}

std::string message(unsigned char op, std::size_t len, char fill = 'p') {
  return header(op, static_cast<std::uint32_t>(len)) + std::string(len, fill);
}

// Waits up to `timeout` for `s` to be readable.
bool readable(tcp::socket& s, std::chrono::milliseconds timeout) {
  pollfd p{s.native_handle(), POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) > 0;
}

// Exactly `n` bytes within `timeout`, or nullopt (closed or too slow).
std::optional<std::string> read_n(tcp::socket& s, std::size_t n,
                                  std::chrono::milliseconds timeout = 5s) {
  std::string got;
  auto until = std::chrono::steady_clock::now() + timeout;
  while (got.size() < n) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      until - std::chrono::steady_clock::now());
    if (left <= 0ms || !readable(s, left))
      return std::nullopt;
    char buf[65536];
    boost::system::error_code ec;
    auto k = s.read_some(net::buffer(buf, std::min(sizeof buf, n - got.size())),
                         ec);
    if (ec)
      return std::nullopt;
    got.append(buf, k);
  }
  return got;
}

// True when the other side closes `s` within `timeout` (whatever it sent
// before is discarded and counted in `extra`).
bool closed_within(tcp::socket& s, std::chrono::milliseconds timeout,
                   std::size_t* extra = nullptr) {
  auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      until - std::chrono::steady_clock::now());
    if (left <= 0ms || !readable(s, left))
      return false;
    char buf[65536];
    boost::system::error_code ec;
    auto k = s.read_some(net::buffer(buf), ec);
    if (ec)
      return true;
    if (extra)
      *extra += k;
  }
}

void send(tcp::socket& s, const std::string& bytes) {
  net::write(s, net::buffer(bytes));
}

// The middleman's stand-in and a guard in front of it.
struct GuardTest : ::testing::Test {
  net::io_context ioc;
  tcp::acceptor backend{ioc, {net::ip::make_address("127.0.0.1"), 0}};
  std::optional<basp_guard> guard;

  void start(basp_guard_limits limits = {}) {
    guard.emplace("127.0.0.1", 0, "127.0.0.1", backend.local_endpoint().port(),
                  limits);
  }

  // A peer's connection to the guard, and the guard's relay of it as the
  // middleman sees it.
  std::pair<tcp::socket, tcp::socket> connect() {
    tcp::socket peer{ioc};
    peer.connect({net::ip::make_address("127.0.0.1"), guard->port()});
    tcp::socket relayed{ioc};
    backend.accept(relayed);
    return {std::move(peer), std::move(relayed)};
  }
};

TEST_F(GuardTest, PassesWholeMessagesBothWaysByteForByte) {
  start();
  auto [peer, mm] = connect();
  auto hello = message(0, 40, 's'); // the middleman's server handshake
  send(mm, hello);
  EXPECT_EQ(read_n(peer, hello.size()), hello);
  // The client's handshake in dribbles, then a heartbeat and a message.
  auto hs = message(1, 300, 'h');
  send(peer, hs.substr(0, 5));
  std::this_thread::sleep_for(20ms);
  send(peer, hs.substr(5, 40));
  std::this_thread::sleep_for(20ms);
  auto rest = hs.substr(45) + message(6, 0) + message(2, 100'000, 'd');
  send(peer, rest);
  auto want = hs + message(6, 0) + message(2, 100'000, 'd');
  EXPECT_EQ(read_n(mm, want.size()), want);
  EXPECT_EQ(guard->stats().messages, 3u);
  EXPECT_EQ(guard->stats().rejected, 0u);
}

TEST_F(GuardTest, HoldsAMessageBackUntilItIsWhole) {
  start();
  auto [peer, mm] = connect();
  auto hs = message(1, 64, 'h');
  auto big = message(2, 200'000, 'b');
  send(peer, hs + big.substr(0, 150'000));
  EXPECT_EQ(read_n(mm, hs.size()), hs);
  EXPECT_FALSE(readable(mm, 300ms))
    << "a partial message reached the middleman";
  send(peer, big.substr(150'000));
  EXPECT_EQ(read_n(mm, big.size()), big);
}

TEST_F(GuardTest, ClosesBothSidesOnAForgedHeaderAndPassesNothingOfIt) {
  basp_guard_limits limits;
  limits.max_message = 1 << 20;
  limits.max_handshake = 4096;
  start(limits);
  struct forged {
    const char* what;
    bool after_handshake;
    std::string bytes;
  };
  const forged cases[] = {
    {"unknown operation", true, header(7, 0)},
    {"operation 255", true, header(255, 10)},
    {"server handshake from a peer", false, header(0, 10)},
    {"message before the handshake", false, message(2, 10)},
    {"heartbeat before the handshake", false, message(6, 0)},
    {"handshake over its limit", false, header(1, 4097)},
    {"4 GiB payload", true, header(2, 0xffffffffu)},
    {"1 GiB payload", true, header(3, 1u << 30)},
    {"payload one over the limit", true, header(2, (1u << 20) + 1)},
  };
  std::uint64_t rejected = 0;
  for (auto& c : cases) {
    SCOPED_TRACE(c.what);
    auto [peer, mm] = connect();
    std::string passed;
    if (c.after_handshake) {
      passed = message(1, 16, 'h');
      send(peer, passed);
      EXPECT_EQ(read_n(mm, passed.size()), passed);
    }
    send(peer, c.bytes + std::string(200, 'q'));
    std::size_t extra = 0;
    EXPECT_TRUE(closed_within(mm, 5s, &extra));
    EXPECT_EQ(extra, 0u) << "bytes of the forged message reached the middleman";
    EXPECT_TRUE(closed_within(peer, 5s));
    EXPECT_EQ(guard->stats().rejected, ++rejected);
  }
  // The guard goes on serving.
  auto [peer, mm] = connect();
  auto hs = message(1, 16);
  send(peer, hs);
  EXPECT_EQ(read_n(mm, hs.size()), hs);
}

TEST_F(GuardTest, AcceptsPayloadsUpToTheLimit) {
  basp_guard_limits limits;
  limits.max_message = 1 << 20;
  limits.max_handshake = 4096;
  start(limits);
  auto [peer, mm] = connect();
  auto want = message(1, 4096) + message(2, 1 << 20, 'x');
  send(peer, want);
  EXPECT_EQ(read_n(mm, want.size()), want);
}

TEST_F(GuardTest, ClosesAConnectionThatNeverCompletesItsHandshake) {
  basp_guard_limits limits;
  limits.handshake_timeout = 200ms;
  start(limits);
  auto [peer, mm] = connect();
  send(peer, header(1, 100)); // announces a handshake, never sends it
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(closed_within(peer, 5s));
  EXPECT_TRUE(closed_within(mm, 5s));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 150ms);
  EXPECT_EQ(guard->stats().rejected, 1u);
  // A handshake that completes in time keeps its connection past it.
  auto [peer2, mm2] = connect();
  auto hs = message(1, 8);
  send(peer2, hs);
  EXPECT_EQ(read_n(mm2, hs.size()), hs);
  EXPECT_FALSE(closed_within(peer2, 500ms));
}

TEST_F(GuardTest, RefusesConnectionsPastTheBound) {
  basp_guard_limits limits;
  limits.max_connections = 2;
  start(limits);
  auto a = connect();
  auto b = connect();
  tcp::socket third{ioc};
  third.connect({net::ip::make_address("127.0.0.1"), guard->port()});
  EXPECT_TRUE(closed_within(third, 5s));
  EXPECT_EQ(guard->stats().refused, 1u);
  EXPECT_EQ(guard->stats().accepted, 2u);
  // The two below the bound still work; closing one makes room.
  auto hs = message(1, 8);
  send(a.first, hs);
  EXPECT_EQ(read_n(a.second, hs.size()), hs);
  a.first.close();
  EXPECT_TRUE(closed_within(a.second, 5s));
  auto c = connect();
  send(c.first, hs);
  EXPECT_EQ(read_n(c.second, hs.size()), hs);
}

TEST_F(GuardTest, ThePeerClosingClosesTheRelayAndTheOtherWayRound) {
  start();
  auto [peer, mm] = connect();
  peer.close();
  EXPECT_TRUE(closed_within(mm, 5s));
  auto [peer2, mm2] = connect();
  mm2.close();
  EXPECT_TRUE(closed_within(peer2, 5s));
}

TEST_F(GuardTest, StopClosesEveryConnectionAndTheListener) {
  start();
  auto [peer, mm] = connect();
  auto port = guard->port();
  guard->stop();
  EXPECT_TRUE(closed_within(peer, 5s));
  EXPECT_TRUE(closed_within(mm, 5s));
  tcp::socket late{ioc};
  boost::system::error_code ec;
  late.connect({net::ip::make_address("127.0.0.1"), port}, ec);
  EXPECT_TRUE(ec) << "the guard still listens after stop";
  guard->stop(); // idempotent
}

TEST(BaspGuard, ThrowsWhenItCannotListen) {
  net::io_context ioc;
  tcp::acceptor taken{ioc, {net::ip::make_address("127.0.0.1"), 0}};
  taken.listen();
  // SO_REUSEADDR does not let two sockets listen on one port.
  EXPECT_THROW(basp_guard("127.0.0.1", taken.local_endpoint().port(),
                          "127.0.0.1", 1),
               std::runtime_error);
  EXPECT_THROW(basp_guard("127.0.0.1", 0, "not-an-ip", 1), std::runtime_error);
}

} // namespace
} // namespace dcbd
