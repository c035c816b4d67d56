// The cluster (DESIGN §4, API.md §9): the nodes of one database know each
// other over CAF's middleman and route projector management to the owner;
// PostgreSQL alone decides ownership (actors/projector.hpp).
//
//   configure_cluster(cfg, "shop");     // before the actor system exists
//   caf::actor_system sys{cfg};
//   ...
//   cluster_service cluster{sys, cc, store_cfg};
//   cluster.serve(projectors);          // forwards management, fast failover
//   cluster.members();                  // self and peers, up or unreachable
//
// Membership. Each node publishes one agent actor, reached on its explicit
// cluster address (never on every interface; `reuse_addr`, so a node
// restarted on the same port can listen at once) through a guard that
// passes the middleman only whole, well-formed BASP messages of bounded
// size (actors/basp_guard.hpp); the agent itself listens on the loopback
// interface. It dials its seeds and every node it
// learns of (from a peer's handshake, and from the membership table in
// PostgreSQL, store/pg_cluster.hpp) asynchronously, with a timeout: a node
// dials the addresses that sort after its own at once and the others only
// when they have not dialed it within a second, so two nodes rarely dial
// each other at the same moment (a race that costs a retry). The handshake
// (`hello`) carries the node's name, incarnation (random, one per process
// start), protocol version and middleman heartbeat settings; a peer with
// other settings, another cluster name or the same node name is refused
// (`dcb_cluster_handshakes_refused_total`). CAF's application identifier
// (`dcbd/<protocol>/<cluster>`) keeps foreign clusters out before that.
// Then each side monitors the other's agent: the middleman's heartbeats
// (500 ms, link dropped after 3 s of silence) turn a dead or frozen peer
// into a DOWN within milliseconds (killed) or about 3 s (frozen, cut off).
//
// A DOWN makes the peer "unreachable", never "dead": it stays in the list
// and is dialed again with backoff until it answers (a new incarnation
// replaces the old). Ownership changes only through PostgreSQL: a DOWN only
// makes the projector host try the peer's locks at once (`wake`) instead
// of at its next poll. A node that stops gracefully says goodbye and
// leaves the list.
//
// Routing. `GET /v1/projectors/...` reads the database on any node; pause,
// resume, rebuild and dead-letter retries are forwarded to the owner's
// agent, tagged with the epoch the sender saw; the owner refuses a stale
// epoch, and a call the owner cannot take is handled through the row.
//
// Not yet: the links are plaintext and unauthenticated (CAF's caf_openssl
// with a dedicated CA is the next step when traffic leaves the host);
// forwarding appends to a writer (`--dcbd.cluster-writer`) is opt-in because
// on the 2-core development machine neither it (0.69x) nor group commit on
// every node (0.55x) reached one node's appends/s (README, the cluster
// benchmark): measure it with a core per node before making it the default;
// commands (`engine::execute`) always append locally.
#pragma once

#include "actors/basp_guard.hpp"
#include "store/pg_config.hpp"

#include <caf/fwd.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace dcbd {

class engine;
class projector_host;

/// host:port of a cluster agent.
struct cluster_address {
  std::string host;
  std::uint16_t port = 0;

  /// "host:port" ("[v6]:port" for an IPv6 literal).
  std::string to_string() const;

  friend bool operator==(const cluster_address&, const cluster_address&)
    = default;
};

/// Parses "host:port" or "[v6]:port"; nullopt when malformed or the port is
/// 0.
std::optional<cluster_address> parse_cluster_address(const std::string& s);

/// Parses a comma-separated list of addresses (blanks ignored); nullopt
/// when an item is malformed.
std::optional<std::vector<cluster_address>>
parse_cluster_seeds(const std::string& s);

/// Version of the cluster protocol (messages and their fields). Nodes of
/// other versions do not link.
inline constexpr std::uint32_t cluster_protocol = 2;

/// Prepares an actor system configuration for the cluster, before the
/// system is made and before the command line is parsed (which may
/// override the settings; every node must then override them alike): loads
/// the middleman, registers the cluster's message types, sets heartbeats of
/// 500 ms with a 3 s connection timeout, turns automatic connections off
/// and sets the application identifier of `cluster_name`.
void configure_cluster(caf::actor_system_config& cfg,
                       const std::string& cluster_name);

/// The middleman's heartbeat interval and connection timeout as configured;
/// an error message when they cannot run a cluster (off, or a timeout not
/// longer than the interval).
std::optional<std::string>
check_cluster_settings(const caf::actor_system_config& cfg);

struct cluster_config {
  /// This node's name (unique in the cluster).
  std::string node;
  /// Where this node's agent listens; peers dial it there.
  cluster_address addr;
  /// Where to find the others (may include this node's own address).
  std::vector<cluster_address> seeds;
  /// This node's HTTP API (host:port), shown to others.
  std::string http;
  /// Nodes of other clusters are refused.
  std::string cluster_name = "dcbd";
  /// One dial: connect plus handshake.
  std::chrono::milliseconds connect_timeout{2000};
  /// Backoff between dials of an unreachable peer.
  std::chrono::milliseconds retry_min{200};
  std::chrono::milliseconds retry_max{2000};
  /// How long a node waits for a peer with a lower address to dial it
  /// before dialing that peer itself.
  std::chrono::milliseconds defer_dial{250};
  /// How often the agent looks for peers to dial.
  std::chrono::milliseconds tick{100};
  /// How often this node refreshes its membership row and reads the others.
  std::chrono::milliseconds refresh{2000};
  /// Rows older than this are not dialed.
  std::chrono::milliseconds forget{30'000};
  /// A forwarded management call.
  std::chrono::milliseconds call_timeout{10'000};
  /// The node whose store actor commits this node's appends while it is
  /// linked (`serve_appends`); empty or this node's name: none, appends
  /// stay local.
  std::string writer;
  /// Forwarded appends waiting for a batch or in flight to the writer, at
  /// most; past it appends stay local.
  std::size_t forward_window = 256;
  /// Batches of forwarded appends in flight to the writer, at most; what
  /// arrives meanwhile waits for the next batch.
  std::size_t forward_batches = 2;
  /// Appends per forwarded batch, at most.
  std::size_t forward_batch_max = 512;
  /// Bytes of one forwarded batch, about, at most (a batch holds at least
  /// one append); an append larger than this is appended locally. Keep it
  /// below the writer's `guard.max_message`.
  std::size_t forward_batch_bytes = std::size_t{16} << 20;
  /// The checks on what peers send to this node's cluster port
  /// (actors/basp_guard.hpp).
  basp_guard_limits guard{};
  /// A batch of `n` appends went to the writer (see
  /// `dcb_append_forward_batch_size`); runs on an actor's thread.
  std::function<void(std::size_t n)> on_forward_batch;
  /// How long a forwarded append waits for its answer before it fails with
  /// `unavailable` (it may or may not be committed).
  std::chrono::milliseconds forward_timeout{30'000};
  /// A forwarded append ended: "acked", "rejected", "unavailable" or
  /// "local" (see `dcb_appends_forwarded_total`); runs on an actor's
  /// thread.
  std::function<void(const std::string&)> on_forwarded;
  /// A peer's link went down (its name); runs on an actor's thread.
  std::function<void(const std::string&)> on_down;
  /// A handshake was refused (either side); runs on an actor's thread.
  std::function<void()> on_refused;
};

enum class member_status : std::uint8_t { up, unreachable };

/// Returns "up" or "unreachable".
const char* to_string(member_status s) noexcept;

/// A node as this node sees it.
struct cluster_member {
  std::string name;
  /// host:port of its agent.
  std::string addr;
  /// host:port of its HTTP API ("" when unknown).
  std::string http;
  /// Its process start ("" when never reached).
  std::string incarnation;
  member_status status = member_status::unreachable;
  bool self = false;
  /// Since when it has this status.
  std::chrono::system_clock::time_point since{};
};

/// One node's membership: its agent, the links to its peers, its row in
/// the membership table. Thread-safe.
class cluster_service {
public:
  /// Publishes the agent on `cfg.addr` and starts dialing. `db` is the
  /// store's database and schema (for the membership table). The actor
  /// system must have been configured with `configure_cluster`. Throws
  /// `store_error(invalid_argument)` when it cannot listen there.
  cluster_service(caf::actor_system& sys, cluster_config cfg, pg_config db);
  ~cluster_service();

  cluster_service(const cluster_service&) = delete;
  cluster_service& operator=(const cluster_service&) = delete;

  /// Routes `host`'s management calls to owners on other nodes, serves
  /// theirs, and wakes `host` when a peer goes down. `host` must outlive
  /// `stop()`.
  void serve(projector_host& host);

  /// Commits the appends peers forward to this node with `eng` (its
  /// store actor, never forwarded again), and, when `cluster_config::writer`
  /// names another node, sends `eng`'s appends to that node while it is
  /// linked (see the forwarding notes in actors/cluster.cpp). `eng` must
  /// outlive `stop()`.
  void serve_appends(engine& eng);

  /// Has `eng`'s store actor announce its commits to the buses of linked
  /// peers that are in this node's membership table (they share its
  /// database and schema), and hands `eng`'s bus to such peers for theirs,
  /// so the nodes follow each other's appends without reading them back
  /// (set `bus_config::feed_grace` so gaps wait for them). `eng` must
  /// outlive `stop()`.
  void share_commits(engine& eng);

  /// This node (first) and every peer it knows, by name.
  std::vector<cluster_member> members() const;

  /// This process start's incarnation.
  const std::string& incarnation() const;

  /// The port the agent listens on.
  std::uint16_t port() const;

  /// Says goodbye to the peers, deletes this node's row, stops the agent;
  /// idempotent.
  void stop();

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

} // namespace dcbd
