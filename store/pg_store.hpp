// The PostgreSQL event store: gap-free positions in commit order, group
// appends in one round trip, keyset-paginated reads.
#pragma once

#include "store/event_store.hpp"

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>

namespace dcbd {

namespace pg {
struct group_arrays;
} // namespace pg

/// How to reach PostgreSQL and where the store lives.
struct pg_config {
  /// libpq connection string.
  std::string dsn;
  /// Schema holding every table; created if absent. Lower-case letters,
  /// digits and underscores, starting with a letter or underscore.
  std::string schema = "dcb";
  /// Most connections open at once (appends and reads share them).
  std::size_t pool_size = 4;
  /// How long to keep retrying (with backoff) to open a connection before
  /// failing with `unavailable`.
  std::chrono::milliseconds connect_timeout{5000};
  /// Input limits.
  dcbd::limits limits;
};

/// Installs or upgrades the schema `cfg.schema` (idempotent; safe to run
/// from several processes at once). Returns the schema version.
int install_schema(const pg_config& cfg);

/// The current schema version of this build.
int schema_version() noexcept;

/// Returns the NOTIFY channel on which the store announces new heads.
std::string notify_channel(const std::string& schema);

/// A DCB event store on PostgreSQL. Thread-safe: each call borrows a pooled
/// connection. Installs the schema on construction.
class pg_event_store final : public event_store {
public:
  explicit pg_event_store(pg_config cfg);
  ~pg_event_store() override;

  pg_event_store(const pg_event_store&) = delete;
  pg_event_store& operator=(const pg_event_store&) = delete;

  std::vector<append_result>
  append_group(std::vector<append_request> requests) override;

  read_result read(const query& q, const read_options& options = {}) override;

  std::unique_ptr<event_stream>
  stream(const query& q, const read_options& options = {},
         const stream_options& chunking = {}) override;

  std::uint64_t head() override;

  /// How many connections were opened after the first one.
  std::uint64_t reconnects() const noexcept;

private:
  class pool;
  class pool_lease;
  class stream_impl;

  // Commits the requests `part` (validated) of a group in one statement.
  void commit_part(const std::vector<append_request>& requests,
                   const std::vector<std::size_t>& part,
                   std::vector<append_result>& results);

  // Sends a flattened group in one statement.
  std::vector<std::int64_t> run_group(pool_lease& l, const pg::group_arrays& a,
                                      std::int64_t token, int& backend,
                                      bool& sent);

  // Finds out whether a group whose connection broke committed.
  bool resolve_in_doubt(std::int64_t token, int backend,
                        std::vector<std::int64_t>& committed);

  // SQL text built once per store.
  struct statements {
    std::string append_unconditional;
    std::string append_group;
    std::string head;
    std::string channel;
  };

  pg_config cfg_;
  statements sql_;
  std::unique_ptr<pool> pool_;
};

} // namespace dcbd
