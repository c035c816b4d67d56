// Test support: a real PostgreSQL schema per test.
#pragma once

#include "store/cached_store.hpp"
#include "store/memory_store.hpp"
#include "store/pg_lease.hpp"
#include "store/pg_store.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace dcbd::test {

/// The DSN of the test server: $DCBD_TEST_PG_DSN, or the `./dev pg` default
/// (host=127.0.0.1 port=$DCBD_PG_PORT or 55432, user postgres).
std::string test_dsn();

/// A fresh schema name, unique per call, derived from the running test.
std::string unique_schema();

/// Drops `schema` and everything in it.
void drop_schema(const std::string& schema);

/// A `pg_config` for `schema` on the test server.
pg_config test_config(const std::string& schema);

/// Runs `sql` (no parameters) on the test server; returns the first column
/// of the first row as text, or "" when there is no row.
std::string exec_sql(const std::string& sql);

/// Holds the row lock every append on `schema` takes (its `head` row) from
/// construction until `release()` or destruction, from a connection of its
/// own: appends block meanwhile, as on a stalled database; reads go on.
class head_lock {
public:
  explicit head_lock(const std::string& schema);
  ~head_lock();

  head_lock(const head_lock&) = delete;
  head_lock& operator=(const head_lock&) = delete;

  /// Lets the blocked appends go on; harmless when released.
  void release();

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// A fixture that owns one schema on the test server for the duration of a
/// test and drops it afterwards.
class PgSchemaTest : public ::testing::Test {
protected:
  void SetUp() override;
  void TearDown() override;

  /// Opens a new store on this test's schema (a new pool each call, as a
  /// second node would).
  std::unique_ptr<pg_event_store> open_store(std::size_t pool_size = 4);

  std::string schema_;
};

/// Store factories for typed tests over both implementations.
struct memory_store_factory {
  static constexpr const char* name = "memory";
  std::unique_ptr<event_store> make() {
    return std::make_unique<memory_event_store>();
  }
  void cleanup() {
  }
};

struct pg_store_factory {
  static constexpr const char* name = "pg";
  std::string schema;
  std::unique_ptr<event_store> make() {
    schema = unique_schema();
    return std::make_unique<pg_event_store>(test_config(schema));
  }
  void cleanup() {
    if (!schema.empty())
      drop_schema(schema);
  }
};

/// The PostgreSQL store behind a node's event cache (store/cached_store):
/// `Bytes` large enough for every test's log, or tiny, so reads straddle
/// the cache's low end and streams outlive evictions. `Leased`: the store
/// takes the read lease (store/pg_lease.hpp) as soon as it can, so most
/// reads take their read index from it instead of a query.
template <std::size_t Bytes, bool Leased = false>
struct pg_cached_factory {
  static constexpr const char* name = Leased               ? "pg_leased"
                                      : Bytes >= 1'000'000 ? "pg_cached"
                                                           : "pg_tiny_cache";
  std::string schema;
  std::unique_ptr<event_store> make() {
    schema = unique_schema();
    auto cfg = test_config(schema);
    auto backend = std::make_shared<pg_event_store>(cfg);
    auto index = make_read_index(backend);
    if (Leased) {
      // The first store installed the schema the lease needs.
      read_lease_config lc;
      lc.dsn = cfg.dsn;
      lc.schema = schema;
      lc.quiet = std::chrono::milliseconds{0};
      cfg.lease = std::make_shared<read_lease>(lc);
      backend = std::make_shared<pg_event_store>(cfg);
      index->use_lease([lease = cfg.lease] {
        return lease->index();
      });
    }
    return std::make_unique<cached_event_store>(
      backend, std::make_shared<event_cache>(Bytes), index);
  }
  void cleanup() {
    if (!schema.empty())
      drop_schema(schema);
  }
};

/// Typed-test fixture: `store_` is a fresh, empty store of the parameter's
/// kind for every test.
template <class Factory>
class StoreTest : public ::testing::Test {
protected:
  void SetUp() override {
    store_ = factory_.make();
  }
  void TearDown() override {
    store_.reset();
    factory_.cleanup();
  }

  Factory factory_;
  std::unique_ptr<event_store> store_;
};

using store_kinds
  = ::testing::Types<memory_store_factory, pg_store_factory,
                     pg_cached_factory<std::size_t{256} << 20>,
                     pg_cached_factory<2048>,
                     pg_cached_factory<std::size_t{256} << 20, true>>;

/// Names typed-test instances "memory", "pg", "pg_cached", "pg_tiny_cache"
/// and "pg_leased".
struct store_kind_names {
  template <class T>
  static std::string GetName(int) {
    return T::name;
  }
};

} // namespace dcbd::test
