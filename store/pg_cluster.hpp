// The cluster's membership table (migration 5): one row per node name with
// the address of its cluster agent and the incarnation (one per process
// start) that wrote it. Nodes learn each other's addresses from it besides
// their seeds; `GET /v1/cluster` names nodes it has never reached from it.
// Links between the nodes decide who is up; this table only remembers.
#pragma once

#include "store/pg_config.hpp"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace dcbd {

/// A row of the membership table.
struct member_row {
  std::string name;
  /// host:port of its cluster agent.
  std::string addr;
  /// host:port of its HTTP API.
  std::string http;
  std::string incarnation;
  /// Seconds since it last refreshed its row.
  double age_seconds = 0;
};

/// Statements on the membership table, on one connection of their own
/// (re-opened after it breaks). Not thread-safe. Throws `store_error`.
class pg_cluster_registry {
public:
  explicit pg_cluster_registry(pg_config cfg);
  ~pg_cluster_registry();

  pg_cluster_registry(const pg_cluster_registry&) = delete;
  pg_cluster_registry& operator=(const pg_cluster_registry&) = delete;

  /// Writes this node's row (a restart under the same name replaces it).
  void join(const member_row& self);

  /// Refreshes `last_seen` of `name` if `incarnation` still owns the row;
  /// false when another start of the name replaced it.
  bool touch(const std::string& name, const std::string& incarnation);

  /// Deletes the row of `name` if `incarnation` still owns it.
  void leave(const std::string& name, const std::string& incarnation);

  /// Rows refreshed within `max_age`, by name.
  std::vector<member_row> rows(std::chrono::milliseconds max_age);

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace dcbd
