// Pages of a read as PostgreSQL sends them (store/pg_read): bytea in both
// text output formats, text[] with quoting, and the two ways rows arrive
// (libpqxx for the readers, libpq straight for the HTTP threads'
// connections) giving the very events the store reads.
#include "store/pg_read.hpp"

#include "store/error.hpp"
#include "store/pg_pool.hpp"
#include "store/pg_store.hpp"
#include "tests/support/pg_fixture.hpp"

#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <memory>
#include <string>
#include <vector>

namespace dcbd::test {
namespace {

TEST(PgRead, DecodesByteaInHexAndEscapeFormats) {
  using namespace std::string_literals;
  EXPECT_EQ(pg::decode_bytea("\\x"), "");
  EXPECT_EQ(pg::decode_bytea("\\x00ff41aB"), "\x00\xff\x41\xab"s);
  EXPECT_EQ(pg::decode_bytea("a\\000b\\\\c\\377"), "a\x00"
                                                   "b\\c\xff"s);
  for (auto bad : {"\\x0", "\\x0g", "\\xzz"})
    EXPECT_THROW(pg::decode_bytea(bad), store_error) << bad;
}

TEST(PgRead, ParsesTextArraysWithQuotedElements) {
  using v = std::vector<std::string>;
  EXPECT_EQ(pg::parse_text_array("{}"), v{});
  EXPECT_EQ(pg::parse_text_array("{a,b:c}"), (v{"a", "b:c"}));
  EXPECT_EQ(pg::parse_text_array(R"({"a b","x,y","q\"t","b\\s",'s})"),
            (v{"a b", "x,y", "q\"t", "b\\s", "'s"}));
  EXPECT_THROW(pg::parse_text_array("a,b"), store_error);
}

class PgReadPages : public PgSchemaTest {};

// Every byte value in data and metadata, tags that need quoting: a page
// read through libpqxx and through libpq (hex and escape output) holds the
// events the store reads, with their positions, times and head.
TEST_F(PgReadPages, BothWaysOfReadingAPageGiveTheStoresEvents) {
  auto store = open_store();
  std::string all_bytes;
  for (int b = 0; b < 256; ++b)
    all_bytes += static_cast<char>(b);
  std::vector<event> events;
  for (int i = 0; i < 5; ++i) {
    event e;
    e.type = "T" + std::to_string(i % 2);
    e.tags = {"k:1", "odd \"tag\", {x}", "n:" + std::to_string(i)};
    e.data = all_bytes + std::to_string(i);
    e.metadata = i % 2 ? std::string{"\0m\\", 3} : std::string{};
    events.push_back(e);
  }
  store->append(events);
  query q;
  q.items.push_back(query_item{{"T1"}, {"k:1"}});
  q.items.push_back(query_item{{}, {"n:4"}});
  auto expected = store->read(q, read_options{});
  ASSERT_EQ(expected.events.size(), 3u);
  auto page = pg::make_page(schema_, q, false, 1, 1000, 1000, {});

  pg_config cfg;
  cfg.dsn = test_dsn();
  pg_pool pool{cfg};
  read_result via_pqxx;
  via_pqxx.head = pg::collect(pool.query(page.sql, page.params),
                              via_pqxx.events);

  std::unique_ptr<PGconn, decltype(&PQfinish)> conn{
    PQconnectdb(test_dsn().c_str()), &PQfinish};
  ASSERT_EQ(PQstatus(conn.get()), CONNECTION_OK);
  std::vector<const char*> values;
  for (auto& p : page.params)
    values.push_back(p.c_str());
  for (auto format : {"hex", "escape"}) {
    auto set = std::string{"SET bytea_output = "} + format;
    PQclear(PQexec(conn.get(), set.c_str()));
    auto* res = PQexecParams(conn.get(), page.sql.c_str(),
                             static_cast<int>(values.size()), nullptr,
                             values.data(), nullptr, nullptr, 0);
    ASSERT_EQ(PQresultStatus(res), PGRES_TUPLES_OK)
      << PQerrorMessage(conn.get());
    read_result via_libpq;
    via_libpq.head = pg::collect(res, via_libpq.events);
    PQclear(res);
    for (auto* got : {&via_pqxx, &via_libpq}) {
      EXPECT_EQ(got->head, expected.head) << format;
      ASSERT_EQ(got->events.size(), expected.events.size()) << format;
      for (std::size_t i = 0; i < got->events.size(); ++i) {
        EXPECT_EQ(got->events[i].position, expected.events[i].position);
        EXPECT_EQ(got->events[i].recorded_at, expected.events[i].recorded_at);
        EXPECT_EQ(got->events[i].event, expected.events[i].event) << format;
      }
    }
  }
  // An empty page still brings the head.
  auto none = pg::make_page(schema_, q, false, 100, 1000, 10, {});
  read_result empty;
  empty.head = pg::collect(pool.query(none.sql, none.params), empty.events);
  EXPECT_EQ(empty.head, expected.head);
  EXPECT_TRUE(empty.events.empty());
}

} // namespace
} // namespace dcbd::test
