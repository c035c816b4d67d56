// The metric names that prometheus/alerts.yml and
// prometheus/grafana-dashboard.json use, with the labels their selectors
// match on, and what a node's /metrics exports: the checks of
// tests/ops/exported_metrics_test.cpp (every node) and
// tests/runtime/node_replica_test.cpp (dcb_replica_*, only exported by a
// node with a standby).
#pragma once

#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace dcbd::test::ops {

/// Label names by metric name.
using metric_labels = std::map<std::string, std::set<std::string>>;

inline std::string slurp(const std::string& path) {
  std::ifstream in{path};
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Every string in a JSON document (the dashboard's queries, titles and
// descriptions), decoded, so quotes inside queries are plain again.
inline void strings_of(const nlohmann::json& j, std::vector<std::string>& out) {
  if (j.is_string())
    out.push_back(j.get<std::string>());
  else if (j.is_structured())
    for (auto& item : j)
      strings_of(item, out);
}

// The dcb_* names in `texts`, and the label names their selectors match on
// (`name{label="v", other=~"..."}`; quoted values are dropped first).
inline metric_labels named_in(const std::vector<std::string>& texts) {
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
inline metric_labels exported(const std::string& text) {
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
inline std::optional<std::set<std::string>> lookup(const metric_labels& scrape,
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
inline std::vector<std::string> problems(const metric_labels& wanted,
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

inline std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (auto& s : v)
    out += "\n  " + s;
  return out;
}

/// The names in prometheus/alerts.yml under the repository root `source`.
inline metric_labels alert_names(const std::string& source) {
  return named_in({slurp(source + "/prometheus/alerts.yml")});
}

/// The names in prometheus/grafana-dashboard.json under `source`.
inline metric_labels dashboard_names(const std::string& source) {
  std::vector<std::string> texts;
  strings_of(
    nlohmann::json::parse(slurp(source + "/prometheus/grafana-dashboard.json")),
    texts);
  return named_in(texts);
}

/// The names of alerts and dashboard together, with their labels.
inline metric_labels ops_names(const std::string& source) {
  auto wanted = alert_names(source);
  for (auto& [name, labels] : dashboard_names(source))
    wanted[name].insert(labels.begin(), labels.end());
  return wanted;
}

/// The names of `all` that begin (`keep`) or do not begin with `prefix`.
inline metric_labels with_prefix(const metric_labels& all,
                                 const std::string& prefix, bool keep = true) {
  metric_labels out;
  for (auto& [name, labels] : all)
    if ((name.rfind(prefix, 0) == 0) == keep)
      out.emplace(name, labels);
  return out;
}

} // namespace dcbd::test::ops
