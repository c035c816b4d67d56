// A dcbd process with a read replica (DCB_POSTGRES_READ_DSN): reads over
// HTTP see every append acknowledged before them, the standby serves them,
// and the node exports where its reads went.
#include "tests/ops/metric_names.hpp"
#include "tests/runtime/http_test_client.hpp"
#include "tests/runtime/node_process.hpp"
#include "tests/support/replica_fixture.hpp"

#include <fstream>
#include <iostream>
#include <iterator>

#ifndef DCBD_SOURCE_DIR
#  error "DCBD_SOURCE_DIR must name the repository root"
#endif

namespace dcbd::test {
namespace {

using namespace http_support;

class NodeReplica : public ReplicaTest {
protected:
  static std::string scrape(std::uint16_t metrics_port) {
    client c{metrics_port};
    return c.get("/metrics").body;
  }
};

TEST_F(NodeReplica, HttpReadsSeeEveryAppendAndTheStandbyServesThem) {
  // Without the cache every read goes through the replica store.
  node_process n{schema_,
                 {"--dcbd.cache-bytes=0", "--dcbd.replica-wait-ms=50"},
                 0,
                 {{"DCB_POSTGRES_READ_DSN", read_dsn_}}};
  ASSERT_TRUE(n.up()) << n.log();
  client c{n.port()};
  constexpr int rounds = 200;
  for (int i = 0; i < rounds; ++i) {
    auto tag = "k:" + std::to_string(i);
    auto a = c.post("/v1/append", json{{"events", {ev("E", {tag})}}});
    ASSERT_EQ(a.status, 200u) << a.body;
    auto pos = a.j()["last_position"].get<std::uint64_t>();
    auto r = c.get(read_target("/read", items({}, {tag})));
    ASSERT_EQ(r.status, 200u) << r.body;
    auto events = json::parse(r.body);
    ASSERT_EQ(events.size(), 1u) << "round " << i << ": " << r.body;
    EXPECT_EQ(events[0]["position"].get<std::uint64_t>(), pos);
  }
  auto text = scrape(n.metrics_port());
  auto caught_up = sample(
    text, R"(dcb_replica_reads_total{reason="caught_up",served_by="replica"})");
  auto waited = sample(
    text, R"(dcb_replica_reads_total{reason="waited",served_by="replica"})");
  ASSERT_GE(caught_up, 0) << text;
  ASSERT_GE(waited, 0) << text;
  EXPECT_GT(caught_up + waited, 0) << text;
  double all = 0;
  for (auto reason :
       {"caught_up", "waited", "lagging", "down", "failed", "no_index"}) {
    auto by = std::string{reason} == "caught_up"
                  || std::string{reason} == "waited"
                ? "replica"
                : "primary";
    auto v = sample(text, std::string{"dcb_replica_reads_total{reason=\""}
                            + reason + "\",served_by=\"" + by + "\"}");
    ASSERT_GE(v, 0) << reason << "\n" << text;
    all += v;
  }
  EXPECT_GE(all, rounds);
  std::cout << "[          ] " << all << " reads: " << caught_up
            << " by the standby at once, " << waited
            << " after waiting for it, " << all - caught_up - waited
            << " by the primary\n";
  EXPECT_EQ(sample(text, "dcb_replica_up"), 1) << text;
  EXPECT_GE(sample(text, "dcb_replica_lag_positions"), 0) << text;
  EXPECT_GT(sample(text, "dcb_replica_replayed_position"), 0) << text;
  // The replica's series that the alerts and the dashboard name (the ops
  // test checks all the others, on a node without a standby).
  auto wanted = ops::with_prefix(ops::ops_names(DCBD_SOURCE_DIR),
                                 "dcb_replica_");
  EXPECT_GE(wanted.size(), 3u);
  auto missing = ops::problems(wanted, ops::exported(text));
  EXPECT_TRUE(missing.empty())
    << "named in prometheus/alerts.yml or prometheus/grafana-dashboard.json, "
       "but not on a node with a standby:"
    << ops::join(missing);
  std::ifstream log{n.log()};
  std::string said{std::istreambuf_iterator<char>{log}, {}};
  EXPECT_NE(said.find("reads go to the standby of DCB_POSTGRES_READ_DSN"),
            std::string::npos)
    << said;
}

TEST_F(NodeReplica, ANodeWithoutAReplicaExportsNoReplicaSeries) {
  node_process n{schema_};
  ASSERT_TRUE(n.up()) << n.log();
  client c{n.port()};
  auto a = c.post("/v1/append", json{{"events", {ev("E", {"k"})}}});
  ASSERT_EQ(a.status, 200u) << a.body;
  auto text = scrape(n.metrics_port());
  EXPECT_NE(text.find("dcb_append_requests_total"), std::string::npos);
  EXPECT_EQ(text.find("dcb_replica_"), std::string::npos);
}

} // namespace
} // namespace dcbd::test
