// The PostgreSQL side of projectors (DESIGN §3, API.md §6): checkpoints,
// ownership, dead letters, and the one place a projector's handler runs
// inside a transaction.
//
// Tables (migration 3, in the store's schema):
//   projectors(name, version, position, epoch, owner, paused, rebuild,
//              failed, updated_at)         one row per projector: its
//                                          checkpoint and its lease
//   projector_dead_letters(projector, position, error, attempts, at)
//
// Ownership: one `pg_lock_session` per node holds a session advisory lock
// per projector it runs (key: hash of schema and name). Taking a lock is
// followed by `take_over`, which bumps the row's epoch; every write of the
// instance (`pg_projector_session`) is fenced with `... WHERE epoch = $e`
// and changes nothing once another node has taken over. The lock session
// has TCP keepalives and server-side timeouts, so the locks of a frozen or
// cut-off node are released within about three seconds.
#pragma once

#include "store/model.hpp"
#include "store/pg_config.hpp"

#include <pqxx/connection>
#include <pqxx/transaction>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dcbd {

/// The events of one batch, in position order (shared with the bus, not
/// copied). Iterates as `const sequenced_event&`.
class event_batch {
public:
  using pointer = std::shared_ptr<const sequenced_event>;

  class iterator {
  public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = sequenced_event;
    using difference_type = std::ptrdiff_t;
    using pointer = const sequenced_event*;
    using reference = const sequenced_event&;

    iterator() = default;
    explicit iterator(const event_batch::pointer* p) : p_(p) {
      // nop
    }

    reference operator*() const {
      return **p_;
    }

    pointer operator->() const {
      return p_->get();
    }

    iterator& operator++() {
      ++p_;
      return *this;
    }

    iterator operator++(int) {
      auto old = *this;
      ++p_;
      return old;
    }

    friend bool operator==(const iterator&, const iterator&) = default;

  private:
    const event_batch::pointer* p_ = nullptr;
  };

  event_batch() = default;

  event_batch(const pointer* first, std::size_t n) : first_(first), n_(n) {
    // nop
  }

  iterator begin() const {
    return iterator{first_};
  }

  iterator end() const {
    return iterator{first_ + n_};
  }

  std::size_t size() const {
    return n_;
  }

  bool empty() const {
    return n_ == 0;
  }

  const sequenced_event& operator[](std::size_t i) const {
    return *first_[i];
  }

  const sequenced_event& front() const {
    return *first_[0];
  }

  const sequenced_event& back() const {
    return *first_[n_ - 1];
  }

  /// Events [from, from + n).
  event_batch sub(std::size_t from, std::size_t n) const {
    return {first_ + from, n};
  }

private:
  const pointer* first_ = nullptr;
  std::size_t n_ = 0;
};

/// What a handler knows besides its events.
struct projector_context {
  /// The projector's name.
  std::string_view name;
  /// The ownership epoch this instance runs under.
  std::uint64_t epoch = 0;
  /// The events were in the log before this instance (or rebuild) started:
  /// a handler with side effects outside the database may skip them (as
  /// Axon's @DisallowReplay).
  bool replaying = false;
};

/// Applies a batch. exactly_once: `tx` also commits the checkpoint, so the
/// handler's writes happen exactly once. at_least_once: `tx` commits
/// without it (checkpoints follow every N events or T ms), so a crash
/// replays what came after the last checkpoint. Throwing rolls `tx` back.
using projector_handler = std::function<void(
  pqxx::work& tx, const event_batch& events, const projector_context& ctx)>;

/// Clears the read model before a rebuild (in the transaction that moves
/// the checkpoint back to 0), or prepares it when an instance starts.
using projector_reset = std::function<void(pqxx::work& tx)>;

/// A projector's row.
struct projector_row {
  std::string name;
  int version = 0;
  std::uint64_t position = 0;
  std::uint64_t epoch = 0;
  /// The node that took it over last (empty: never).
  std::string owner;
  bool paused = false;
  /// A rebuild was asked for and is not done yet.
  bool rebuild = false;
  /// Why it stopped (poison policy `stop`); empty when it did not.
  std::string failed;
  std::uint64_t dead_letters = 0;
  /// The last position of the log.
  std::uint64_t head = 0;
  /// Whether some process holds the projector's lock now.
  bool locked = false;
};

/// A parked event.
struct dead_letter {
  std::uint64_t position = 0;
  std::string error;
  std::uint32_t attempts = 0;
  std::chrono::system_clock::time_point at;
};

/// The result of a write by a projector instance.
enum class projector_outcome {
  /// Committed.
  ok,
  /// Another instance took over (the epoch moved on): nothing was written;
  /// this instance must stop.
  fenced,
  /// The handler (or the SQL it ran) failed: rolled back.
  failed,
  /// The database is unreachable or the connection broke: rolled back;
  /// retry later.
  unavailable,
};

struct projector_result {
  projector_outcome outcome = projector_outcome::ok;
  /// What went wrong (failed, unavailable).
  std::string error;

  bool ok() const {
    return outcome == projector_outcome::ok;
  }
};

/// The advisory lock key of projector `name` in `schema` (a hash).
std::int64_t projector_lock_key(const std::string& schema,
                                const std::string& name);

/// Management statements on the projector tables, each on a connection
/// of a small pool of its own. Throws `store_error`.
class pg_projector_admin {
public:
  explicit pg_projector_admin(pg_config cfg);
  ~pg_projector_admin();

  pg_projector_admin(const pg_projector_admin&) = delete;
  pg_projector_admin& operator=(const pg_projector_admin&) = delete;

  /// Inserts the row of `name` unless it exists.
  void ensure(const std::string& name, int version);

  /// Every projector's row (`names` empty), or those named.
  std::vector<projector_row> rows(const std::vector<std::string>& names = {});

  /// Sets `paused`; false when there is no such projector.
  bool set_paused(const std::string& name, bool paused);

  /// Asks the owner for a rebuild; false when there is no such projector.
  bool request_rebuild(const std::string& name);

  /// Clears `failed` (resume after a stop); false when there is none.
  bool clear_failed(const std::string& name);

  /// Parked events of `name`, in position order (at most `limit`).
  std::vector<dead_letter> dead_letters(const std::string& name,
                                        std::size_t limit = 1000);

  /// Whether `name` has a dead letter at `position`.
  bool has_dead_letter(const std::string& name, std::uint64_t position);

  /// Deletes a dead letter (skip); false when there is none.
  bool skip(const std::string& name, std::uint64_t position);

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// One node's lock session: a dedicated connection holding the advisory
/// locks of the projectors the node runs. Not thread-safe. Throws
/// `store_error` (unavailable when the connection is gone; every lock is
/// then lost).
class pg_lock_session {
public:
  /// `node` names the owner in rows and `application_name`.
  pg_lock_session(pg_config cfg, std::string node);
  ~pg_lock_session();

  pg_lock_session(const pg_lock_session&) = delete;
  pg_lock_session& operator=(const pg_lock_session&) = delete;

  /// Opens the connection (once; again after `close`). The DSN gets
  /// keepalives, `tcp_user_timeout` and the server timeouts of API.md §6.
  void open();

  bool is_open() const;

  /// Drops the connection: the server releases every lock it held.
  void close();

  /// Tries to lock each of `names` (none of them held already: locks are
  /// re-entrant); returns those it locked. Also proves the session alive.
  std::vector<std::string> try_lock(const std::vector<std::string>& names);

  /// Releases the lock of `name`.
  void unlock(const std::string& name);

  /// Proves the session alive.
  void ping();

  /// After locking `name`: bumps its epoch and names this node the owner;
  /// returns the new epoch.
  std::uint64_t take_over(const std::string& name);

  /// The server process id (0 when closed).
  int backend_pid() const;

private:
  pg_config cfg_;
  std::string node_;
  std::unique_ptr<pqxx::connection> conn_;
};

/// The database side of one running projector instance under one epoch:
/// its own connection (re-opened after it breaks), every write fenced by the
/// epoch. Not thread-safe. Never throws for database failures: they come
/// back as `projector_result`s.
class pg_projector_session {
public:
  pg_projector_session(pg_config cfg, std::string name, std::uint64_t epoch);
  ~pg_projector_session();

  pg_projector_session(const pg_projector_session&) = delete;
  pg_projector_session& operator=(const pg_projector_session&) = delete;

  /// The row, if the epoch is still this instance's (else fenced).
  struct loaded {
    projector_result result;
    projector_row row;
  };
  loaded load();

  /// Runs `fn` on `events` in one transaction. With `checkpoint`, the
  /// checkpoint moves to it in the same transaction (exactly_once);
  /// without, the transaction only checks the epoch (at_least_once).
  projector_result apply(const projector_handler& fn, const event_batch& events,
                         const projector_context& ctx,
                         std::optional<std::uint64_t> checkpoint);

  /// Moves the checkpoint to `position` (never backwards).
  projector_result checkpoint(std::uint64_t position);

  /// Parks the event at `position` with `error` and moves the checkpoint
  /// to `checkpoint` (if set), in one transaction.
  projector_result park(std::uint64_t position, const std::string& error,
                        std::uint32_t attempts,
                        std::optional<std::uint64_t> checkpoint);

  /// Runs `fn` in a transaction of its own, fenced like every write.
  projector_result prepare(const projector_reset& fn);

  /// Records why the instance stopped (poison policy `stop`).
  projector_result fail(const std::string& error);

  /// Clears `failed`.
  projector_result clear_failed();

  /// Runs `on_reset`, moves the checkpoint to 0, drops the dead letters,
  /// clears `failed` and `rebuild` and sets `version`, in one transaction.
  projector_result reset(const projector_reset& on_reset, int version);

  /// Runs `fn` on the parked event at `position` alone; on success the dead
  /// letter goes, in the same transaction; on failure its attempts grow and
  /// its error is the new one. `missing` when there is no such dead letter.
  struct retried {
    projector_result result;
    bool missing = false;
  };
  retried retry(const projector_handler& fn, const projector_context& ctx,
                std::uint64_t position);

  std::uint64_t epoch() const {
    return epoch_;
  }

private:
  template <class F>
  projector_result run(F&& f);

  pqxx::connection& conn();

  pg_config cfg_;
  std::string name_;
  std::uint64_t epoch_;
  std::string schema_; // quoted
  std::unique_ptr<pqxx::connection> conn_;
};

} // namespace dcbd
