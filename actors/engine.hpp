// The embedding API: a store actor, a reader pool and an appender pool on an
// actor system you own, with blocking and asynchronous calls.
//
//   caf::actor_system_config cfg;
//   dcbd::register_types(cfg);
//   caf::actor_system sys{cfg};
//   dcbd::engine eng{sys, {.store = {.dsn = "host=..."}}};
//   auto ack = eng.append({event}, std::nullopt);      // blocks
//   eng.execute(cmd, [](caf::expected<dcbd::command_outcome> r) { ... });
//
// Blocking calls wait at most `engine_config::timeout`; make them from your
// own threads, never from an actor's or a node's HTTP threads (they wait for
// answers those threads give: a read index a node leads on its HTTP loop, a
// reply from an actor). Asynchronous calls run their callback once, on an
// actor thread; keep callbacks short. Errors are `caf::error`s in the "dcbd"
// category (see `code_of` and `message_of`).
#pragma once

#include "actors/appender_protocol.hpp"
#include "actors/bus_protocol.hpp"
#include "actors/reader_protocol.hpp"
#include "actors/store_protocol.hpp"
#include "store/decision.hpp"
#include "store/event_cache.hpp"
#include "store/pg_replica.hpp"
#include "store/pg_store.hpp"
#include "store/read_index.hpp"

#include <caf/actor.hpp>
#include <caf/expected.hpp>
#include <caf/fwd.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

namespace dcbd {

/// Everything an engine needs; the defaults suit a small node.
struct engine_config {
  /// PostgreSQL: DSN, schema, input limits. `pool_size` is ignored: the store
  /// actor and each reader open their own connections.
  pg_config store;
  /// Makes the stores behind the actors: once for the store actor (2
  /// connections) and once per reader (`reader_connections`), again when a
  /// reader is replaced. Empty (the default): a `pg_event_store` on `store`.
  /// An in-memory engine returns one shared `memory_event_store` each time.
  std::function<std::shared_ptr<event_store>(std::size_t connections)>
    store_factory;
  /// Detached readers, each with `reader_connections` connections.
  std::size_t readers = 4;
  std::size_t reader_connections = 1;
  /// Scheduled appenders (they never block; one per core is plenty).
  std::size_t appenders = 2;
  /// Group commit and queue bounds.
  group_limits group;
  /// Reader settings (`limits` is taken from `store.limits`).
  reader_config reader;
  /// Projections and decisions per command, retries included.
  std::uint32_t max_attempts = 10;
  /// Timeout of one call, for blocking calls and between actors.
  std::chrono::milliseconds timeout{30'000};
  /// Store hooks (group size, latency, results); may be null.
  std::shared_ptr<store_metrics> metrics;
  /// The event bus (`limits` and `read_timeout` are taken from `store` and
  /// `timeout`).
  bus_config bus;
  /// Follow commits of other processes through LISTEN (PostgreSQL only; the
  /// bus polls besides).
  bool listen = true;
  /// The event cache (store/event_cache.hpp): at most about this many bytes
  /// of the most recent events in memory, serving reads, streams and
  /// decision models; 0 turns it off.
  std::size_t cache_bytes = std::size_t{256} << 20;
  /// How long a read waits for the cache to reach its read index before it
  /// reads from the database instead.
  std::chrono::milliseconds cache_wait{50};
  /// The read lease (store/pg_lease.hpp): its term, 0 (the default) to take
  /// none. A node that holds it answers reads from the cache (or the
  /// standby) with no query of the head; another writer's commit waits up
  /// to a term for it. For a node that is its schema's only writer. Needs
  /// the cache or a standby and the PostgreSQL store.
  std::chrono::milliseconds read_lease{0};
  /// How long nobody else must have committed before the lease is taken.
  std::chrono::milliseconds read_lease_quiet{5000};
  /// A PostgreSQL streaming-replication standby of `store` for the readers
  /// (reads, streams, decision models, and the bus's reads that feed the
  /// cache and catch subscribers and projectors up), kept linearizable
  /// (store/pg_replica.hpp). Empty `replica.dsn` (the default): every read
  /// goes to the primary, as without this field.
  replica_config replica;
};

/// How a subscription is delivered.
struct subscribe_options {
  /// Events handed out and not yet consumed, at most.
  std::uint32_t credit = 1024;
  /// A heartbeat item this often, busy or idle (0: none).
  std::chrono::milliseconds heartbeat{0};
  /// The caller grants credit itself with `subscription::grant` (for a
  /// consumer whose own peer grants credit, like a WebSocket client);
  /// `ack(true)` then grants nothing, and `credit` may be 0.
  bool manual_credit = false;
};

/// A live subscription; copies name the same one. `cancel` ends it (its end
/// handler then runs with code none).
class subscription {
public:
  subscription() = default;

  /// Ends the subscription; harmless when it has ended. Thread-safe.
  void cancel() const;

  /// Lets `n` more events go out (see `subscribe_options::manual_credit`).
  void grant(std::uint32_t n) const;

  std::uint64_t id() const noexcept {
    return id_;
  }

  explicit operator bool() const noexcept {
    return id_ != 0;
  }

private:
  friend class engine;
  subscription(bus_actor bus, std::uint64_t id)
    : bus_(std::move(bus))
    , id_(id) {
    // nop
  }

  bus_actor bus_;
  std::uint64_t id_ = 0;
};

/// Owns the actors of one node's event store. Not copyable; destroying it
/// stops the actors (after the calls in flight are answered). Thread-safe.
class engine {
public:
  /// Connects (installing the schema) and spawns the actors. Throws
  /// `store_error` when PostgreSQL is unreachable for `connect_timeout`.
  engine(caf::actor_system& sys, engine_config cfg);

  ~engine();

  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  // -- actor handles ---------------------------------------------------------

  /// The store actor (group commit). Prefer `appenders()` for appends: they
  /// validate and apply admission control.
  store_actor store() const;

  /// The appender pool. A pool hands each message to its next worker in
  /// turn; the worker answers the caller. It replaces workers that die, and
  /// while it has none (the database is down) it answers `unavailable`.
  appender_actor appenders() const;

  /// The reader pool; see `appenders()`.
  reader_actor readers() const;

  /// Admission control in front of the store actor.
  const std::shared_ptr<store_gate>& gate() const;

  /// The event bus.
  bus_actor bus() const;

  /// The configuration it runs with.
  const engine_config& config() const;

  /// The server process id of the bus's LISTEN connection (0 when there is
  /// none or it is down).
  int listener_pid() const;

  /// The event cache, or null when it is off.
  std::shared_ptr<event_cache> cache() const;

  /// The read index of reads from the cache, or null when it is off (e.g.
  /// for `read_index::lead_with`).
  std::shared_ptr<read_index> index() const;

  /// The read index's counters (all zero when neither the cache nor a
  /// replica is on).
  read_index_stats index_stats() const;

  /// A read answered from the event cache without the actors, the way
  /// HTTP reads try first. On the thread `run` gives (e.g. a connection's
  /// strand), or before this call returns when a held read lease gives the
  /// read index at once, `each` gets the events in the read's order, straight
  /// from memory (under the cache's read lock: format them, do not call back),
  /// then `done` the head and count; or `done` gets nothing when the cache
  /// cannot answer whole right away (off, behind the read index, the range
  /// not in memory, more than `max_events` events, input the store
  /// refuses): then drop what `each` made and read the usual way, which
  /// waits, reads the database and reports errors. Linearizable as every
  /// read: the answer's head is at least a read index taken after this
  /// call, a query shared with every read waiting for one then.
  void
  read_from_cache(query q, read_options options, std::size_t max_events,
                  std::function<void(std::function<void()>)> run,
                  std::function<void(const sequenced_event&)> each,
                  std::function<void(std::optional<cache_answer>)> done) const;

  /// The standby's counters (all zero without `replica.dsn`).
  replica_stats replica() const;

  // -- blocking calls --------------------------------------------------------

  /// Appends the request's events if its condition holds; nothing is
  /// written when it is invalid. Takes the path of `append_unbounded` and
  /// waits at most `engine_config::timeout` (then `unavailable`: the append
  /// may still be committed later).
  caf::expected<append_ack> append(append_request req);

  /// Appends `events` if `condition` holds.
  caf::expected<append_ack>
  append(std::vector<event> events,
         std::optional<append_condition> condition = std::nullopt) {
    return append(append_request{std::move(events), std::move(condition)});
  }

  /// Reads a bounded result (see `reader_config::max_read_events`). When
  /// the cache can answer whole, on the calling thread after a read index
  /// (no actor in between); otherwise through the readers.
  caf::expected<read_result> read(query q, read_options options = {});

  /// Streams the events matching `q` chunk by chunk into `on_chunk`, with at
  /// most `window` chunks in flight. Returns the snapshot head.
  caf::expected<stream_summary>
  stream(query q, read_options options, const chunk_handler& on_chunk,
         std::uint32_t window = 4, stream_options chunking = {});

  /// Projects a decision model. When the cache holds the whole log, on the
  /// calling thread after a read index (the `apply` functions run there, on
  /// copies of the cached events); otherwise through the readers.
  caf::expected<projection> project(std::vector<projector> projectors);

  /// Runs a command (project, decide, append, retry on conflict) on the
  /// path of `execute_unbounded`, waiting at most `engine_config::timeout`
  /// (then `unavailable`: its append may still be committed later).
  caf::expected<command_outcome> execute(command cmd);

  /// Position of the last committed event.
  caf::expected<std::uint64_t> head();

  /// The store actor's counters.
  caf::expected<store_stats> stats();

  /// The bus's counters.
  caf::expected<dcbd::bus_stats> bus_stats();

  // -- asynchronous calls ----------------------------------------------------

  void append(append_request req,
              std::function<void(caf::expected<append_ack>)> done);

  void append(std::vector<event> events,
              std::optional<append_condition> condition,
              std::function<void(caf::expected<append_ack>)> done) {
    append(append_request{std::move(events), std::move(condition)},
           std::move(done));
  }

  /// Appends on the shortest path: validates on the calling thread, admits
  /// through `gate()` and hands the append straight to the store actor with
  /// `done` (no appender, no CAF request, no CAF timer). `done` runs once:
  /// at once on the calling thread when the request is invalid
  /// (invalid_argument) or the queue is full (overloaded); otherwise on the
  /// store actor's thread after the group commit, so keep it short. There is
  /// no timeout: bound the wait yourself (the HTTP routes run a timer on the
  /// connection, the blocking `append` a bounded wait), and let `done` cope
  /// with an answer that comes after you gave up.
  void append_unbounded(append_request req,
                        std::function<void(caf::expected<append_ack>)> done);

  /// Like `append_unbounded`, but always through this node's store actor,
  /// never through the route (for appends that came from another node).
  void append_local(append_request req,
                    std::function<void(caf::expected<append_ack>)> done);

  /// Where `append_unbounded` sends a valid append instead of this node's
  /// store actor (a cluster's writer, actors/cluster.hpp). It gets the
  /// validated request and `done`; it returns false to leave both alone
  /// (the append then goes to this node's store actor), true when it took
  /// them (it then calls `done` once).
  using append_route = std::function<bool(
    append_request&, std::function<void(caf::expected<append_ack>)>&)>;

  /// Sets the route (empty: none). Thread-safe.
  void set_append_route(append_route route);

  void read(query q, read_options options,
            std::function<void(caf::expected<read_result>)> done);

  void head(std::function<void(caf::expected<std::uint64_t>)> done);

  /// Streams into `on_chunk` (called on an actor thread, one chunk at a
  /// time); `done` runs once at the end.
  void stream(query q, read_options options, chunk_handler on_chunk,
              std::function<void(caf::expected<stream_summary>)> done,
              std::uint32_t window = 4, stream_options chunking = {});

  /// Streams into `on_chunk`, which acknowledges each chunk when it is done
  /// with it (for example once it is written to a socket), so a slow
  /// consumer holds at most `window` chunks; `done` runs once at the end.
  void stream_paced(query q, read_options options, paced_chunk_handler on_chunk,
                    std::function<void(caf::expected<stream_summary>)> done,
                    std::uint32_t window = 4, stream_options chunking = {});

  void project(std::vector<projector> projectors,
               std::function<void(caf::expected<projection>)> done);

  /// Runs a command on the appenders (every round), bounded by
  /// `engine_config::timeout`; `done` runs once, on an actor thread.
  void execute(command cmd,
               std::function<void(caf::expected<command_outcome>)> done);

  /// Runs a command on the shortest path. When the event cache holds the
  /// whole log and the model at most one projection chunk of events
  /// (`reader_config::project_chunking`), the first round runs on the
  /// calling thread: the projectors' `apply` and `decide` run here, on the
  /// model at the cache's head (as the appenders' first round projects it:
  /// no read index, the append's condition protects the verdict), and the
  /// append goes straight to this node's store actor as `append_local`
  /// sends it (no appender, no reader; as the appenders, never through the
  /// append route).
  /// A conflict, or a verdict that appends nothing (no condition protects
  /// it), continues on the appenders with linearizable models; so does the
  /// whole command when the cache cannot project it. The outcome is the one
  /// `execute` gives. `done` runs once: on the calling thread when the
  /// first round fails there (an invalid model, a projector or decide()
  /// that threw, invalid events, overloaded),
  /// else on the store actor's or an actor thread, so keep it short. No
  /// timeout of its own, as `append_unbounded`: bound the wait yourself
  /// and let `done` cope with an answer that comes after you gave up.
  void
  execute_unbounded(command cmd,
                    std::function<void(caf::expected<command_outcome>)> done);

  // -- subscriptions
  // -----------------------------------------------------------

  /// Follows the events matching `q` after position `after`: first those
  /// already in the log, then new ones as they are committed (by any
  /// process on the database), in order, each once, with no gaps (see
  /// actors/bus_protocol.hpp for the items). `on_items` runs on an actor
  /// thread, one batch at a time; returning consumes the batch. `on_end`
  /// runs once: cancelled (code none), a bad query or `after`
  /// (invalid_argument), or the node stopping (unavailable).
  subscription subscribe(query q, std::uint64_t after,
                         std::function<void(std::vector<bus_item>&)> on_items,
                         subscription_end_handler on_end,
                         subscribe_options opts = {});

  /// Like `subscribe`, but `on_items` acknowledges each batch itself when
  /// it is done with it (e.g. once it is on a socket), so a slow consumer
  /// holds at most `opts.credit` events.
  subscription
  subscribe_paced(query q, std::uint64_t after, paced_items_handler on_items,
                  subscription_end_handler on_end, subscribe_options opts = {});

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace dcbd
