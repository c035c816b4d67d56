#include "store/pg_listener.hpp"

#include "store/pg_internal.hpp"
#include "store/pg_store.hpp"

#include <pqxx/connection>
#include <pqxx/notification>

#include <charconv>
#include <iostream>

namespace dcbd {

namespace {

// Hands each notification's payload (the head, as text) to the handler.
class receiver final : public pqxx::notification_receiver {
public:
  receiver(pqxx::connection_base& conn, const std::string& channel,
           std::function<void(std::uint64_t)> on_head)
    : pqxx::notification_receiver(conn, channel)
    , on_head_(std::move(on_head)) {
    // nop
  }

  void operator()(const std::string& payload, int) override {
    std::uint64_t head = 0;
    auto [ptr, ec] = std::from_chars(payload.data(),
                                     payload.data() + payload.size(), head);
    // A payload that is no head still means "something was committed".
    if (ec != std::errc{} || ptr != payload.data() + payload.size())
      head = 0;
    on_head_(head);
  }

private:
  std::function<void(std::uint64_t)> on_head_;
};

} // namespace

pg_listener::pg_listener(pg_config cfg, wake_handler on_wake)
  : cfg_(std::move(cfg))
  , on_wake_(std::move(on_wake)) {
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
  auto channel = notify_channel(cfg_.schema);
  while (!stopping()) {
    try {
      pqxx::connection conn{cfg_.dsn};
      receiver r{conn, channel, [this](std::uint64_t head) {
                   ++received_;
                   on_wake_(head);
                 }};
      // LISTEN is in place: wake the caller for whatever came before.
      ++opened_;
      pid_ = conn.backendpid();
      backoff = 100ms;
      on_wake_(0);
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
