// Every metric that the alerting rules (prometheus/alerts.yml) and the
// Grafana dashboard (prometheus/grafana-dashboard.json) name is exported by
// a running node, with the labels their selectors use: a real `dcbd-courses`
// process (projector course_seats, job workers) on its own schema does a
// little work and its /metrics is scraped. The names are read from the
// files at test time, so a new panel or rule with a wrong name fails here.
// The dcb_replica_* series exist only on a node with a standby: the
// replica node test (tests/runtime/node_replica_test.cpp) checks those.
#include "runtime/http_client.hpp"
#include "tests/ops/metric_names.hpp"
#include "tests/runtime/node_process.hpp"

#include <nlohmann/json.hpp>

#ifndef DCBD_COURSES_BINARY
#  error "DCBD_COURSES_BINARY must name the dcbd-courses executable"
#endif
#ifndef DCBD_SOURCE_DIR
#  error "DCBD_SOURCE_DIR must name the repository root"
#endif

namespace dcbd::test {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using namespace ops;

TEST(OpsMetrics, NamesAndSelectorLabelsAreFoundInTheFiles) {
  // The extraction itself: a broken regex would find nothing and pass.
  auto found = named_in({R"(rate(dcb_a_total{result=~"x|y", instance=~"$i"}))"
                         R"( / dcb_b_seconds_bucket{le="+Inf"} dcbd dcb_)"});
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found["dcb_a_total"],
            (std::set<std::string>{"instance", "result"}));
  EXPECT_EQ(found["dcb_b_seconds_bucket"], (std::set<std::string>{"le"}));
  auto scrape = exported("# TYPE dcb_h_seconds histogram\n"
                         "dcb_h_seconds_bucket{route=\"/a\",le=\"1\"} 0\n"
                         "dcb_h_seconds_count{route=\"/a\"} 0\n"
                         "dcb_c_total 3\n");
  EXPECT_TRUE(
    problems(named_in({"dcb_h_seconds{route=\"/a\"} dcb_c_total"}), scrape)
      .empty());
  EXPECT_EQ(problems(named_in({"dcb_c_total{code=\"1\"} dcb_nope"}), scrape),
            (std::vector<std::string>{"dcb_c_total has no label code",
                                      "dcb_nope is not exported"}));
  // The real files name a good share of the metrics.
  EXPECT_GE(alert_names(DCBD_SOURCE_DIR).size(), 8u);
  EXPECT_GE(dashboard_names(DCBD_SOURCE_DIR).size(), 40u);
  // The prefix split that leaves the replica's series to the replica test.
  auto some = named_in({"dcb_replica_up dcb_replica_lag_positions dcb_x"});
  EXPECT_EQ(with_prefix(some, "dcb_replica_").size(), 2u);
  EXPECT_EQ(with_prefix(some, "dcb_replica_", false).size(), 1u);
}

class OpsMetricsNode : public PgSchemaTest {};

TEST_F(OpsMetricsNode, EveryNameInAlertsAndDashboardIsExported) {
  // A node without a standby exports no dcb_replica_* series.
  auto wanted = with_prefix(ops_names(DCBD_SOURCE_DIR), "dcb_replica_", false);

  node_process node{
    schema_, {}, 0, {{"DCB_NODE_NAME", "ops-metrics"}}, DCBD_COURSES_BINARY};
  ASSERT_TRUE(node.up()) << node.log();
  client::connection api{
    client::endpoint{"127.0.0.1", std::to_string(node.port()), ""}};
  // A subscription: the projector counts it, the example's trigger makes a
  // confirmation job that a worker runs (dcb_jobs, dcb_job_runs_total).
  json subscribed{{"type", "StudentSubscribed"},
                  {"tags", {"student:s1", "course:c1"}},
                  {"data", json{{"student", "s1"}, {"course", "c1"}}.dump()}};
  auto r = api.call("POST", "/v1/append",
                    json{{"events", json::array({subscribed})}}.dump());
  ASSERT_EQ(r.status, 200u) << r.body;
  r = api.call("GET", "/v1/read");
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_NE(r.body.find("StudentSubscribed"), std::string::npos) << r.body;

  // Some series appear only after the node's once-a-second poll, or after
  // the job ran: scrape until nothing is missing, or give up.
  std::vector<std::string> missing;
  auto until = std::chrono::steady_clock::now() + 30s;
  do {
    // A connection per scrape: the exposer closes each one after answering.
    client::connection metrics{
      client::endpoint{"127.0.0.1", std::to_string(node.metrics_port()), ""}};
    auto m = metrics.call("GET", "/metrics");
    ASSERT_EQ(m.status, 200u) << m.body;
    missing = problems(wanted, exported(m.body));
    if (missing.empty())
      break;
    std::this_thread::sleep_for(200ms);
  } while (std::chrono::steady_clock::now() < until);
  EXPECT_TRUE(missing.empty())
    << "named in prometheus/alerts.yml or prometheus/grafana-dashboard.json, "
       "but not on a running node's /metrics:"
    << join(missing);
}

} // namespace
} // namespace dcbd::test
