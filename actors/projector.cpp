// Projector host and instances (see actors/projector.hpp).
//
// Two kinds of detached actors (both block on PostgreSQL):
//   host      one per node: the lock session, ownership (lock, take over,
//             self-fence), management calls, restarts of dead instances
//   instance  one per owned projector: the bus subscription's sink, the
//             batches, retries, isolation of poison events, checkpoints
// Statuses go through a shared board (a mutex and a map), so metrics and
// health checks read them without messaging.
#include "actors/projector.hpp"

#include "actors/engine.hpp"
#include "store/error.hpp"
#include "store/validation.hpp"

#include <caf/actor_system.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <algorithm>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>

namespace dcbd {

namespace {

using clock = std::chrono::steady_clock;
using spec_ptr = std::shared_ptr<const projector_spec>;

/// What management calls carry to the host.
struct control_request {
  std::string name;
  projector_action action = projector_action::pause;
  std::uint64_t position = 0;
  std::function<void(projector_reply)> done;
  /// Forwarded by another node: act here, never forward again.
  bool local_only = false;
  /// With local_only: the epoch the sender saw (0: any).
  std::uint64_t epoch = 0;
};

struct list_request {
  /// Empty: every projector.
  std::string name;
  std::function<void(caf::expected<std::vector<projector_status>>)> done;
};

struct dead_letters_request {
  std::string name;
  std::function<void(caf::expected<std::optional<std::vector<dead_letter>>>)>
    done;
};

} // namespace
} // namespace dcbd

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dcbd::spec_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dcbd::control_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dcbd::list_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dcbd::dead_letters_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dcbd::projector_reply)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dcbd::projector_row)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dcbd::projector_action)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dcbd::projector_router)

namespace dcbd {

namespace {

using prj_add_atom = caf::atom_constant<caf::atom("prjAdd")>;
using prj_tick_atom = caf::atom_constant<caf::atom("prjTick")>;
using prj_flush_atom = caf::atom_constant<caf::atom("prjFlush")>;
using prj_retry_atom = caf::atom_constant<caf::atom("prjRetry")>;
using prj_start_atom = caf::atom_constant<caf::atom("prjStart")>;
using prj_stop_atom = caf::atom_constant<caf::atom("prjStop")>;
using prj_sync_atom = caf::atom_constant<caf::atom("prjSync")>;
using prj_fenced_atom = caf::atom_constant<caf::atom("prjFenced")>;
using prj_control_atom = caf::atom_constant<caf::atom("prjCtl")>;
using prj_list_atom = caf::atom_constant<caf::atom("prjList")>;
using prj_letters_atom = caf::atom_constant<caf::atom("prjDL")>;
using prj_respawn_atom = caf::atom_constant<caf::atom("prjRespawn")>;
using prj_wake_atom = caf::atom_constant<caf::atom("prjWake")>;
using prj_router_atom = caf::atom_constant<caf::atom("prjRouter")>;

// -- shared state -------------------------------------------------------------

/// The statuses of the local projectors.
class status_board {
public:
  template <class F>
  void update(const std::string& name, F&& f) {
    std::lock_guard guard{mtx_};
    f(entries_[name]);
  }

  std::optional<projector_status> get(const std::string& name) const {
    std::lock_guard guard{mtx_};
    auto i = entries_.find(name);
    if (i == entries_.end())
      return std::nullopt;
    return i->second;
  }

  std::vector<projector_status> all() const {
    std::lock_guard guard{mtx_};
    std::vector<projector_status> out;
    for (auto& [_, s] : entries_)
      out.push_back(s);
    return out;
  }

private:
  mutable std::mutex mtx_;
  std::map<std::string, projector_status> entries_;
};

/// What the host and its instances share.
struct shared_env {
  projector_host_config cfg;
  pg_config store;
  bus_actor bus;
  status_board board;
  /// The lock session answered a statement sent at this time (steady
  /// clock, nanoseconds); instances check `lease_ok` before each batch.
  std::atomic<std::int64_t> last_ok{0};
  /// The lock session's server process id (0: closed).
  std::atomic<int> lock_pid{0};

  bool lease_ok() const {
    auto at = clock::time_point{clock::duration{last_ok.load()}};
    return clock::now() < at + cfg.lease;
  }
};

std::chrono::milliseconds backoff(const retry_policy& p,
                                  std::uint32_t attempt) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  double ms = static_cast<double>(p.first.count());
  for (std::uint32_t i = 1; i < attempt && ms < p.max.count(); ++i)
    ms *= 2;
  ms = std::min(ms, static_cast<double>(p.max.count()));
  if (p.jitter > 0) {
    std::uniform_real_distribution<double> d{1 - p.jitter, 1 + p.jitter};
    ms *= d(rng);
  }
  return std::chrono::milliseconds{
    std::max<std::int64_t>(1, static_cast<std::int64_t>(ms))};
}

// -- instance -----------------------------------------------------------------

struct instance_state {
  spec_ptr spec;
  std::shared_ptr<shared_env> env;
  caf::actor host;
  std::unique_ptr<pg_projector_session> db;
  std::uint64_t epoch = 0;

  // The subscription (0: none).
  std::uint64_t sub = 0;
  // Every matching event at or below it is durable in the read model and
  // the checkpoint says so.
  std::uint64_t committed = 0;
  // Every matching event at or below it has been applied (at_least_once:
  // may be ahead of `committed`).
  std::uint64_t applied = 0;
  // Every matching event at or below it is applied or in `pending`.
  std::uint64_t covered = 0;
  std::uint64_t head = 0;
  // The catch-up ended at this position (0: not yet).
  std::uint64_t caught_up_at = 0;
  std::vector<event_batch::pointer> pending;
  clock::time_point pending_since{};
  bool flush_scheduled = false;
  // A retry is scheduled; nothing is applied until it fires.
  bool backing_off = false;
  std::uint32_t attempts = 0;
  std::uint32_t outages = 0;
  std::string last_error;
  bool started = false;
  bool paused = false;
  bool failed = false;
  bool rebuilding = false;
  bool stopping = false;
  // An outage may have hidden a commit: check the row before going on.
  bool unsettled = false;
  // The row's version is newer than the spec's: this instance never runs.
  bool outdated = false;
  std::size_t since_checkpoint = 0;
  clock::time_point last_checkpoint = clock::now();
  std::uint64_t dead_letters = 0;

  static inline const char* name = "dcbd.projector";
};

using instance_actor = caf::stateful_actor<instance_state>;

projector_state state_of(const instance_state& st) {
  if (st.failed)
    return projector_state::failed;
  if (st.paused)
    return projector_state::paused;
  if (st.rebuilding)
    return projector_state::rebuilding;
  return projector_state::running;
}

void publish(instance_actor* self, bool alive = true) {
  auto& st = self->state;
  st.env->board.update(st.spec->name, [&](projector_status& s) {
    s.name = st.spec->name;
    s.local = true;
    s.state = state_of(st);
    s.position = st.applied;
    s.head = std::max(st.head, st.applied);
    s.lag = s.head - s.position;
    s.owner = st.env->cfg.node;
    s.epoch = st.epoch;
    s.version = st.spec->version;
    s.dead_letters = st.dead_letters;
    s.error = st.failed ? st.last_error
                        : (st.backing_off ? st.last_error : std::string{});
    if (alive)
      s.heartbeat = clock::now();
  });
}

void subscribe(instance_actor* self, std::uint64_t after) {
  auto& st = self->state;
  subscribe_request req;
  req.id = fresh_stream_id();
  req.q = st.spec->query;
  req.after = after;
  req.credit = static_cast<std::uint32_t>(
    std::max<std::size_t>(st.env->cfg.credit, st.spec->batch_max));
  req.heartbeat = std::chrono::milliseconds{1000};
  st.sub = req.id;
  st.covered = after;
  st.caught_up_at = 0;
  st.pending.clear();
  st.flush_scheduled = false;
  self->send(st.env->bus, subscribe_atom::value, std::move(req),
             caf::actor_cast<caf::actor>(self));
}

void unsubscribe(instance_actor* self) {
  auto& st = self->state;
  if (st.sub != 0)
    self->send(st.env->bus, cancel_atom::value, st.sub);
  st.sub = 0;
  st.pending.clear();
  st.flush_scheduled = false;
  st.covered = st.applied;
}

// The instance lost its epoch: it stops and tells the host.
void fence(instance_actor* self, const std::string& why) {
  auto& st = self->state;
  std::cerr << "dcbd: projector " << st.spec->name << " (epoch " << st.epoch
            << ") fenced: " << why << std::endl;
  st.stopping = true;
  unsubscribe(self);
  self->send(st.host, prj_fenced_atom::value, st.spec->name, st.epoch);
  self->quit();
}

// Writes the checkpoint `applied` if it is ahead of `committed`.
bool write_checkpoint(instance_actor* self) {
  auto& st = self->state;
  if (st.applied <= st.committed)
    return true;
  auto r = st.db->checkpoint(st.applied);
  if (r.outcome == projector_outcome::fenced) {
    fence(self, "checkpoint refused");
    return false;
  }
  if (!r.ok()) {
    st.last_error = r.error;
    return true; // tried again later
  }
  st.committed = st.applied;
  st.since_checkpoint = 0;
  st.last_checkpoint = clock::now();
  return true;
}

void schedule_flush(instance_actor* self);

// Progress after `n` pending events were applied up to `position`.
void consumed(instance_actor* self, std::size_t n, std::uint64_t position,
              bool checkpointed) {
  auto& st = self->state;
  st.pending.erase(st.pending.begin(),
                   st.pending.begin() + static_cast<std::ptrdiff_t>(n));
  st.applied = std::max(st.applied, position);
  if (checkpointed) {
    st.committed = std::max(st.committed, position);
    st.last_checkpoint = clock::now();
    st.since_checkpoint = 0;
  } else {
    st.since_checkpoint += n;
  }
  st.attempts = 0;
  st.outages = 0;
  st.last_error.clear();
  if (st.sub != 0 && n > 0)
    self->send(st.env->bus, credit_atom::value, st.sub,
               static_cast<std::uint32_t>(n));
  if (st.rebuilding && st.caught_up_at != 0 && st.applied >= st.caught_up_at)
    st.rebuilding = false;
  if (!st.pending.empty())
    st.pending_since = clock::now();
}

projector_context context_of(const instance_state& st,
                             std::uint64_t last_position) {
  projector_context ctx;
  ctx.name = st.spec->name;
  ctx.epoch = st.epoch;
  ctx.replaying = st.caught_up_at == 0 || last_position <= st.caught_up_at;
  return ctx;
}

// Applies [first, first + n) as one transaction; when it fails, splits it
// until the failing event is alone, and parks it or stops. Returns ok,
// fenced, unavailable, or failed (stopped by policy).
projector_outcome isolate(instance_actor* self, const event_batch& range,
                          bool known_failed, std::string error) {
  auto& st = self->state;
  auto& spec = *st.spec;
  bool exactly = spec.mode == projector_delivery::exactly_once;
  if (!known_failed) {
    auto last = range.back().position;
    auto r = st.db->apply(spec.handle, range, context_of(st, last),
                          exactly ? std::optional{last} : std::nullopt);
    if (r.ok()) {
      st.applied = std::max(st.applied, last);
      if (exactly)
        st.committed = std::max(st.committed, last);
      return projector_outcome::ok;
    }
    if (r.outcome != projector_outcome::failed)
      return r.outcome;
    error = r.error;
  }
  if (range.size() == 1) {
    auto pos = range.front().position;
    if (spec.on_poison == poison_policy::stop) {
      st.last_error = "event " + std::to_string(pos) + ": " + error;
      auto r = st.db->fail(st.last_error);
      if (r.outcome == projector_outcome::fenced
          || r.outcome == projector_outcome::unavailable)
        return r.outcome;
      st.failed = true;
      return projector_outcome::failed;
    }
    auto r = st.db->park(pos, error, spec.retry.attempts,
                         exactly ? std::optional{pos} : std::nullopt);
    if (!r.ok())
      return r.outcome == projector_outcome::failed
               ? projector_outcome::unavailable // retry the park later
               : r.outcome;
    std::cerr << "dcbd: projector " << spec.name << ": event " << pos
              << " parked in the dead letters: " << error << std::endl;
    ++st.dead_letters;
    st.applied = std::max(st.applied, pos);
    if (exactly)
      st.committed = std::max(st.committed, pos);
    return projector_outcome::ok;
  }
  auto half = range.size() / 2;
  auto r = isolate(self, range.sub(0, half), false, {});
  if (r != projector_outcome::ok)
    return r;
  return isolate(self, range.sub(half, range.size() - half), false, {});
}

void retry_later(instance_actor* self, std::chrono::milliseconds d) {
  auto& st = self->state;
  st.backing_off = true;
  self->delayed_send(self, d, prj_retry_atom::value, st.sub);
}

// Drops the pending events at or below `applied` (applied while a batch
// was split, or committed by a transaction whose answer was lost).
void drop_applied(instance_actor* self) {
  auto& st = self->state;
  std::size_t k = 0;
  while (k < st.pending.size() && st.pending[k]->position <= st.applied)
    ++k;
  if (k == 0)
    return;
  st.pending.erase(st.pending.begin(),
                   st.pending.begin() + static_cast<std::ptrdiff_t>(k));
  if (st.sub != 0)
    self->send(st.env->bus, credit_atom::value, st.sub,
               static_cast<std::uint32_t>(k));
}

// After an outage: a commit whose answer was lost may have happened, so the
// checkpoint in the row decides what is still to apply. False when the
// instance must wait (still down) or stop (fenced).
bool settle(instance_actor* self) {
  auto& st = self->state;
  if (!st.unsettled)
    return true;
  auto l = st.db->load();
  if (l.result.outcome == projector_outcome::fenced) {
    fence(self, "the row names another epoch");
    return false;
  }
  if (!l.result.ok()) {
    st.last_error = l.result.error;
    ++st.outages;
    publish(self, false);
    retry_later(self, backoff(st.spec->retry, st.outages));
    return false;
  }
  st.unsettled = false;
  if (l.row.position > st.committed) {
    st.committed = l.row.position;
    st.applied = std::max(st.applied, st.committed);
    drop_applied(self);
  }
  return true;
}

// The database is away: try again later, then settle first.
void outage(instance_actor* self, const std::string& error) {
  auto& st = self->state;
  st.last_error = error;
  st.unsettled = true;
  ++st.outages;
  publish(self, false);
  retry_later(self, backoff(st.spec->retry, st.outages));
}

// Applies the next batch of `pending`.
void flush(instance_actor* self) {
  auto& st = self->state;
  auto& spec = *st.spec;
  st.flush_scheduled = false;
  if (st.pending.empty() || st.backing_off || st.paused || st.failed
      || st.stopping)
    return;
  if (!st.env->lease_ok()) {
    // The host fences this instance when the lease is really gone.
    st.last_error = "waiting for the lock session";
    retry_later(self, std::chrono::milliseconds{100});
    return;
  }
  if (!settle(self))
    return;
  if (st.pending.empty())
    return;
  auto n = std::min(st.pending.size(), spec.batch_max);
  event_batch batch{st.pending.data(), n};
  auto upto = n == st.pending.size() ? st.covered : batch.back().position;
  bool exactly = spec.mode == projector_delivery::exactly_once;
  auto r = st.db->apply(spec.handle, batch,
                        context_of(st, batch.back().position),
                        exactly ? std::optional{upto} : std::nullopt);
  switch (r.outcome) {
    case projector_outcome::ok:
      consumed(self, n, upto, exactly);
      break;
    case projector_outcome::fenced:
      return fence(self, "batch refused");
    case projector_outcome::unavailable:
      return outage(self, r.error);
    case projector_outcome::failed: {
      st.last_error = r.error;
      if (++st.attempts < std::max<std::uint32_t>(spec.retry.attempts, 1)) {
        publish(self, false);
        return retry_later(self, backoff(spec.retry, st.attempts));
      }
      auto got = isolate(self, batch, true, r.error);
      if (got == projector_outcome::fenced)
        return fence(self, "isolation refused");
      if (got == projector_outcome::unavailable) {
        drop_applied(self);
        return outage(self, st.last_error);
      }
      if (got == projector_outcome::failed) {
        // Stopped by policy: what was applied stays; the rest is read
        // again on resume.
        std::cerr << "dcbd: projector " << spec.name
                  << " stopped: " << st.last_error << std::endl;
        unsubscribe(self);
        publish(self);
        return;
      }
      consumed(self, n, upto, false);
      break;
    }
  }
  // at_least_once: the checkpoint every N events or T ms.
  if (!exactly
      && (st.since_checkpoint >= spec.checkpoint_events
          || clock::now() - st.last_checkpoint >= spec.checkpoint_interval))
    if (!write_checkpoint(self))
      return;
  publish(self);
  schedule_flush(self);
}

void schedule_flush(instance_actor* self) {
  auto& st = self->state;
  if (st.pending.empty() || st.flush_scheduled || st.backing_off)
    return;
  auto age = clock::now() - st.pending_since;
  if (st.pending.size() >= st.spec->batch_max || age >= st.spec->linger) {
    // Through the mailbox, so control messages get their turn.
    st.flush_scheduled = true;
    self->send(self, prj_flush_atom::value);
    return;
  }
  st.flush_scheduled = true;
  self->delayed_send(
    self,
    std::chrono::duration_cast<std::chrono::milliseconds>(st.spec->linger - age)
      + std::chrono::milliseconds{1},
    prj_flush_atom::value);
}

// Runs `on_reset` and goes back to 0.
projector_reply rebuild(instance_actor* self) {
  auto& st = self->state;
  // The subscription stays until the reset has committed: a reset that
  // fails leaves the projector as it was (and still consuming).
  auto r = st.db->reset(st.spec->on_reset, st.spec->version);
  projector_reply out;
  switch (r.outcome) {
    case projector_outcome::ok:
      break;
    case projector_outcome::fenced:
      out.what = projector_reply::code::conflict;
      out.message = "another node took the projector over";
      fence(self, "reset refused");
      return out;
    case projector_outcome::unavailable:
      out.what = projector_reply::code::unavailable;
      out.message = r.error;
      return out;
    case projector_outcome::failed:
      out.what = projector_reply::code::conflict;
      out.message = "on_reset failed: " + r.error;
      return out;
  }
  unsubscribe(self);
  st.committed = st.applied = st.covered = 0;
  st.dead_letters = 0;
  st.failed = false;
  st.rebuilding = true;
  st.attempts = st.outages = 0;
  st.backing_off = false;
  st.last_error.clear();
  st.since_checkpoint = 0;
  if (!st.paused)
    subscribe(self, 0);
  publish(self);
  return out;
}

void resume(instance_actor* self) {
  auto& st = self->state;
  if (st.outdated)
    return;
  if (st.failed) {
    auto r = st.db->clear_failed();
    if (r.outcome == projector_outcome::fenced)
      return fence(self, "resume refused");
  }
  st.paused = false;
  st.failed = false;
  st.attempts = 0;
  st.last_error.clear();
  if (st.sub == 0 && !st.stopping)
    subscribe(self, st.applied);
  publish(self);
}

void pause(instance_actor* self) {
  auto& st = self->state;
  st.paused = true;
  unsubscribe(self);
  write_checkpoint(self);
  publish(self);
}

// Loads the row and starts consuming (or retries the load later).
void start(instance_actor* self) {
  auto& st = self->state;
  auto l = st.db->load();
  if (l.result.outcome == projector_outcome::fenced)
    return fence(self, "the row names another epoch");
  if (!l.result.ok()) {
    st.last_error = l.result.error;
    ++st.outages;
    publish(self, false);
    self->delayed_send(self, backoff(st.spec->retry, st.outages),
                       prj_start_atom::value);
    return;
  }
  if (st.spec->on_start) {
    auto r = st.db->prepare(st.spec->on_start);
    if (r.outcome == projector_outcome::fenced)
      return fence(self, "start refused");
    if (!r.ok()) {
      st.last_error = "on_start: " + r.error;
      ++st.outages;
      publish(self, false);
      self->delayed_send(self, backoff(st.spec->retry, st.outages),
                         prj_start_atom::value);
      return;
    }
  }
  st.started = true;
  st.outages = 0;
  auto& row = l.row;
  st.committed = st.applied = st.covered = row.position;
  st.paused = row.paused;
  st.failed = !row.failed.empty();
  st.last_error = row.failed;
  st.head = row.position;
  if (row.version > st.spec->version) {
    // A newer node rebuilt it: an old binary (a rolling upgrade) must not
    // rebuild it back. It holds the projector, failed, until it stops.
    st.failed = true;
    st.outdated = true;
    st.last_error = "the read model has version " + std::to_string(row.version)
                    + ", newer than this node's "
                    + std::to_string(st.spec->version);
    std::cerr << "dcbd: projector " << st.spec->name << ": " << st.last_error
              << std::endl;
    publish(self);
    return;
  }
  if (row.version != st.spec->version || row.rebuild) {
    std::cerr << "dcbd: projector " << st.spec->name << ": rebuilding ("
              << (row.rebuild ? "asked for"
                              : "version " + std::to_string(row.version)
                                  + " -> " + std::to_string(st.spec->version))
              << ")" << std::endl;
    auto r = rebuild(self);
    if (r.what != projector_reply::code::ok && !st.stopping) {
      // Not reset yet: start again later (the row still says so).
      st.started = false;
      st.last_error = r.message;
      ++st.outages;
      publish(self, false);
      self->delayed_send(self, backoff(st.spec->retry, st.outages),
                         prj_start_atom::value);
    }
    return;
  }
  if (!st.paused && !st.failed)
    subscribe(self, row.position);
  publish(self);
}

projector_reply reply_with(instance_actor* self) {
  publish(self);
  projector_reply r;
  if (auto s = self->state.env->board.get(self->state.spec->name))
    r.status = *s;
  return r;
}

caf::behavior instance_impl(instance_actor* self, spec_ptr spec,
                            std::shared_ptr<shared_env> env, caf::actor host,
                            std::uint64_t epoch) {
  auto& st = self->state;
  st.spec = spec;
  st.env = env;
  st.host = host;
  st.epoch = epoch;
  st.db = std::make_unique<pg_projector_session>(env->store, spec->name, epoch);
  self->send(self, prj_start_atom::value);
  self->send(self, prj_tick_atom::value);
  self->set_exit_handler([self](caf::exit_msg& m) {
    auto& st = self->state;
    st.stopping = true;
    unsubscribe(self);
    self->quit(m.reason);
  });
  return {
    [self](prj_start_atom) {
      if (!self->state.started)
        start(self);
    },
    [self](bus_batch_atom, bus_batch& b) {
      auto& st = self->state;
      if (b.id != st.sub || st.stopping)
        return; // a subscription this instance has left
      for (auto& item : b.items) {
        st.head = std::max(st.head, item.head);
        switch (item.kind) {
          case bus_item_kind::event:
            if (st.pending.empty())
              st.pending_since = clock::now();
            st.pending.push_back(item.event);
            st.covered = std::max(st.covered, item.position);
            break;
          case bus_item_kind::caught_up:
            st.caught_up_at = std::max<std::uint64_t>(item.position, 1);
            st.covered = std::max(st.covered, item.position);
            break;
          case bus_item_kind::checkpoint:
            st.covered = std::max(st.covered, item.position);
            break;
          case bus_item_kind::heartbeat:
            break;
        }
      }
      if (st.pending.empty()) {
        // Nothing to apply: what the bus has scanned is covered.
        st.applied = std::max(st.applied, st.covered);
        if (st.rebuilding && st.caught_up_at != 0
            && st.applied >= st.caught_up_at)
          st.rebuilding = false;
      }
      schedule_flush(self);
    },
    [self](bus_end_atom, bus_end& e) {
      auto& st = self->state;
      if (e.id != st.sub)
        return;
      st.sub = 0;
      if (e.code == errc::unavailable) {
        // The bus stopped: the node is stopping.
        st.stopping = true;
        self->quit();
        return;
      }
      st.failed = true;
      st.last_error = "subscription ended: " + e.message;
      publish(self);
    },
    [self](prj_flush_atom) {
      flush(self);
    },
    [self](prj_retry_atom, std::uint64_t sub) {
      auto& st = self->state;
      st.backing_off = false;
      if (sub != st.sub)
        return;
      flush(self);
    },
    [self](prj_tick_atom) {
      auto& st = self->state;
      self->delayed_send(self, std::chrono::milliseconds{500},
                         prj_tick_atom::value);
      if (!st.started || st.stopping)
        return;
      bool exactly = st.spec->mode == projector_delivery::exactly_once;
      if (st.pending.empty() && st.applied > st.committed && !st.backing_off) {
        auto every = exactly ? std::chrono::milliseconds{1000}
                             : st.spec->checkpoint_interval;
        if (clock::now() - st.last_checkpoint >= every)
          if (!write_checkpoint(self))
            return;
      }
      publish(self, !st.backing_off || st.paused);
    },
    [self](prj_sync_atom, projector_row& row) {
      // The row as the host read it: pause, resume and rebuild asked for
      // through another node.
      auto& st = self->state;
      if (!st.started || st.stopping)
        return;
      if (row.epoch != st.epoch)
        return fence(self, "the row names epoch " + std::to_string(row.epoch));
      // The dead letters as the table counts them: parked before a restart
      // or a takeover, skipped through another node.
      if (row.dead_letters != st.dead_letters) {
        st.dead_letters = row.dead_letters;
        publish(self, false);
      }
      // A newer node's read model: nothing here may act on it (a rebuild
      // would write this node's older version back).
      if (st.outdated)
        return;
      auto changes = [&st](const projector_row& r) {
        return r.rebuild || r.paused != st.paused
               || (r.failed.empty() && st.failed);
      };
      if (!changes(row))
        return;
      // The host read the row before this instance's own latest writes
      // (a failure it recorded, a rebuild it did): act on the row as it is
      // now, read through this instance's own connection.
      auto fresh = st.db->load();
      if (fresh.result.outcome == projector_outcome::fenced)
        return fence(self, "the row names another epoch");
      if (!fresh.result.ok() || !changes(fresh.row))
        return;
      auto& now = fresh.row;
      if (now.rebuild) {
        rebuild(self);
        return;
      }
      if (now.paused && !st.paused)
        pause(self);
      else if (!now.paused && st.paused && now.failed.empty())
        resume(self);
      else if (now.failed.empty() && st.failed && !now.paused)
        resume(self);
    },
    [self](prj_control_atom, projector_action a,
           std::uint64_t position) -> projector_reply {
      auto& st = self->state;
      projector_reply out;
      if (!st.started) {
        out.what = projector_reply::code::unavailable;
        out.message = "the projector is starting: " + st.last_error;
        return out;
      }
      switch (a) {
        case projector_action::pause:
          pause(self);
          break;
        case projector_action::resume:
          resume(self);
          break;
        case projector_action::rebuild: {
          auto r = rebuild(self);
          if (r.what != projector_reply::code::ok)
            return r;
          break;
        }
        case projector_action::retry_dead_letter: {
          projector_context ctx;
          ctx.name = st.spec->name;
          ctx.epoch = st.epoch;
          ctx.replaying = true;
          auto r = st.db->retry(st.spec->handle, ctx, position);
          if (r.missing) {
            out.what = projector_reply::code::not_found;
            out.message = "projector " + st.spec->name
                          + " has no dead letter at "
                          + std::to_string(position);
            return out;
          }
          if (r.result.outcome == projector_outcome::fenced) {
            fence(self, "retry refused");
            out.what = projector_reply::code::conflict;
            out.message = "another node took the projector over";
            return out;
          }
          if (r.result.outcome == projector_outcome::unavailable) {
            out.what = projector_reply::code::unavailable;
            out.message = r.result.error;
            return out;
          }
          if (r.result.outcome == projector_outcome::failed) {
            out.what = projector_reply::code::conflict;
            out.message = "the handler failed again on event "
                          + std::to_string(position) + ": " + r.result.error;
            return out;
          }
          if (st.dead_letters > 0)
            --st.dead_letters;
          break;
        }
        case projector_action::skip_dead_letter:
          if (st.dead_letters > 0)
            --st.dead_letters;
          break;
      }
      return reply_with(self);
    },
    [self](prj_stop_atom) {
      auto& st = self->state;
      st.stopping = true;
      unsubscribe(self);
      if (st.started && !st.failed)
        write_checkpoint(self);
      self->quit();
    },
  };
}

// -- host ---------------------------------------------------------------------

struct owned_instance {
  std::uint64_t epoch = 0;
  caf::actor actor;
};

struct host_state {
  std::shared_ptr<shared_env> env;
  std::shared_ptr<pg_projector_admin> admin;
  std::unique_ptr<pg_lock_session> lock;
  std::map<std::string, spec_ptr> specs;
  std::map<std::string, owned_instance> owned;
  // Instances that died, waiting to be started again.
  std::set<std::string> respawning;
  std::map<std::string, std::uint64_t> restarts;
  clock::time_point last_sync{};
  clock::time_point last_open_failure{};
  std::string last_lock_error;
  bool stopping = false;
  std::vector<caf::response_promise> stop_waiters;
  // Forwards management calls to the owner (the cluster's).
  projector_router router;

  static inline const char* name = "dcbd.projector_host";
};

using host_actor = caf::stateful_actor<host_state>;

void finish_stop(host_actor* self);

void lose_all(host_actor* self, const std::string& why) {
  auto& st = self->state;
  if (!st.owned.empty())
    std::cerr << "dcbd: projectors on node " << st.env->cfg.node
              << " stop: " << why << std::endl;
  for (auto& [name, o] : st.owned) {
    self->send_exit(o.actor, caf::exit_reason::user_shutdown);
    st.env->board.update(name, [&](projector_status& s) {
      s.state = projector_state::standby;
      s.error = why;
    });
  }
  st.owned.clear();
  if (st.lock)
    st.lock->close();
  st.env->lock_pid = 0;
  st.env->last_ok = 0;
  finish_stop(self);
}

// Once stopping and no instance is left: closes the lock session (its
// locks go), answers stop() and quits.
void finish_stop(host_actor* self) {
  auto& st = self->state;
  if (!st.stopping || !st.owned.empty())
    return;
  st.lock->close();
  st.env->lock_pid = 0;
  for (auto& rp : st.stop_waiters)
    rp.deliver(true);
  st.stop_waiters.clear();
  self->quit();
}

void start_instance(host_actor* self, const std::string& name) {
  auto& st = self->state;
  auto spec = st.specs.at(name);
  std::uint64_t epoch = 0;
  auto sent = clock::now();
  try {
    epoch = st.lock->take_over(name);
    // The lock session answered: the lease runs from here.
    st.env->last_ok = sent.time_since_epoch().count();
  } catch (const store_error& e) {
    std::cerr << "dcbd: projector " << name
              << ": cannot take over: " << e.what() << std::endl;
    try {
      st.lock->unlock(name);
    } catch (const store_error&) {
      // handled below
    }
    if (!st.lock->is_open())
      lose_all(self, "lock session lost");
    return;
  }
  auto a = self->system().spawn<caf::detached>(
    instance_impl, spec, st.env, caf::actor_cast<caf::actor>(self), epoch);
  self->monitor(a);
  st.owned[name] = owned_instance{epoch, a};
  st.env->board.update(name, [&](projector_status& s) {
    s.restarts = st.restarts[name];
    s.owner = st.env->cfg.node;
    s.epoch = epoch;
  });
}

void host_tick(host_actor* self) {
  auto& st = self->state;
  auto& cfg = st.env->cfg;
  if (st.stopping)
    return;
  if (st.specs.empty())
    return; // no lock session for a node without projectors
  if (!st.lock->is_open() && !st.owned.empty()) {
    // The session broke under a take-over or an unlock: its locks are gone.
    lose_all(self, "lock session lost");
  }
  auto now = clock::now();
  if (!st.lock->is_open()) {
    if (now - st.last_open_failure < std::chrono::milliseconds{500})
      return;
    try {
      st.lock->open();
      st.env->lock_pid = st.lock->backend_pid();
      st.last_lock_error.clear();
    } catch (const store_error& e) {
      st.last_open_failure = now;
      if (st.last_lock_error != e.what()) {
        st.last_lock_error = e.what();
        std::cerr << "dcbd: projector lock session: " << e.what() << std::endl;
      }
      return;
    }
  }
  std::vector<std::string> free;
  for (auto& [name, _] : st.specs)
    if (!st.owned.count(name) && !st.respawning.count(name))
      free.push_back(name);
  auto sent = clock::now();
  auto last_ok = clock::time_point{clock::duration{st.env->last_ok.load()}};
  try {
    std::vector<std::string> got;
    if (!free.empty())
      got = st.lock->try_lock(free);
    else if (sent - last_ok >= cfg.heartbeat)
      st.lock->ping();
    else
      got = {};
    if (!free.empty() || sent - last_ok >= cfg.heartbeat)
      st.env->last_ok = sent.time_since_epoch().count();
    for (auto& name : got)
      start_instance(self, name);
  } catch (const store_error& e) {
    lose_all(self, std::string{"lock session lost: "} + e.what());
    return;
  }
  last_ok = clock::time_point{clock::duration{st.env->last_ok.load()}};
  if (!st.owned.empty() && clock::now() >= last_ok + cfg.lease) {
    lose_all(self, "lease expired");
    return;
  }
  // Pause, resume and rebuild asked for through any node.
  if (!st.owned.empty() && clock::now() - st.last_sync >= cfg.poll) {
    st.last_sync = clock::now();
    std::vector<std::string> names;
    for (auto& [name, _] : st.owned)
      names.push_back(name);
    try {
      for (auto& row : st.admin->rows(names)) {
        auto i = st.owned.find(row.name);
        if (i != st.owned.end())
          self->send(i->second.actor, prj_sync_atom::value, row);
      }
    } catch (const store_error&) {
      // The instances see the outage themselves.
    }
  }
}

projector_status status_of_row(const projector_row& row,
                               const std::string& node,
                               const std::optional<projector_status>& local) {
  projector_status s;
  if (local && local->owner == node && local->state != projector_state::standby
      && local->epoch == row.epoch) {
    s = *local;
    s.dead_letters = row.dead_letters;
    s.head = std::max(s.head, row.head);
    s.lag = s.head - std::min(s.head, s.position);
    return s;
  }
  s.name = row.name;
  // No instance here: the owner's paused or failed state, as the row says,
  // else standby (API.md §9).
  s.state = !row.locked           ? projector_state::standby
            : row.paused          ? projector_state::paused
            : !row.failed.empty() ? projector_state::failed
                                  : projector_state::standby;
  s.position = row.position;
  s.head = std::max(row.head, row.position);
  s.lag = s.head - s.position;
  s.owner = row.locked ? row.owner : std::string{};
  s.epoch = row.epoch;
  s.dead_letters = row.dead_letters;
  s.version = row.version;
  s.error = row.failed;
  if (local) {
    s.local = true;
    s.restarts = local->restarts;
    s.heartbeat = local->heartbeat;
  }
  return s;
}

projector_reply error_reply(projector_reply::code c, std::string message) {
  projector_reply r;
  r.what = c;
  r.message = std::move(message);
  return r;
}

// Answers a management call that needs no instance of this node.
void control_here(host_actor* self, control_request& req,
                  const projector_row& row) {
  auto& st = self->state;
  auto local = st.env->board.get(req.name);
  auto status = [&] {
    auto rows = st.admin->rows({req.name});
    return rows.empty() ? status_of_row(row, st.env->cfg.node, local)
                        : status_of_row(rows[0], st.env->cfg.node, local);
  };
  switch (req.action) {
    case projector_action::pause:
      st.admin->set_paused(req.name, true);
      break;
    case projector_action::resume:
      st.admin->set_paused(req.name, false);
      st.admin->clear_failed(req.name);
      break;
    case projector_action::rebuild:
      st.admin->request_rebuild(req.name);
      break;
    case projector_action::skip_dead_letter:
      break; // done by the caller
    case projector_action::retry_dead_letter:
      return req.done(error_reply(
        projector_reply::code::conflict,
        "projector " + req.name + " does not run on this node"
          + (row.locked && !row.owner.empty() ? " but on " + row.owner
                                              : std::string{" (no owner)"})
          + ": retry its dead letters there"));
  }
  projector_reply r;
  r.status = status();
  req.done(std::move(r));
}

void control(host_actor* self, control_request& req) {
  auto& st = self->state;
  auto rows = st.admin->rows({req.name});
  if (rows.empty())
    return req.done(error_reply(projector_reply::code::not_found,
                                "no projector named " + req.name));
  auto& row = rows[0];
  auto i = st.owned.find(req.name);
  auto local = st.env->board.get(req.name);
  bool here = i != st.owned.end();
  // The state the action must fit: this node's instance, else the row.
  bool paused = here && local ? local->state == projector_state::paused
                              : row.paused;
  bool failed = here && local ? local->state == projector_state::failed
                              : !row.failed.empty();
  bool rebuilding = here && local ? local->state == projector_state::rebuilding
                                  : row.rebuild;
  // Pause, resume and rebuild are idempotent (API.md §6: 200 with the new
  // status): asked for the state it is in already (paused; running, neither
  // paused nor failed; rebuilding), the projector is left as it is and the
  // answer is its status. Decided where the call is answered: by the owner
  // when it is forwarded there. The row must agree, so that an intent the
  // instance has not applied yet is still overruled.
  bool noop = false;
  switch (req.action) {
    case projector_action::pause:
      noop = paused && row.paused;
      break;
    case projector_action::resume:
      noop = !paused && !failed && !row.paused && row.failed.empty();
      break;
    case projector_action::rebuild:
      noop = rebuilding && !paused;
      break;
    case projector_action::skip_dead_letter:
      if (!st.admin->skip(req.name, req.position))
        return req.done(error_reply(projector_reply::code::not_found,
                                    "projector " + req.name
                                      + " has no dead letter at "
                                      + std::to_string(req.position)));
      break;
    case projector_action::retry_dead_letter:
      if (!st.admin->has_dead_letter(req.name, req.position))
        return req.done(error_reply(projector_reply::code::not_found,
                                    "projector " + req.name
                                      + " has no dead letter at "
                                      + std::to_string(req.position)));
      break;
  }
  if (here && req.local_only && req.epoch != 0 && req.epoch != i->second.epoch)
    return req.done(error_reply(projector_reply::code::conflict,
                                "projector " + req.name + " runs under epoch "
                                  + std::to_string(i->second.epoch)
                                  + " here, not " + std::to_string(req.epoch)));
  if (!here && !req.local_only && st.router && row.locked && !row.owner.empty()
      && row.owner != st.env->cfg.node
      && req.action != projector_action::skip_dead_letter) {
    // The owner acts (API.md §9); if it cannot be asked, the row does.
    auto host = caf::actor_cast<caf::actor>(self);
    auto fallback = req;
    fallback.local_only = true;
    auto forwarded = st.router(
      row.owner, req.name, req.action, req.position, row.epoch,
      [host, fallback](std::optional<projector_reply> r) mutable {
        if (r)
          return fallback.done(std::move(*r));
        caf::anon_send(host, prj_control_atom::value, std::move(fallback));
      });
    if (forwarded)
      return;
  }
  if (noop) {
    projector_reply r;
    r.status = status_of_row(row, st.env->cfg.node, local);
    return req.done(std::move(r));
  }
  if (!here)
    return control_here(self, req, row);
  // An instance older than the read model holds it failed and never acts
  // on it: neither the intent nor the action fits (rolling upgrades). The
  // one gate: every management call reaches an instance through here.
  if (auto spec = st.specs.find(req.name);
      spec != st.specs.end() && row.version > spec->second->version
      && req.action != projector_action::pause
      && req.action != projector_action::skip_dead_letter)
    return req.done(error_reply(
      projector_reply::code::conflict,
      "projector " + req.name + " has read model version "
        + std::to_string(row.version) + ", newer than version "
        + std::to_string(spec->second->version) + " on node " + st.env->cfg.node
        + ": a node with the newer version must act on it"));
  // Record the intent in the row first (so it survives a takeover), then
  // let the instance act at once.
  if (req.action == projector_action::pause)
    st.admin->set_paused(req.name, true);
  else if (req.action == projector_action::resume) {
    st.admin->set_paused(req.name, false);
    st.admin->clear_failed(req.name);
  }
  auto done = req.done;
  auto name = req.name;
  self
    ->request(i->second.actor, std::chrono::seconds{30},
              prj_control_atom::value, req.action, req.position)
    .then(
      [self, done, name](projector_reply& r) {
        if (r.what == projector_reply::code::ok) {
          // The counts the instance does not know (dead letters).
          try {
            auto rows = self->state.admin->rows({name});
            if (!rows.empty())
              r.status = status_of_row(rows[0], self->state.env->cfg.node,
                                       self->state.env->board.get(name));
          } catch (const store_error&) {
            // keep the instance's view
          }
        }
        done(std::move(r));
      },
      [done](caf::error& err) {
        done(error_reply(projector_reply::code::unavailable,
                         "the projector did not answer: " + to_string(err)));
      });
}

caf::behavior host_impl(host_actor* self, std::shared_ptr<shared_env> env,
                        std::shared_ptr<pg_projector_admin> admin) {
  auto& st = self->state;
  st.env = env;
  st.admin = admin;
  st.lock = std::make_unique<pg_lock_session>(env->store, env->cfg.node);
  self->send(self, prj_tick_atom::value);
  self->set_down_handler([self](caf::down_msg& m) {
    auto& st = self->state;
    for (auto i = st.owned.begin(); i != st.owned.end(); ++i) {
      if (i->second.actor.address() != m.source)
        continue;
      auto name = i->first;
      st.owned.erase(i);
      if (st.stopping)
        break;
      // An instance that died (not fenced, not stopped): start it again
      // under a new epoch after a pause.
      auto n = ++st.restarts[name];
      std::cerr << "dcbd: projector " << name
                << " instance ended: " << to_string(m.reason)
                << "; restarting (" << n << ")" << std::endl;
      st.env->board.update(name, [&](projector_status& s) {
        s.restarts = n;
        s.state = projector_state::standby;
      });
      try {
        st.lock->unlock(name);
      } catch (const store_error&) {
        // the session is gone: so is the lock
      }
      st.respawning.insert(name);
      self->delayed_send(self, std::chrono::milliseconds{500},
                         prj_respawn_atom::value, name);
      break;
    }
    finish_stop(self);
  });
  return {
    [self](prj_tick_atom) {
      auto& st = self->state;
      if (st.stopping)
        return;
      host_tick(self);
      self->delayed_send(self, st.env->cfg.poll, prj_tick_atom::value);
    },
    [self](prj_add_atom, spec_ptr& spec) {
      auto& st = self->state;
      st.specs[spec->name] = spec;
      st.env->board.update(spec->name, [&](projector_status& s) {
        s.name = spec->name;
        s.local = true;
        s.state = projector_state::standby;
        s.version = spec->version;
      });
      host_tick(self);
    },
    [self](prj_respawn_atom, const std::string& name) {
      self->state.respawning.erase(name);
    },
    [self](prj_wake_atom) {
      // Not a tick: the tick's own schedule goes on unchanged.
      host_tick(self);
    },
    [self](prj_router_atom, projector_router& r) {
      self->state.router = std::move(r);
    },
    [self](prj_fenced_atom, const std::string& name, std::uint64_t epoch) {
      auto& st = self->state;
      auto i = st.owned.find(name);
      if (i == st.owned.end() || i->second.epoch != epoch)
        return;
      self->demonitor(i->second.actor);
      st.owned.erase(i);
      st.env->board.update(name, [&](projector_status& s) {
        s.state = projector_state::standby;
      });
      try {
        st.lock->unlock(name);
      } catch (const store_error& e) {
        lose_all(self, std::string{"lock session lost: "} + e.what());
      }
      finish_stop(self);
    },
    [self](prj_control_atom, control_request& req) {
      try {
        control(self, req);
      } catch (const store_error& e) {
        req.done(error_reply(e.code() == errc::unavailable
                               ? projector_reply::code::unavailable
                             : e.code() == errc::invalid_argument
                               ? projector_reply::code::invalid_argument
                               : projector_reply::code::internal,
                             e.what()));
      }
    },
    [self](prj_list_atom, list_request& req) {
      auto& st = self->state;
      try {
        auto rows = req.name.empty() ? st.admin->rows()
                                     : st.admin->rows({req.name});
        std::vector<projector_status> out;
        for (auto& row : rows)
          out.push_back(
            status_of_row(row, st.env->cfg.node, st.env->board.get(row.name)));
        req.done(std::move(out));
      } catch (const store_error& e) {
        req.done(caf::make_error(caf::sec::runtime_error, e.what()));
      }
    },
    [self](prj_letters_atom, dead_letters_request& req) {
      auto& st = self->state;
      try {
        if (st.admin->rows({req.name}).empty())
          return req.done(std::optional<std::vector<dead_letter>>{});
        req.done(std::optional{st.admin->dead_letters(req.name)});
      } catch (const store_error& e) {
        req.done(caf::make_error(caf::sec::runtime_error, e.what()));
      }
    },
    [self](prj_stop_atom) {
      auto& st = self->state;
      auto rp = self->make_response_promise();
      st.stopping = true;
      if (st.owned.empty()) {
        st.lock->close();
        rp.deliver(true);
        self->quit();
        return rp;
      }
      for (auto& [_, o] : st.owned)
        self->send(o.actor, prj_stop_atom::value);
      st.stop_waiters.push_back(rp);
      return rp;
    },
  };
}

void check_spec(const projector_spec& s, const limits& lim) {
  auto bad = [](const std::string& m) {
    throw store_error{errc::invalid_argument, "projector: " + m};
  };
  if (s.name.empty() || s.name.size() > 100)
    bad("name must have 1-100 characters");
  for (char c : s.name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'
          || c == '.'))
      bad("name \"" + s.name
          + "\" may only have letters, digits, '_', '-' and '.'");
  if (!s.handle)
    bad(s.name + ": a handler is required");
  if (s.batch_max == 0)
    bad(s.name + ": batch_max must be at least 1");
  if (s.retry.attempts == 0)
    bad(s.name + ": retry.attempts must be at least 1");
  if (s.retry.jitter < 0 || s.retry.jitter >= 1)
    bad(s.name + ": retry.jitter must be in [0, 1)");
  if (s.mode == projector_delivery::at_least_once && s.checkpoint_events == 0)
    bad(s.name + ": checkpoint_events must be at least 1");
  auto q = s.query;
  validate(q, lim, "projector " + s.name + " query");
}

} // namespace

const char* to_string(projector_state s) noexcept {
  switch (s) {
    case projector_state::running:
      return "running";
    case projector_state::paused:
      return "paused";
    case projector_state::standby:
      return "standby";
    case projector_state::failed:
      return "failed";
    case projector_state::rebuilding:
      return "rebuilding";
  }
  return "unknown";
}

// -- façade -------------------------------------------------------------------

struct projector_host::impl {
  caf::actor_system& sys;
  std::shared_ptr<shared_env> env;
  std::shared_ptr<pg_projector_admin> admin;
  caf::actor host;
  std::mutex mtx;
  std::set<std::string> names;
  bool stopped = false;

  impl(caf::actor_system& s) : sys(s) {
    // nop
  }
};

projector_host::projector_host(caf::actor_system& sys, engine& eng,
                               projector_host_config cfg)
  : impl_(std::make_shared<impl>(sys)) {
  auto& d = *impl_;
  if (cfg.node.empty())
    throw store_error{errc::invalid_argument, "projector host: no node name"};
  d.env = std::make_shared<shared_env>();
  d.env->cfg = std::move(cfg);
  d.env->store = eng.config().store;
  d.env->bus = eng.bus();
  auto admin_cfg = d.env->store;
  admin_cfg.connect_timeout = std::min(admin_cfg.connect_timeout,
                                       std::chrono::milliseconds{2000});
  d.admin = std::make_shared<pg_projector_admin>(admin_cfg);
  d.host = sys.spawn<caf::detached>(host_impl, d.env, d.admin);
}

projector_host::~projector_host() {
  stop();
}

void projector_host::add(projector_spec spec) {
  auto& d = *impl_;
  check_spec(spec, d.env->store.limits);
  {
    std::lock_guard guard{d.mtx};
    if (d.stopped)
      throw store_error{errc::unavailable, "the projector host has stopped"};
    if (!d.names.insert(spec.name).second)
      throw store_error{errc::invalid_argument,
                        "projector: the name " + spec.name + " is taken"};
  }
  try {
    d.admin->ensure(spec.name, spec.version);
  } catch (...) {
    std::lock_guard guard{d.mtx};
    d.names.erase(spec.name);
    throw;
  }
  caf::anon_send(d.host, prj_add_atom::value,
                 spec_ptr{std::make_shared<projector_spec>(std::move(spec))});
}

void projector_host::stop() {
  auto& d = *impl_;
  {
    std::lock_guard guard{d.mtx};
    if (d.stopped)
      return;
    d.stopped = true;
  }
  // A short-lived event-based actor waits for the reply (a scoped_actor's
  // receive does not see replies delivered through response promises).
  std::promise<void> p;
  auto f = p.get_future();
  auto host = d.host;
  d.sys.spawn([host, &p](caf::event_based_actor* self) {
    self->request(host, std::chrono::seconds{60}, prj_stop_atom::value)
      .then(
        [&p](bool) {
          p.set_value();
        },
        [&p, host](caf::error& err) {
          std::cerr << "dcbd: projector host stop: " << to_string(err)
                    << std::endl;
          caf::anon_send_exit(host, caf::exit_reason::kill);
          p.set_value();
        });
  });
  f.wait();
}

std::vector<projector_status> projector_host::snapshot() const {
  return impl_->env->board.all();
}

bool projector_host::stopped() const {
  std::lock_guard guard{impl_->mtx};
  return impl_->stopped;
}

void projector_host::list(
  std::function<void(caf::expected<std::vector<projector_status>>)> done)
  const {
  list(std::string{}, std::move(done));
}

void projector_host::list(
  std::string name,
  std::function<void(caf::expected<std::vector<projector_status>>)> done)
  const {
  if (stopped())
    return done(caf::make_error(caf::sec::runtime_error,
                                "the projector host has stopped"));
  caf::anon_send(impl_->host, prj_list_atom::value,
                 list_request{std::move(name), std::move(done)});
}

void projector_host::control(std::string name, projector_action action,
                             std::uint64_t position,
                             std::function<void(projector_reply)> done) {
  if (stopped())
    return done(error_reply(projector_reply::code::unavailable,
                            "the projector host has stopped"));
  caf::anon_send(impl_->host, prj_control_atom::value,
                 control_request{std::move(name), action, position,
                                 std::move(done)});
}

void projector_host::control_local(std::string name, projector_action action,
                                   std::uint64_t position, std::uint64_t epoch,
                                   std::function<void(projector_reply)> done) {
  if (stopped())
    return done(error_reply(projector_reply::code::unavailable,
                            "the projector host has stopped"));
  control_request req{std::move(name), action, position, std::move(done)};
  req.local_only = true;
  req.epoch = epoch;
  caf::anon_send(impl_->host, prj_control_atom::value, std::move(req));
}

void projector_host::set_router(projector_router r) {
  caf::anon_send(impl_->host, prj_router_atom::value, std::move(r));
}

void projector_host::wake() {
  if (!stopped())
    caf::anon_send(impl_->host, prj_wake_atom::value);
}

void projector_host::dead_letters(
  std::string name,
  std::function<void(caf::expected<std::optional<std::vector<dead_letter>>>)>
    done) const {
  if (stopped())
    return done(caf::make_error(caf::sec::runtime_error,
                                "the projector host has stopped"));
  caf::anon_send(impl_->host, prj_letters_atom::value,
                 dead_letters_request{std::move(name), std::move(done)});
}

std::vector<projector_status> projector_host::list_blocking() const {
  std::promise<caf::expected<std::vector<projector_status>>> p;
  auto f = p.get_future();
  list([&p](caf::expected<std::vector<projector_status>> r) {
    p.set_value(std::move(r));
  });
  auto r = f.get();
  if (!r)
    throw store_error{errc::unavailable, to_string(r.error())};
  return std::move(*r);
}

projector_reply projector_host::control_blocking(std::string name,
                                                 projector_action action,
                                                 std::uint64_t position) {
  std::promise<projector_reply> p;
  auto f = p.get_future();
  control(std::move(name), action, position, [&p](projector_reply r) {
    p.set_value(std::move(r));
  });
  return f.get();
}

std::optional<projector_status>
projector_host::status_blocking(const std::string& name) {
  std::promise<caf::expected<std::vector<projector_status>>> p;
  auto f = p.get_future();
  list(name, [&p](caf::expected<std::vector<projector_status>> r) {
    p.set_value(std::move(r));
  });
  auto r = f.get();
  if (!r)
    throw store_error{errc::unavailable, to_string(r.error())};
  if (r->empty())
    return std::nullopt;
  return std::move(r->front());
}

const std::string& projector_host::node() const {
  return impl_->env->cfg.node;
}

int projector_host::lock_pid() const {
  return impl_->env->lock_pid.load();
}

} // namespace dcbd
