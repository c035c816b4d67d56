#include "actors/basp_guard.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <array>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <unordered_set>
#include <vector>

namespace dcbd {

namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

// BASP 0.17 operations (caf/io/basp/message_type.hpp).
constexpr unsigned char server_handshake = 0x00;
constexpr unsigned char client_handshake = 0x01;
constexpr unsigned char last_operation = 0x06; // heartbeat

constexpr std::size_t chunk = std::size_t{64} << 10;

std::uint32_t payload_length(const unsigned char* h) {
  return (std::uint32_t{h[4]} << 24) | (std::uint32_t{h[5]} << 16)
         | (std::uint32_t{h[6]} << 8) | std::uint32_t{h[7]};
}

} // namespace

struct basp_guard::impl {
  struct relay;
  // Declared before the context: relays leave it when they are destroyed.
  std::unordered_set<relay*> live; // on the guard's thread
  net::io_context ioc{1};
  net::executor_work_guard<net::io_context::executor_type> work{
    ioc.get_executor()};
  tcp::acceptor acceptor{ioc};
  tcp::endpoint backend;
  basp_guard_limits limits;
  std::uint16_t port = 0;
  std::thread thread;
  bool stopped = false; // on the guard's thread
  std::atomic<bool> stop_called{false};

  std::atomic<std::uint64_t> accepted{0}, refused{0}, rejected{0}, messages{0};

  void accept();
};

// One peer connection and its relay to the middleman. Peer to middleman:
// read into `in`, pass the longest prefix of whole, checked messages, read
// on. Middleman to peer: copied as it comes.
struct basp_guard::impl::relay : std::enable_shared_from_this<relay> {
  impl& g;
  tcp::socket peer;
  tcp::socket backend;
  net::steady_timer handshake_timer;
  std::vector<unsigned char> in; // [0, filled): received, not yet passed
  std::size_t filled = 0;
  std::size_t checked = 0; // [0, checked): whole messages, checked
  bool handshaken = false;
  bool closed = false;
  std::array<unsigned char, chunk> out;

  relay(impl& guard, tcp::socket s)
    : g(guard)
    , peer(std::move(s))
    , backend(guard.ioc)
    , handshake_timer(guard.ioc) {
    g.live.insert(this);
  }

  ~relay() {
    g.live.erase(this);
  }

  void start() {
    auto self = shared_from_this();
    handshake_timer.expires_after(g.limits.handshake_timeout);
    handshake_timer.async_wait([self](boost::system::error_code ec) {
      if (!ec && !self->handshaken) {
        ++self->g.rejected;
        self->close();
      }
    });
    backend.async_connect(g.backend, [self](boost::system::error_code ec) {
      if (ec)
        return self->close();
      boost::system::error_code ignored;
      self->backend.set_option(tcp::no_delay{true}, ignored);
      self->read_peer();
      self->read_backend();
    });
  }

  void close() {
    if (closed)
      return;
    closed = true;
    boost::system::error_code ignored;
    peer.close(ignored);
    backend.close(ignored);
    handshake_timer.cancel();
  }

  void read_peer() {
    if (closed)
      return;
    if (in.size() < filled + chunk)
      in.resize(filled + chunk);
    auto self = shared_from_this();
    peer.async_read_some(net::buffer(in.data() + filled, chunk),
                         [self](boost::system::error_code ec, std::size_t n) {
                           if (ec)
                             return self->close();
                           self->filled += n;
                           self->on_peer_bytes();
                         });
  }

  // Checks the messages that are now whole; passes them on, or reads more.
  void on_peer_bytes() {
    while (filled - checked >= header_size) {
      const unsigned char* h = in.data() + checked;
      auto op = h[0];
      std::size_t len = payload_length(h);
      bool handshake = op == client_handshake;
      bool ok = op <= last_operation && op != server_handshake
                && (handshaken || handshake)
                && len <= (handshake ? g.limits.max_handshake
                                     : g.limits.max_message);
      if (!ok) {
        ++g.rejected;
        return close();
      }
      if (filled - checked < header_size + len)
        break;
      checked += header_size + len;
      ++g.messages;
      if (handshake && !handshaken) {
        handshaken = true;
        handshake_timer.cancel();
      }
    }
    if (checked == 0)
      return read_peer();
    auto self = shared_from_this();
    net::async_write(backend, net::buffer(in.data(), checked),
                     [self](boost::system::error_code ec, std::size_t) {
                       if (ec)
                         return self->close();
                       self->passed();
                     });
  }

  // Drops what went to the middleman, keeps the partial message after it.
  void passed() {
    std::size_t rest = filled - checked;
    if (rest > 0)
      std::memmove(in.data(), in.data() + checked, rest);
    filled = rest;
    checked = 0;
    // A large message's buffer is not kept for the small ones after it.
    if (filled == 0 && in.capacity() > 4 * chunk)
      std::vector<unsigned char>{}.swap(in);
    on_peer_bytes();
  }

  void read_backend() {
    if (closed)
      return;
    auto self = shared_from_this();
    backend.async_read_some(
      net::buffer(out), [self](boost::system::error_code ec, std::size_t n) {
        if (ec)
          return self->close();
        net::async_write(self->peer, net::buffer(self->out.data(), n),
                         [self](boost::system::error_code wec, std::size_t) {
                           if (wec)
                             return self->close();
                           self->read_backend();
                         });
      });
  }
};

void basp_guard::impl::accept() {
  acceptor.async_accept([this](boost::system::error_code ec, tcp::socket s) {
    if (stopped)
      return;
    if (!ec) {
      if (live.size() >= limits.max_connections) {
        ++refused;
        boost::system::error_code ignored;
        s.close(ignored);
      } else {
        ++accepted;
        boost::system::error_code ignored;
        s.set_option(tcp::no_delay{true}, ignored);
        std::make_shared<relay>(*this, std::move(s))->start();
      }
    }
    // Errors such as too many open files: keep accepting.
    accept();
  });
}

basp_guard::basp_guard(const std::string& listen_host,
                       std::uint16_t listen_port,
                       const std::string& backend_host,
                       std::uint16_t backend_port, basp_guard_limits limits)
  : impl_(std::make_shared<impl>()) {
  auto& d = *impl_;
  d.limits = limits;
  boost::system::error_code ec;
  auto backend_ip = net::ip::make_address(backend_host, ec);
  if (ec)
    throw std::runtime_error("cluster guard: backend " + backend_host
                             + " is no IP address");
  d.backend = tcp::endpoint{backend_ip, backend_port};
  tcp::resolver resolver{d.ioc};
  auto found = resolver.resolve(listen_host, std::to_string(listen_port),
                                tcp::resolver::passive, ec);
  if (ec || found.empty())
    throw std::runtime_error("cluster guard: cannot resolve " + listen_host
                             + ": " + ec.message());
  auto ep = found.begin()->endpoint();
  d.acceptor.open(ep.protocol(), ec);
  if (!ec)
    d.acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec)
    d.acceptor.bind(ep, ec);
  if (!ec)
    d.acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    throw std::runtime_error("cluster guard: cannot listen on " + listen_host
                             + ":" + std::to_string(listen_port) + ": "
                             + ec.message());
  d.port = d.acceptor.local_endpoint().port();
  d.accept();
  d.thread = std::thread{[&d] {
    d.ioc.run();
  }};
}

basp_guard::~basp_guard() {
  stop();
}

std::uint16_t basp_guard::port() const {
  return impl_->port;
}

basp_guard_stats basp_guard::stats() const {
  auto& d = *impl_;
  return {d.accepted.load(), d.refused.load(), d.rejected.load(),
          d.messages.load()};
}

void basp_guard::stop() {
  auto& d = *impl_;
  if (d.stop_called.exchange(true))
    return;
  net::post(d.ioc, [&d] {
    d.stopped = true;
    boost::system::error_code ignored;
    d.acceptor.close(ignored);
    std::vector<impl::relay*> all(d.live.begin(), d.live.end());
    for (auto* r : all)
      r->close();
  });
  d.work.reset();
  if (d.thread.joinable())
    d.thread.join();
}

} // namespace dcbd
