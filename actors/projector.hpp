// Projectors: user-defined read models kept up to date by the node
// (DESIGN §3, API.md §6).
//
//   dcbd::projector_spec spec;
//   spec.name = "course_seats";
//   spec.query = {{{{"StudentSubscribed"}, {}}}};
//   spec.handle = [](pqxx::work& tx, const dcbd::event_batch& events,
//                    const dcbd::projector_context&) {
//     for (auto& e : events)
//       tx.exec_params("INSERT INTO ...", ...);
//   };
//   host.add(std::move(spec));     // host: the node's projector_host
//
// Each projector is fed by the bus: it catches up from its checkpoint, then
// follows live commits, in position order, in batches. `exactly_once`
// commits the handler's writes and the checkpoint in one transaction;
// `at_least_once` commits the handler's transaction alone and the
// checkpoint every N events or T ms (a crash replays what followed it).
//
// One owner per projector among every process on the database and schema:
// each node's host holds a lock session (see store/pg_projector.hpp); it
// locks the projectors it can, bumps their epoch and runs one instance
// each; the other nodes stand by and poll for the lock. Every write of an
// instance is fenced by its epoch, and a node whose lock session has not
// answered for `lease` stops its instances (self-fencing).
//
// Supervision: a handler that throws is rolled back and retried with
// exponential backoff and jitter (`retry`); when the attempts are used up,
// the batch is split in halves until the failing event is isolated; that
// event is parked in the dead letters (`park_and_continue`, the checkpoint
// moves past it) or the projector stops in state `failed` (`stop`). A
// broken database connection is not the handler's fault: the instance
// retries (backoff up to `retry.max`) and resumes from its checkpoint.
// An instance that dies is restarted by the host (counted in `restarts`).
//
// A paused projector keeps its owner and stops consuming. `rebuild` runs
// `on_reset` and moves the checkpoint to 0 in one transaction, then
// catches up (state `rebuilding` until it has). A row whose version differs
// from the spec's is rebuilt when an instance starts (blue/green by
// version).
#pragma once

#include "actors/bus_protocol.hpp"
#include "store/model.hpp"
#include "store/pg_config.hpp"
#include "store/pg_projector.hpp"

#include <caf/expected.hpp>
#include <caf/fwd.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace dcbd {

class engine;

enum class projector_delivery : std::uint8_t { exactly_once, at_least_once };

enum class poison_policy : std::uint8_t {
  /// Park the event in the dead letters and go on with the next.
  park_and_continue,
  /// Stop in state `failed` until resumed (which retries the event) or
  /// rebuilt.
  stop,
};

/// Retries of a failing batch.
struct retry_policy {
  /// Attempts of a batch before the failing event is isolated (at least 1).
  std::uint32_t attempts = 5;
  /// First backoff; doubles each attempt up to `max`.
  std::chrono::milliseconds first{100};
  std::chrono::milliseconds max{10'000};
  /// Each backoff is randomly shortened or lengthened by up to this share.
  double jitter = 0.2;
};

/// What a projector is.
struct projector_spec {
  /// 1-100 characters: letters, digits, '_', '-', '.'.
  std::string name;
  /// The events it sees (no items: every event).
  dcbd::query query;
  /// Bumping it rebuilds the read model from position 0.
  int version = 1;
  projector_delivery mode = projector_delivery::exactly_once;
  /// at_least_once: checkpoint after this many events or this long.
  std::size_t checkpoint_events = 100;
  std::chrono::milliseconds checkpoint_interval{500};
  /// Most events per batch, and how long a short batch waits for more. With
  /// 0 (the default) events are applied as soon as they arrive, and those
  /// that arrive while a batch is applied form the next one, so batches
  /// grow with the load by themselves (at 5,000 events/s, linger 0 gave a
  /// third of linger 20's median lag; `./dev bench projectors`).
  std::size_t batch_max = 500;
  std::chrono::milliseconds linger{0};
  retry_policy retry;
  poison_policy on_poison = poison_policy::park_and_continue;
  /// Applies a batch (required).
  projector_handler handle;
  /// Clears the read model before a rebuild (optional).
  projector_reset on_reset;
  /// Runs when an instance starts, before anything else, in a transaction
  /// of its own on the owner only (optional): e.g. CREATE TABLE IF NOT
  /// EXISTS for the read model. Failing, it is retried with backoff.
  projector_reset on_start;
};

enum class projector_state : std::uint8_t {
  running,
  paused,
  /// No instance in this process; `owner` names the node running it.
  standby,
  /// Stopped by a poison event (policy `stop`) or a fatal error.
  failed,
  /// Catching up after a rebuild.
  rebuilding,
};

/// Returns "running", "paused", "standby", "failed" or "rebuilding".
const char* to_string(projector_state s) noexcept;

/// A projector as seen from this node.
struct projector_status {
  std::string name;
  projector_state state = projector_state::standby;
  /// Every matching event at or below it has been applied.
  std::uint64_t position = 0;
  /// The last position of the log (as this node knows it).
  std::uint64_t head = 0;
  /// head - position.
  std::uint64_t lag = 0;
  /// The node that took it over last ("" when none has).
  std::string owner;
  std::uint64_t epoch = 0;
  std::uint64_t dead_letters = 0;
  /// Registered in this process.
  bool local = false;
  int version = 0;
  /// Why it failed, or the last error it is retrying (local instances).
  std::string error;
  /// Local instances: the last time it showed progress or health.
  std::chrono::steady_clock::time_point heartbeat{};
  /// Local: instances started after one died or lost its database.
  std::uint64_t restarts = 0;
};

/// What a management call asks of a projector.
enum class projector_action : std::uint8_t {
  pause,
  resume,
  rebuild,
  retry_dead_letter,
  skip_dead_letter,
};

/// The result of a management call: a status, or an error with a code
/// (not_found, conflict, invalid_argument, unavailable) and a reason.
struct projector_reply {
  enum class code : std::uint8_t {
    ok,
    not_found,
    conflict,
    invalid_argument,
    unavailable,
    internal,
  };
  code what = code::ok;
  std::string message;
  projector_status status;
};

/// Forwards a management call to `owner`, the node running projector
/// `name` under `epoch` (the cluster installs one, actors/cluster.hpp).
/// Returns false when it cannot reach `owner` (the call is then handled on
/// this node through the projector's row); otherwise runs `done` once, on
/// any thread, with the owner's reply, or with nullopt when the owner did
/// not answer (the call is then handled here).
using projector_router = std::function<bool(
  const std::string& owner, const std::string& name, projector_action action,
  std::uint64_t position, std::uint64_t epoch,
  std::function<void(std::optional<projector_reply>)> done)>;

/// Settings of a node's projector host.
struct projector_host_config {
  /// Names this node as the owner (unique per process on the database).
  std::string node;
  /// How often a standby node tries the locks of projectors it does not
  /// run, and an owner looks for pause/resume/rebuild requests.
  std::chrono::milliseconds poll{250};
  /// How often the lock session proves itself alive.
  std::chrono::milliseconds heartbeat{1000};
  /// Instances stop when the lock session has not answered for this long.
  std::chrono::milliseconds lease{2500};
  /// Bus credit per instance: events handed to it and not yet applied.
  std::uint32_t credit = 2048;
};

/// Runs the projectors of one node. Thread-safe. Destroying it stops the
/// instances (after the batch in flight) and releases their locks.
class projector_host {
public:
  /// Uses `eng`'s bus and database; `eng` must outlive the host.
  projector_host(caf::actor_system& sys, engine& eng,
                 projector_host_config cfg);
  ~projector_host();

  projector_host(const projector_host&) = delete;
  projector_host& operator=(const projector_host&) = delete;

  /// Registers a projector; it starts as soon as this node owns it. Throws
  /// `store_error(invalid_argument)` on a bad spec or a name taken.
  void add(projector_spec spec);

  /// Stops every local instance and releases the locks; idempotent.
  void stop();

  /// The local projectors' statuses from memory (no database): for
  /// metrics and health checks.
  std::vector<projector_status> snapshot() const;

  /// Every projector known to the database (each has a row; local ones
  /// are registered with one). Runs `done` once, on another thread.
  void
  list(std::function<void(caf::expected<std::vector<projector_status>>)> done)
    const;

  /// The projector `name` alone (an empty list when there is none).
  void
  list(std::string name,
       std::function<void(caf::expected<std::vector<projector_status>>)> done)
    const;

  /// Runs `action` on `name` (`position` for dead-letter actions) and
  /// answers with the new status; `done` runs once, on another thread.
  /// Pause, resume and rebuild are idempotent: asked for the state the
  /// projector is in already, they change nothing and answer its status.
  void control(std::string name, projector_action action,
               std::uint64_t position,
               std::function<void(projector_reply)> done);

  /// `control` as forwarded by another node: acts on this node only (never
  /// forwards again). With `epoch` > 0, a local instance must run under
  /// that epoch, else the answer is a conflict (the message is stale).
  void control_local(std::string name, projector_action action,
                     std::uint64_t position, std::uint64_t epoch,
                     std::function<void(projector_reply)> done);

  /// Management calls for projectors another node runs go through `r`
  /// (without one, through the projector's row, which the owner polls).
  void set_router(projector_router r);

  /// Tries at once the locks of the projectors it does not run (a peer
  /// went down: its locks may be free) instead of at the next poll.
  void wake();

  /// The dead letters of `name`; `nullopt` when there is no such projector.
  void dead_letters(
    std::string name,
    std::function<void(caf::expected<std::optional<std::vector<dead_letter>>>)>
      done) const;

  // -- blocking wrappers (tests, tools)
  // ----------------------------------------

  std::vector<projector_status> list_blocking() const;
  projector_reply control_blocking(std::string name, projector_action action,
                                   std::uint64_t position = 0);
  std::optional<projector_status> status_blocking(const std::string& name);

  /// This node's name.
  const std::string& node() const;

  /// Whether `stop` was called (calls then answer at once, unavailable).
  bool stopped() const;

  /// The lock session's server process id (0 while it is down).
  int lock_pid() const;

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

} // namespace dcbd
