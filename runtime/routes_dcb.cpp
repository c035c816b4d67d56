// The dcb.events contract (DESIGN §4):
//
//   GET  /read?query=<json>&options=<json>   JSON array of
//                                            {type, tags, data, position}
//   POST /append                             {events, condition} ->
//                                            {durationInMicroseconds,
//                                             appendConditionFailed}
//
// A failed append condition is a 200 with appendConditionFailed: true.
#include "actors/engine.hpp"
#include "runtime/http_routes.hpp"
#include "runtime/json_api.hpp"
#include "runtime/metrics.hpp"
#include "runtime/routes_common.hpp"

namespace dcbd::http {

namespace {

void read(route_env& env, const std::shared_ptr<exchange>& x) {
  auto q = query_parameter(*x);
  auto options = options_parameter(*x);
  env.eng.read(std::move(q), options, [x](caf::expected<read_result> r) {
    x->on_strand([x, r = std::move(r)]() mutable {
      if (!r) {
        read_done(*x, code_of(r.error()), 0);
        return x->fail(r.error());
      }
      read_done(*x, errc::none, r->events.size());
      json out = json::array();
      for (auto& e : r->events)
        out.push_back(to_json(e, false, x->msgpack_out()));
      x->reply(200, out);
    });
  });
}

void append(route_env& env, const std::shared_ptr<exchange>& x) {
  auto req = parse_append(x->body());
  auto t0 = clock::now();
  env.eng.append(std::move(req), [x, t0](caf::expected<append_ack> r) {
    auto us
      = std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - t0)
          .count();
    x->on_strand([x, r = std::move(r), us]() mutable {
      auto code = r ? errc::none : code_of(r.error());
      append_done(*x, code);
      if (!r && code != errc::append_condition_failed)
        return x->fail(r.error());
      x->reply(200, json{{"durationInMicroseconds", us},
                         {"appendConditionFailed", !r}});
    });
  });
}

} // namespace

route_table dcb_routes(route_env& env) {
  return {
    {"/read", bhttp::verb::get,
     [&env](const auto& x) {
       read(env, x);
     }},
    {"/append", bhttp::verb::post,
     [&env](const auto& x) {
       append(env, x);
     }},
  };
}

} // namespace dcbd::http
