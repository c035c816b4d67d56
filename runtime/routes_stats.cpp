// The node at a glance, for the web console's overview (and anyone who
// wants numbers without a Prometheus server):
//
//   GET /v1/stats   {"node", "head", "uptime_ms", "time_ms",
//                    "appends": {"ok", "conflict", "invalid", "overloaded",
//                                "unavailable", "internal"},
//                    "events_appended", "reads", "events_read",
//                    "subscriptions", "deliveries", "fell_behind",
//                    "open_streams", "jobs_enqueued"}
//
// Counters since the node started (the same as its Prometheus counters);
// `time_ms` is a monotonic clock of the node, so a client takes two answers
// and divides the counters' difference by the difference of `time_ms` to
// get rates that do not depend on its own timers or the network. `head` is
// the log's head as the node's bus knows it (every node's commits).
#include "runtime/http_routes.hpp"
#include "runtime/metrics.hpp"

namespace dcbd::http {

route_table stats_routes(route_env& env) {
  auto started = clock::now();
  return {
    {"/v1/stats", bhttp::verb::get,
     [&env, started](const std::shared_ptr<exchange>& x) {
       using std::chrono::duration_cast;
       using std::chrono::milliseconds;
       auto now = clock::now();
       auto ms = [](auto d) {
         return duration_cast<milliseconds>(d).count();
       };
       json out{{"node", env.node},
                {"uptime_ms", ms(now - started)},
                {"time_ms", ms(now.time_since_epoch())}};
       node_stats s;
       if (env.metrics)
         s = env.metrics->stats();
       auto count = [](double v) {
         return static_cast<std::uint64_t>(v);
       };
       auto appends = json::object();
       for (auto& [result, n] : s.appends)
         appends[result] = count(n);
       out["head"] = count(s.head);
       out["appends"] = std::move(appends);
       out["events_appended"] = count(s.events_appended);
       out["reads"] = count(s.reads);
       out["events_read"] = count(s.events_read);
       out["subscriptions"] = count(s.subscriptions);
       out["deliveries"] = count(s.deliveries);
       out["fell_behind"] = count(s.fell_behind);
       out["open_streams"] = count(s.open_streams);
       out["jobs_enqueued"] = count(s.jobs_enqueued);
       x->reply(200, out);
     }},
  };
}

} // namespace dcbd::http
