#include "tests/support/pg_fixture.hpp"

#include <pqxx/pqxx>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cstdlib>
#include <optional>
#include <random>

namespace dcbd::test {

std::string test_dsn() {
  if (const char* dsn = std::getenv("DCBD_TEST_PG_DSN"); dsn && *dsn)
    return dsn;
  std::string port = "55432";
  if (const char* p = std::getenv("DCBD_PG_PORT"); p && *p)
    port = p;
  return "host=127.0.0.1 port=" + port + " user=postgres dbname=postgres";
}

std::string unique_schema() {
  static std::atomic<unsigned> counter{0};
  std::string base = "t";
  if (auto* info = ::testing::UnitTest::GetInstance()->current_test_info()) {
    base += '_';
    for (char c : std::string{info->name()}) {
      if (base.size() >= 30)
        break;
      base += std::isalnum(static_cast<unsigned char>(c))
                ? static_cast<char>(std::tolower(static_cast<unsigned char>(c)))
                : '_';
    }
  }
  std::random_device rd;
  return base + '_' + std::to_string(::getpid()) + '_'
         + std::to_string(counter++) + '_' + std::to_string(rd() % 100000);
}

void drop_schema(const std::string& schema) {
  pqxx::connection conn{test_dsn()};
  pqxx::nontransaction tx{conn};
  tx.exec("DROP SCHEMA IF EXISTS " + tx.quote_name(schema) + " CASCADE");
}

pg_config test_config(const std::string& schema) {
  pg_config cfg;
  cfg.dsn = test_dsn();
  cfg.schema = schema;
  cfg.connect_timeout = std::chrono::milliseconds{10000};
  return cfg;
}

std::string exec_sql(const std::string& sql) {
  pqxx::connection conn{test_dsn()};
  pqxx::nontransaction tx{conn};
  auto r = tx.exec(sql);
  if (r.empty() || r.columns() == 0 || r[0][0].is_null())
    return "";
  return r[0][0].c_str();
}

struct head_lock::impl {
  pqxx::connection conn;
  std::optional<pqxx::work> tx;

  explicit impl(const std::string& schema) : conn(test_dsn()) {
    tx.emplace(conn);
    tx->exec("SELECT position FROM " + tx->quote_name(schema)
             + ".head FOR UPDATE");
  }
};

head_lock::head_lock(const std::string& schema)
  : impl_(std::make_unique<impl>(schema)) {
  // nop
}

head_lock::~head_lock() {
  release();
}

void head_lock::release() {
  if (impl_ && impl_->tx) {
    impl_->tx->abort();
    impl_->tx.reset();
  }
}

void PgSchemaTest::SetUp() {
  schema_ = unique_schema();
}

void PgSchemaTest::TearDown() {
  drop_schema(schema_);
}

std::unique_ptr<pg_event_store>
PgSchemaTest::open_store(std::size_t pool_size) {
  auto cfg = test_config(schema_);
  cfg.pool_size = pool_size;
  return std::make_unique<pg_event_store>(std::move(cfg));
}

} // namespace dcbd::test
