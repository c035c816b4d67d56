// The PostgreSQL event store: gap-free positions in commit order, group
// appends in one round trip, keyset-paginated reads.
#pragma once

#include "store/event_store.hpp"
#include "store/pg_config.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace dcbd {

class pg_pool;

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
  append_validated(const std::vector<validated_append>& group) override;

  std::vector<append_result>
  append_prechecked(const std::vector<validated_append>& group,
                    std::span<const std::uint64_t> checked_through) override;

  read_result read(const query& q, const read_options& options = {}) override;

  std::unique_ptr<event_stream>
  stream(const query& q, const read_options& options = {},
         const stream_options& chunking = {}) override;

  std::uint64_t head() override;

  std::uint64_t reconnects() const noexcept override;

private:
  // Commits the requests `part` of a group in one statement.
  void commit_part(const std::vector<validated_append>& group,
                   const std::vector<std::size_t>& part,
                   std::span<const std::uint64_t> checked_through,
                   std::vector<append_result>& results);

  // Finds out whether a group whose connection broke committed.
  bool resolve_in_doubt(std::int64_t token, int backend,
                        std::vector<std::int64_t>& committed);

  // SQL text built once per store.
  struct statements {
    std::string append_unconditional;
    std::string append_group;
    // The same, also inserting the jobs of the accepted requests.
    std::string append_unconditional_jobs;
    std::string append_group_jobs;
    std::string head;
    std::string channel;
    std::string job_channel;
  };

  pg_config cfg_;
  statements sql_;
  std::unique_ptr<pg_pool> pool_;
};

} // namespace dcbd
