// How to reach PostgreSQL and where the store lives.
#pragma once

#include "store/model.hpp"

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

namespace dcbd {

class read_lease;

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
  /// The process's read lease (store/pg_lease.hpp), if it takes one: the
  /// store's commits carry its writer id and report their positions to it.
  /// Null: the store writes as writer 0 and waits out any lease.
  std::shared_ptr<read_lease> lease;
};

} // namespace dcbd
