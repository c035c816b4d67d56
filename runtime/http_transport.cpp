// The transport's entry points: the accept loop, the I/O threads (which
// survive whatever a handler throws), graceful stop, and `responder`, the
// application's handle on a session (runtime/http_session.hpp).
#include "runtime/http_transport.hpp"

#include "runtime/http_session.hpp"

namespace dcbd::http {

// -- responder ----------------------------------------------------------------

responder::responder(std::shared_ptr<session> s)
  : s_(std::move(s))
  , serial_(s_->serial_.load()) {
  // nop
}

const request& responder::req() const {
  return s_->req();
}

clock::time_point responder::started() const {
  return s_->started();
}

const std::string& responder::remote() const {
  return s_->remote();
}

bool responder::stopping() const {
  return s_->stopping();
}

void responder::respond(response res) const {
  s_->respond(serial_, std::move(res));
}

std::shared_ptr<chunk_writer>
responder::respond_chunked(response_head head) const {
  return s_->respond_chunked(serial_, std::move(head));
}

bool responder::is_websocket_upgrade() const {
  return s_->is_websocket_upgrade();
}

std::shared_ptr<websocket>
responder::accept_websocket(websocket_handlers h) const {
  return s_->accept_websocket(serial_, std::move(h));
}

void responder::post(std::function<void()> f) const {
  s_->post(std::move(f));
}

void responder::set_deadline(std::chrono::milliseconds after,
                             std::function<void()> on_expiry) const {
  s_->set_deadline(serial_, after, std::move(on_expiry));
}

// -- transport ----------------------------------------------------------------

void core::accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec,
                                                      tcp::socket socket) {
    if (stopping || ec == net::error::operation_aborted)
      return;
    if (ec) {
      // Out of descriptors, say: log, wait a little, carry on.
      log_error("accept", ec.message());
      accept_retry.expires_after(std::chrono::milliseconds{100});
      accept_retry.async_wait([this](beast::error_code) {
        if (!stopping)
          accept();
      });
      return;
    }
    guarded("accept", [&] {
      beast::error_code ignored;
      socket.set_option(tcp::no_delay{true}, ignored);
      auto s = std::make_shared<session>(*this, std::move(socket));
      {
        std::lock_guard<std::mutex> guard{mtx};
        std::erase_if(sessions, [](auto& w) {
          return w.expired();
        });
        sessions.push_back(s);
      }
      s->start();
    });
    accept();
  });
}

http_transport::http_transport(const http_config& cfg,
                               transport_handlers handlers)
  : core_(std::make_unique<core>(cfg, std::move(handlers))) {
  auto& d = *core_;
  auto endpoint = tcp::endpoint{net::ip::make_address(d.cfg.address),
                                d.cfg.port};
  d.acceptor.open(endpoint.protocol());
  d.acceptor.set_option(net::socket_base::reuse_address(true));
  d.acceptor.bind(endpoint);
  d.acceptor.listen(net::socket_base::max_listen_connections);
  d.accept();
  for (std::size_t i = 0; i < std::max<std::size_t>(d.cfg.threads, 1); ++i)
    d.threads.emplace_back([&d] {
      // An exception out of a handler must not end the I/O thread.
      for (;;) {
        try {
          d.ioc.run();
          return;
        } catch (const std::exception& e) {
          log_error("I/O thread", e.what());
        } catch (...) {
          log_error("I/O thread", "unknown exception");
        }
      }
    });
}

http_transport::~http_transport() {
  stop(std::chrono::milliseconds{0});
}

std::uint16_t http_transport::port() const {
  return core_->acceptor.local_endpoint().port();
}

boost::asio::io_context& http_transport::context() {
  return core_->ioc;
}

void http_transport::stop(std::chrono::milliseconds grace) {
  auto& d = *core_;
  if (d.stopped)
    return;
  d.stopped = true;
  d.stopping = true;
  net::post(d.acceptor.get_executor(), [&d] {
    beast::error_code ignored;
    d.acceptor.close(ignored);
    d.accept_retry.cancel();
  });
  std::unique_lock<std::mutex> lock{d.mtx};
  d.cv.wait_for(lock, grace, [&d] {
    return d.in_flight == 0;
  });
  // Idle connections and whatever outlived the grace period are closed;
  // calls still running end on their own (the engine answers every call
  // within its timeout), and their sessions with them.
  auto open = d.sessions;
  lock.unlock();
  for (auto& w : open)
    if (auto s = w.lock())
      s->close();
  lock.lock();
  d.cv.wait(lock, [&d] {
    return d.live_sessions == 0;
  });
  lock.unlock();
  d.ioc.stop();
  for (auto& t : d.threads)
    t.join();
}

} // namespace dcbd::http
