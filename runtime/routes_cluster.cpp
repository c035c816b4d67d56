// The cluster (API.md §9):
//
//   GET /v1/cluster   {"self": name, "members": [{"name", "addr", "status",
//                     "http", "incarnation", "since"}]}
//
// `status` is "up" (this node, and peers linked over the middleman) or
// "unreachable" (known, link down: dead, frozen or cut off; ownership does
// not depend on it). A node without DCB_CLUSTER_ADDR lists itself alone.
#include "actors/cluster.hpp"
#include "runtime/http_routes.hpp"

#include <ctime>

namespace dcbd::http {

namespace {

std::string iso8601(std::chrono::system_clock::time_point t) {
  auto secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

} // namespace

route_table cluster_routes(route_env& env) {
  return {
    {"/v1/cluster", bhttp::verb::get,
     [&env](const std::shared_ptr<exchange>& x) {
       auto members = json::array();
       if (env.cluster) {
         for (auto& m : env.cluster->members())
           members.push_back({{"name", m.name},
                              {"addr", m.addr},
                              {"status", to_string(m.status)},
                              {"http", m.http},
                              {"incarnation", m.incarnation},
                              {"since", iso8601(m.since)}});
       } else {
         members.push_back({{"name", env.node},
                            {"addr", ""},
                            {"status", "up"},
                            {"http", ""},
                            {"incarnation", ""}});
       }
       x->reply(200, json{{"self", env.node}, {"members", members}});
     }},
  };
}

} // namespace dcbd::http
