// How to reach PostgreSQL and where the store lives.
#pragma once

#include "store/model.hpp"

#include <chrono>
#include <cstddef>
#include <string>

namespace dcbd {

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

} // namespace dcbd
