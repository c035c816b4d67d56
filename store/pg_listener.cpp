#include "store/pg_listener.hpp"

#include "store/pg_internal.hpp"
#include "store/pg_store.hpp"

#include <pqxx/connection>
#include <pqxx/notification>

#include <charconv>
#include <iostream>

namespace dcbd {

namespace {

// Hands each notification's payload to the handler.
class receiver final : public pqxx::notification_receiver {
public:
  receiver(pqxx::connection_base& conn, const std::string& channel,
           std::function<void(const std::string&)> on_payload)
    : pqxx::notification_receiver(conn, channel)
    , on_payload_(std::move(on_payload)) {
    // nop
  }

  void operator()(const std::string& payload, int) override {
    on_payload_(payload);
  }

private:
  std::function<void(const std::string&)> on_payload_;
};

} // namespace

pg_listener::pg_listener(pg_config cfg, wake_handler on_wake)
  : pg_listener(
    cfg, notify_channel(cfg.schema),
    [on_wake = std::move(on_wake)](const std::string& payload) {
      std::uint64_t head = 0;
      auto [ptr, ec] = std::from_chars(payload.data(),
                                       payload.data() + payload.size(), head);
      // A payload that is no head still means "something was
      // committed" (and "" means "reconnected").
      if (ec != std::errc{} || ptr != payload.data() + payload.size())
        head = 0;
      on_wake(head);
    }) {
  // nop
}

pg_listener::pg_listener(pg_config cfg, std::string channel,
                         payload_handler on_payload)
  : cfg_(std::move(cfg))
  , channel_(std::move(channel))
  , on_payload_(std::move(on_payload)) {
  pg::check_schema_name(cfg_.schema);
  thread_ = std::thread{[this] {
    run();
  }};
}

pg_listener::~pg_listener() {
  {
    std::lock_guard guard{mtx_};
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void pg_listener::sleep_for(std::chrono::milliseconds d) {
  std::unique_lock guard{mtx_};
  cv_.wait_for(guard, d, [this] {
    return stop_;
  });
}

void pg_listener::run() {
  using namespace std::chrono_literals;
  auto backoff = std::chrono::milliseconds{100};
  auto stopping = [this] {
    std::lock_guard guard{mtx_};
    return stop_;
  };
  while (!stopping()) {
    try {
      pqxx::connection conn{cfg_.dsn};
      receiver r{conn, channel_, [this](const std::string& payload) {
                   ++received_;
                   on_payload_(payload);
                 }};
      // LISTEN is in place: wake the caller for whatever came before.
      ++opened_;
      pid_ = conn.backendpid();
      backoff = 100ms;
      on_payload_(std::string{});
      auto slice
        = std::chrono::duration_cast<std::chrono::microseconds>(wait_slice);
      while (!stopping()) {
        // Throws broken_connection when the backend goes away.
        conn.await_notification(0, static_cast<long>(slice.count()));
      }
    } catch (const std::exception& e) {
      if (pid_.exchange(0) != 0)
        std::cerr << "dcbd listener: LISTEN connection lost: " << e.what()
                  << std::endl;
    }
    pid_ = 0;
    if (stopping())
      break;
    sleep_for(backoff);
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, 5s);
  }
}

} // namespace dcbd
