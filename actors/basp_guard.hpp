// The cluster port's front door: checks every message a peer sends before
// CAF's middleman reads it.
//
//   basp_guard g{{"10.0.0.5", 7401}, {"127.0.0.1", published_port}, limits};
//   g.port();   // where peers dial
//   g.stop();   // closes the door and every connection through it
//
// CAF 0.17's middleman trusts the 32-byte BASP header: it sets aside a
// buffer as large as the payload length the header announces (up to 4 GiB)
// before a byte of it has arrived, and it reads on its one multiplexer
// thread. A forged header on the cluster port therefore stalled the
// middleman for seconds and grew the node by hundreds of MiB (README,
// Cluster, "Security"). The guard listens on the cluster address and relays
// each connection to the agent, which is published on the loopback
// interface only. Towards the middleman it passes whole messages only, and
// only valid ones:
// - the header's operation is one BASP 0.17 knows (0 to 6), and the first
//   message of a connection is the client's handshake (a peer that dials us
//   is the client);
// - the announced payload is at most `max_message` bytes (`max_handshake`
//   for handshakes), and the guard buffers it as it arrives: memory grows
//   with bytes actually received, never with what a header claims;
// - the handshake completes within `handshake_timeout`;
// - at most `max_connections` connections at once.
// Anything else closes the connection (and its relay to the middleman,
// which sees an ordinary disconnect); the rest of the node never notices.
// What the middleman sends back is relayed as it is. Messages on a
// connection this node dialed come straight from the peer's guard, not
// through this one. The checks are framing only: BASP is still plaintext
// and unauthenticated (keep the port on a private network).
//
// Plain Boost.Asio on one thread of its own, no CAF.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace dcbd {

struct basp_guard_limits {
  /// Largest payload of one message, in bytes.
  std::size_t max_message = std::size_t{256} << 20;
  /// Largest handshake payload (node id, application identifiers, the
  /// published actor's interface).
  std::size_t max_handshake = std::size_t{64} << 10;
  /// From accept to the end of the client's handshake.
  std::chrono::milliseconds handshake_timeout{10'000};
  /// Connections relayed at once; past it new ones are closed at once.
  std::size_t max_connections = 256;
};

/// What the guard has done since it started (for tests and logs).
struct basp_guard_stats {
  std::uint64_t accepted = 0;
  std::uint64_t refused = 0;  // over max_connections
  std::uint64_t rejected = 0; // closed for a bad header or a slow handshake
  std::uint64_t messages = 0; // passed to the middleman
};

class basp_guard {
public:
  /// Listens on `listen_host:listen_port` (port 0: any) and relays to
  /// `backend_host:backend_port`. Throws std::runtime_error when it cannot
  /// listen.
  basp_guard(const std::string& listen_host, std::uint16_t listen_port,
             const std::string& backend_host, std::uint16_t backend_port,
             basp_guard_limits limits = {});
  ~basp_guard();

  basp_guard(const basp_guard&) = delete;
  basp_guard& operator=(const basp_guard&) = delete;

  /// The port it listens on.
  std::uint16_t port() const;

  basp_guard_stats stats() const;

  /// Stops listening and closes every relayed connection; idempotent.
  void stop();

  /// The BASP 0.17 header: 32 bytes in network byte order.
  static constexpr std::size_t header_size = 32;

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

} // namespace dcbd
