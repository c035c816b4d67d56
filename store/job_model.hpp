// Durable jobs (API.md §7): states, the job as stored, outcomes of an
// attempt, the retry curve, validation and RFC 3339 time. Pure logic, no
// database; store/pg_jobs.hpp holds the SQL.
//
// A job's life (River's states):
//
//   available ──fetch──▶ running ──complete──▶ completed
//   scheduled ─(due)─┘      │ ├──error, attempts left──▶ retryable ─(due)─┐
//   retryable ─(due)─┘      │ ├──snooze──▶ scheduled (attempt not spent)  │
//        ▲                  │ └──error, no attempts left / discard──▶ discarded
//        └──────────────────┴──lease expired (rescue)──▶ available | discarded
//   cancel: available, scheduled, retryable, running ──▶ cancelled
//   retry:  any state but running ──▶ available
//
// Every fetch gives the attempt a new lease token; completing, failing and
// heartbeating act only with the current one, so a worker whose lease
// expired (and whose job another worker now runs) changes nothing.
#pragma once

#include "store/model.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dcbd {

enum class job_state : std::uint8_t {
  available,
  scheduled,
  running,
  retryable,
  completed,
  cancelled,
  discarded,
};

/// Every state, in the order above.
inline constexpr job_state all_job_states[]
  = {job_state::available, job_state::scheduled, job_state::running,
     job_state::retryable, job_state::completed, job_state::cancelled,
     job_state::discarded};

/// Returns "available", "scheduled", ... (the names stored and served).
const char* to_string(job_state s) noexcept;

/// Parses a state's name; nullopt for anything else.
std::optional<job_state> parse_job_state(std::string_view s) noexcept;

/// Whether `s` is final (completed, cancelled, discarded).
bool is_final(job_state s) noexcept;

/// A job as stored. Times are microseconds since the Unix epoch (0: unset).
struct job {
  std::int64_t id = 0;
  std::string queue;
  std::string kind;
  /// JSON text.
  std::string args;
  job_state state = job_state::available;
  /// Attempts started so far (the running one included).
  int attempt = 0;
  int max_attempts = 20;
  int priority = 1;
  std::int64_t created_at_us = 0;
  std::int64_t scheduled_at_us = 0;
  std::int64_t attempted_at_us = 0;
  std::int64_t finalized_at_us = 0;
  /// The current attempt's lease token (0 unless running).
  std::int64_t lease = 0;
  /// When the lease expires unless extended (0 unless running).
  std::int64_t lease_expires_at_us = 0;
  /// Who runs it: `<node>` for in-process workers, the worker's name else.
  std::string worker;
  std::string unique_key;
  /// The trigger that made it, and the triggering event's position.
  std::string trigger;
  std::uint64_t trigger_position = 0;
  /// JSON array text of {"attempt","at","error"} objects, oldest first.
  std::string errors = "[]";
};

/// How an attempt ended.
struct job_outcome {
  enum class kind : std::uint8_t {
    /// Done: completed.
    complete,
    /// Failed: retryable after `delay_ms` (absent: the retry curve), or
    /// discarded when it was the last attempt.
    fail,
    /// Not now: scheduled after `delay_ms`; the attempt is not counted.
    snooze,
    /// Failed for good: discarded at once.
    discard,
  };
  std::int64_t id = 0;
  std::int64_t lease = 0;
  kind what = kind::complete;
  std::string error;
  std::optional<std::int64_t> delay_ms;
};

/// The default delay after attempt `attempt` failed (1-based), in
/// milliseconds: min(attempt⁴, 86,400) s × `jitter`, `jitter` in [0.9, 1.1]
/// (API.md §7; the first failure waits about 1 s).
std::int64_t retry_delay_ms(int attempt, double jitter) noexcept;

/// Bounds of job fields (API.md §7 "Bad input").
struct job_limits {
  std::size_t max_queue_chars = 128;
  std::size_t max_kind_bytes = 255;
  std::size_t max_args_bytes = std::size_t{1} << 20;
  std::size_t max_unique_key_bytes = 255;
  int max_priority = 100;
  int max_max_attempts = 1000;
  /// Ten years.
  std::int64_t max_delay_ms = std::int64_t{10} * 366 * 24 * 3600 * 1000;
  /// Jobs per append or per batch enqueue.
  std::size_t max_jobs_per_request = 10'000;
  std::size_t max_error_bytes = 4096;
};

/// Whether `s` is a valid queue name: 1-128 characters, letters, digits,
/// '_', '-', '.'.
bool valid_queue_name(std::string_view s) noexcept;

/// Validates `j` in place (fields named `field` + ".kind" and so on);
/// throws `store_error(invalid_argument)`. `args` must be JSON; empty args
/// become "{}".
void validate(job_request& j, std::string_view field,
              const job_limits& lim = {});

/// Validates a job kind: 1-`max_kind_bytes` bytes of UTF-8 without NUL;
/// throws `store_error(invalid_argument)` naming `field`.
void validate_job_kind(std::string_view kind, std::string_view field,
                       const job_limits& lim = {});

/// Validates a trigger or worker name: 1-100 characters, letters, digits,
/// '_', '-', '.'; throws `store_error(invalid_argument)` naming `field`.
void validate_job_name(std::string_view name, std::string_view field);

/// Formats microseconds since the Unix epoch as RFC 3339 in UTC with
/// microseconds, e.g. "2026-12-01T12:00:00.000000Z".
std::string format_rfc3339(std::int64_t us);

/// Parses an RFC 3339 date-time ("2026-12-01T12:00:00Z", fractions and
/// offsets allowed) into microseconds since the Unix epoch; nullopt when
/// it is not one.
std::optional<std::int64_t> parse_rfc3339(std::string_view s) noexcept;

/// The arguments of a job made by trigger `trigger` for `e`:
/// {"trigger": name, "event": {"type","tags","data","position"}} with data
/// as a string (invalid UTF-8 replaced), as `/v1/read` shows events.
std::string trigger_args(std::string_view trigger, const sequenced_event& e);

/// A query as compact JSON, `[{"types":[..],"tags":[..]}, ..]`, and back
/// (throws `store_error(invalid_argument)` on anything else).
std::string query_to_json(const query& q);
query query_from_json(std::string_view s);

} // namespace dcbd
