// Projector management (API.md §6):
//
//   GET  /v1/projectors                       every projector on the database
//   GET  /v1/projectors/{name}                one; 404 unknown
//   POST /v1/projectors/{name}/pause          200 with the new status;
//   POST /v1/projectors/{name}/resume         idempotent: in that state
//   POST /v1/projectors/{name}/rebuild        already, 200 and no change
//   GET  /v1/projectors/{name}/dead-letters   [{"position","error","attempts"}]
//   POST /v1/projectors/{name}/dead-letters/{position}/retry|skip
//
// A status is {"name","state","position","head","lag","owner","epoch",
// "dead_letters"} plus "version", "error" when there is one, and
// "heartbeat_age_ms" on the node that runs it (ms since it last showed
// progress or health; the console shows it). `state` is
// this node's view: a node without the instance reports standby, or the
// owner's paused/failed state from the projector's row (`owner` names the
// node that runs it, "" when none does). Management works from any node: in
// a cluster (actors/cluster.hpp) the call is forwarded to the owner, which
// acts at once and answers with its status; without one, or when the owner
// cannot be reached, pause, resume and rebuild go through the projector's
// row (the owner applies them within its poll interval), and retrying a
// dead letter, which needs the handler, answers 409 naming the owner.
#include "actors/projector.hpp"
#include "runtime/http_routes.hpp"
#include "runtime/routes_common.hpp"

#include <cctype>
#include <charconv>
#include <optional>

namespace dcbd::http {

namespace {

json status_json(const projector_status& s) {
  json j{{"name", s.name},         {"state", to_string(s.state)},
         {"position", s.position}, {"head", s.head},
         {"lag", s.lag},           {"owner", s.owner},
         {"epoch", s.epoch},       {"dead_letters", s.dead_letters},
         {"version", s.version}};
  if (!s.error.empty())
    j["error"] = s.error;
  // Only a local instance has a heartbeat; elsewhere it is the owner's.
  if (s.local && s.heartbeat != std::chrono::steady_clock::time_point{})
    j["heartbeat_age_ms"]
      = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - s.heartbeat)
          .count();
  return j;
}

unsigned status_of(projector_reply::code c) {
  switch (c) {
    case projector_reply::code::ok:
      return 200;
    case projector_reply::code::not_found:
      return 404;
    case projector_reply::code::conflict:
      return 409;
    case projector_reply::code::invalid_argument:
      return 400;
    case projector_reply::code::unavailable:
      return 503;
    case projector_reply::code::internal:
      return 500;
  }
  return 500;
}

const char* code_of(projector_reply::code c) {
  switch (c) {
    case projector_reply::code::ok:
      return "ok";
    case projector_reply::code::not_found:
      return "not_found";
    case projector_reply::code::conflict:
      return "conflict";
    case projector_reply::code::invalid_argument:
      return "invalid_argument";
    case projector_reply::code::unavailable:
      return "unavailable";
    case projector_reply::code::internal:
      return "internal";
  }
  return "internal";
}

// A dead letter's position: a decimal number from 1.
std::uint64_t position_of(const std::string& text) {
  std::uint64_t p = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), p);
  if (ec != std::errc{} || ptr != text.data() + text.size() || p == 0)
    throw store_error{errc::invalid_argument,
                      "position: expected a positive integer, got \"" + text
                        + "\""};
  return p;
}

// The {name} of the path, when it can name a projector (else 404: it
// cannot be one, and the database need not be asked).
std::optional<std::string> name_of(const exchange& x) {
  auto& name = x.path_param("name");
  if (name.empty() || name.size() > 100)
    return std::nullopt;
  for (unsigned char c : name)
    if (!(std::isalnum(c) || c == '_' || c == '-' || c == '.'))
      return std::nullopt;
  return name;
}

void unknown(exchange& x) {
  x.error(404, "not_found", "no projector named " + x.path_param("name"));
}

handler act(route_env& env, projector_action action) {
  return [&env, action](const std::shared_ptr<exchange>& x) {
    auto known = name_of(*x);
    if (!known)
      return unknown(*x);
    auto name = *known;
    std::uint64_t position = 0;
    if (action == projector_action::retry_dead_letter
        || action == projector_action::skip_dead_letter)
      position = position_of(x->path_param("position"));
    env.projectors->control(name, action, position, [x](projector_reply r) {
      if (r.what == projector_reply::code::ok)
        return x->reply(200, status_json(r.status));
      x->error(status_of(r.what), code_of(r.what), r.message);
    });
  };
}

} // namespace

route_table projector_routes(route_env& env) {
  if (!env.projectors)
    return {};
  using bhttp::verb;
  auto& host = *env.projectors;
  return {
    {"/v1/projectors", verb::get,
     [&host](const std::shared_ptr<exchange>& x) {
       host.list([x](caf::expected<std::vector<projector_status>> r) {
         if (!r)
           return x->error(503, "unavailable", to_string(r.error()));
         auto out = json::array();
         for (auto& s : *r)
           out.push_back(status_json(s));
         x->reply(200, out);
       });
     }},
    {"/v1/projectors/{name}", verb::get,
     [&host](const std::shared_ptr<exchange>& x) {
       auto known = name_of(*x);
       if (!known)
         return unknown(*x);
       auto name = *known;
       host.list(name, [x,
                        name](caf::expected<std::vector<projector_status>> r) {
         if (!r)
           return x->error(503, "unavailable", to_string(r.error()));
         if (r->empty())
           return x->error(404, "not_found", "no projector named " + name);
         x->reply(200, status_json(r->front()));
       });
     }},
    {"/v1/projectors/{name}/pause", verb::post,
     act(env, projector_action::pause)},
    {"/v1/projectors/{name}/resume", verb::post,
     act(env, projector_action::resume)},
    {"/v1/projectors/{name}/rebuild", verb::post,
     act(env, projector_action::rebuild)},
    {"/v1/projectors/{name}/dead-letters", verb::get,
     [&host](const std::shared_ptr<exchange>& x) {
       auto known = name_of(*x);
       if (!known)
         return unknown(*x);
       auto name = *known;
       host.dead_letters(
         name,
         [x, name](caf::expected<std::optional<std::vector<dead_letter>>> r) {
           if (!r)
             return x->error(503, "unavailable", to_string(r.error()));
           if (!*r)
             return x->error(404, "not_found", "no projector named " + name);
           auto out = json::array();
           for (auto& d : **r)
             out.push_back({{"position", d.position},
                            {"error", d.error},
                            {"attempts", d.attempts}});
           x->reply(200, out);
         });
     }},
    {"/v1/projectors/{name}/dead-letters/{position}/retry", verb::post,
     act(env, projector_action::retry_dead_letter)},
    {"/v1/projectors/{name}/dead-letters/{position}/skip", verb::post,
     act(env, projector_action::skip_dead_letter)},
  };
}

} // namespace dcbd::http
