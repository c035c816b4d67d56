// Every metric that the alerting rules (prometheus/alerts.yml) and the
// Grafana dashboard (prometheus/grafana-dashboard.json) name is exported by
// a running node, with the labels their selectors use: a real `dcbd-courses`
// process (projector course_seats, job workers) on its own schema does a
// little work and its /metrics is scraped. The names are read from the
// files at test time, so a new panel or rule with a wrong name fails here.
#include "runtime/http_client.hpp"
#include "tests/runtime/node_process.hpp"

#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>

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

/// Label names by metric name.
using metric_labels = std::map<std::string, std::set<std::string>>;

std::string slurp(const std::string& path) {
  std::ifstream in{path};
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Every string in a JSON document (the dashboard's queries, titles and
// descriptions), decoded, so quotes inside queries are plain again.
void strings_of(const json& j, std::vector<std::string>& out) {
  if (j.is_string())
    out.push_back(j.get<std::string>());
  else if (j.is_structured())
    for (auto& item : j)
      strings_of(item, out);
}

// The dcb_* names in `texts`, and the label names their selectors match on
// (`name{label="v", other=~"..."}`; quoted values are dropped first).
metric_labels named_in(const std::vector<std::string>& texts) {
  static const std::regex name{R"(\bdcb_[a-zA-Z0-9_]*[a-zA-Z0-9])"};
  static const std::regex selector{
    R"((\bdcb_[a-zA-Z0-9_]*[a-zA-Z0-9])\{([^}]*)\})"};
  static const std::regex quoted{R"("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')"};
  static const std::regex matcher{R"(([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=))"};
  metric_labels out;
  for (auto& text : texts) {
    for (std::sregex_iterator i{text.begin(), text.end(), name}, e; i != e; ++i)
      out[i->str()];
    for (std::sregex_iterator i{text.begin(), text.end(), selector}, e; i != e;
         ++i) {
      auto inside = std::regex_replace((*i)[2].str(), quoted, "");
      auto& labels = out[(*i)[1].str()];
      for (std::sregex_iterator m{inside.begin(), inside.end(), matcher}, me;
           m != me; ++m)
        labels.insert((*m)[1].str());
    }
  }
  return out;
}

// The series of a Prometheus text exposition: metric names and their label
// names.
metric_labels exported(const std::string& text) {
  static const std::regex label{
    R"(([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*")"};
  metric_labels out;
  std::istringstream in{text};
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#')
      continue;
    auto end = line.find_first_of("{ ");
    auto& labels = out[line.substr(0, end)];
    if (end != std::string::npos && line[end] == '{') {
      auto close = line.rfind('}');
      auto inside = line.substr(end + 1, close - end - 1);
      for (std::sregex_iterator i{inside.begin(), inside.end(), label}, e;
           i != e; ++i)
        labels.insert((*i)[1].str());
    }
  }
  return out;
}

// The labels of `name` as exported, directly or as a histogram's
// _bucket/_count/_sum series; nullopt when it is not exported.
std::optional<std::set<std::string>> lookup(const metric_labels& scrape,
                                            const std::string& name) {
  std::optional<std::set<std::string>> found;
  for (auto suffix : {"", "_bucket", "_count", "_sum"}) {
    auto i = scrape.find(name + suffix);
    if (i == scrape.end())
      continue;
    if (!found)
      found.emplace();
    found->insert(i->second.begin(), i->second.end());
  }
  return found;
}

// What the names in `wanted` lack in `scrape`: missing metrics, and label
// names a selector uses that the metric does not have. Prometheus adds
// `instance` and `job` to every scraped series.
std::vector<std::string> problems(const metric_labels& wanted,
                                  const metric_labels& scrape) {
  std::vector<std::string> out;
  for (auto& [name, labels] : wanted) {
    auto have = lookup(scrape, name);
    if (!have) {
      out.push_back(name + " is not exported");
      continue;
    }
    for (auto& l : labels)
      if (l != "instance" && l != "job" && !have->count(l))
        out.push_back(name + " has no label " + l);
  }
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (auto& s : v)
    out += "\n  " + s;
  return out;
}

metric_labels alert_names() {
  return named_in({slurp(DCBD_SOURCE_DIR "/prometheus/alerts.yml")});
}

metric_labels dashboard_names() {
  std::vector<std::string> texts;
  strings_of(
    json::parse(slurp(DCBD_SOURCE_DIR "/prometheus/grafana-dashboard.json")),
    texts);
  return named_in(texts);
}

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
  EXPECT_GE(alert_names().size(), 8u);
  EXPECT_GE(dashboard_names().size(), 40u);
}

class OpsMetricsNode : public PgSchemaTest {};

TEST_F(OpsMetricsNode, EveryNameInAlertsAndDashboardIsExported) {
  auto wanted = alert_names();
  for (auto& [name, labels] : dashboard_names())
    wanted[name].insert(labels.begin(), labels.end());

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
