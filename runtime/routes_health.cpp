// Probes, for orchestrators (not named in 404 answers):
//
//   GET /healthz   200 {"status": "ok"} while the process serves
//   GET /readyz    200 {"status": "ready", "head": n} when the store answers,
//                  else 503 {"status": "unavailable", "message"}
#include "actors/engine.hpp"
#include "runtime/http_routes.hpp"

namespace dcbd::http {

route_table health_routes(route_env& env) {
  return {
    {"/healthz", bhttp::verb::get,
     [](const auto& x) {
       x->reply(200, json{{"status", "ok"}});
     },
     false},
    {"/readyz", bhttp::verb::get,
     [&env](const std::shared_ptr<exchange>& x) {
       env.eng.head([x](caf::expected<std::uint64_t> r) {
         x->on_strand([x, r = std::move(r)]() mutable {
           if (!r)
             return x->reply(503, json{{"status", "unavailable"},
                                       {"message", message_of(r.error())}});
           x->reply(200, json{{"status", "ready"}, {"head", *r}});
         });
       });
     },
     false},
  };
}

} // namespace dcbd::http
