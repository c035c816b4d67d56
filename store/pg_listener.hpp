// Follows a schema's NOTIFY channel on a dedicated connection, so a node
// learns of commits made by other processes on the same database (the store
// sends `pg_notify(channel, head)` in every append transaction).
//
//   pg_listener l{cfg, [](std::uint64_t head) { /* wake the bus */ }};
//
// A notification only wakes the caller; it is no source of truth. PostgreSQL
// drops notifications while the listening connection is down, so after
// every (re)connect `on_wake` runs with head 0 ("something may have been
// missed"), and a caller must poll as well. The connection is reopened with
// exponential backoff (100 ms doubling to 5 s) for as long as it runs.
#pragma once

#include "store/pg_config.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace dcbd {

/// A thread with one connection that LISTENs on `notify_channel(schema)`.
class pg_listener {
public:
  /// Called on the listener's thread with the head a notification carried
  /// (0 after a (re)connect). Keep it short; it must not throw.
  using wake_handler = std::function<void(std::uint64_t head)>;

  /// Starts listening at once (in the background; a database that is down
  /// is retried, not reported).
  pg_listener(pg_config cfg, wake_handler on_wake);

  /// Called on the listener's thread with a notification's payload ("" after
  /// a (re)connect). Keep it short; it must not throw.
  using payload_handler = std::function<void(const std::string& payload)>;

  /// Listens on `channel` instead (e.g. the job queues' channel).
  pg_listener(pg_config cfg, std::string channel, payload_handler on_payload);

  /// Stops and joins (within about `wait_slice`).
  ~pg_listener();

  pg_listener(const pg_listener&) = delete;
  pg_listener& operator=(const pg_listener&) = delete;

  /// Whether the LISTEN connection is up.
  bool connected() const noexcept {
    return pid_.load() != 0;
  }

  /// The server process id of the LISTEN connection (0 while it is down),
  /// e.g. for `pg_terminate_backend` in a test.
  int backend_pid() const noexcept {
    return pid_.load();
  }

  /// Connections opened after the first one.
  std::uint64_t reconnects() const noexcept {
    auto n = opened_.load();
    return n > 0 ? n - 1 : 0;
  }

  /// Notifications received.
  std::uint64_t notifications() const noexcept {
    return received_.load();
  }

  /// How long one wait for a notification lasts before the thread looks at
  /// its stop flag again.
  static constexpr std::chrono::milliseconds wait_slice{200};

private:
  void run();
  void sleep_for(std::chrono::milliseconds d);

  pg_config cfg_;
  std::string channel_;
  payload_handler on_payload_;
  std::atomic<int> pid_{0};
  std::atomic<std::uint64_t> opened_{0};
  std::atomic<std::uint64_t> received_{0};
  std::mutex mtx_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

} // namespace dcbd
