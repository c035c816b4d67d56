// Commands over HTTP (DESIGN's /v1 API; the commands an embedding program
// registered, runtime/command_registry.hpp):
//
//   GET  /v1/commands         [{"name","description"}], by name
//   POST /v1/commands/{name}  body: the command's arguments, a JSON object
//                             (or msgpack; no body: {})
//     200 {"accepted":true,"first_position","last_position","attempts"}
//         (positions 0 when the verdict appended nothing)
//     200 {"accepted":false,"rejection","attempts"}: decide() refused, as
//         `command_outcome` says; a rejection is an outcome, not an error
//     400 invalid_argument: a body that is no object, arguments the factory
//         refused (its message), or events decide() returned that are
//         invalid
//     404 not_found: no command of that name
//     409 append_condition_failed: it conflicted on every attempt
//     503 overloaded / unavailable, 500 internal (decide() or a projector
//         threw; the message names which)
//
// A server without a registry (`route_env::commands` null) has no such
// routes; a node always has one, empty unless its setup added commands.
//
// The command runs as `engine::execute_unbounded` runs it: when the event
// cache holds the model, its first round (projection, decide(), the
// conditional append) on this HTTP thread, with no actor but the store
// actor in between; conflicts and what the cache cannot project on the
// appenders. So decide() and the projectors' apply run on the HTTP thread:
// keep them short, as pure functions are. The connection's timer bounds
// the wait by the engine's timeout (503 unavailable past it; the store's
// late answer is dropped); the answer is written on the connection's
// strand.
#include "actors/engine.hpp"
#include "runtime/command_registry.hpp"
#include "runtime/http_routes.hpp"
#include "runtime/routes_common.hpp"

#include <exception>
#include <stdexcept>

namespace dcbd::http {

namespace {

json outcome_json(const command_outcome& o) {
  if (!o.accepted)
    return json{{"accepted", false},
                {"rejection", o.rejection},
                {"attempts", o.attempts}};
  return json{{"accepted", true},
              {"first_position", o.first_position},
              {"last_position", o.last_position},
              {"attempts", o.attempts}};
}

// The command `entry` makes of the request's arguments; throws store_error
// (invalid_argument) when the body or the arguments are bad.
command make_command(const command_entry& entry, const exchange& x) {
  auto args = body_of(x);
  if (!args.is_object())
    throw store_error{errc::invalid_argument,
                      "command '" + entry.name
                        + "': the body must be a JSON object of arguments"};
  command cmd;
  try {
    cmd = entry.make(args);
  } catch (const std::exception& e) {
    throw store_error{errc::invalid_argument,
                      "command '" + entry.name + "': " + e.what()};
  } catch (...) {
    throw store_error{errc::invalid_argument,
                      "command '" + entry.name + "': bad arguments"};
  }
  // The registered name, whatever the factory called it: errors and
  // metrics name what the client asked for.
  cmd.name = entry.name;
  if (!cmd.decide)
    throw store_error{errc::internal,
                      "command '" + entry.name + "': decide is not set"};
  return cmd;
}

void run(route_env& env, const std::shared_ptr<exchange>& x) {
  auto name = x->path_param("name");
  auto entry = env.commands->find(name);
  if (!entry)
    return x->error(404, "not_found",
                    "no command '" + name + "'; see GET /v1/commands");
  auto cmd = make_command(*entry, *x);
  auto timeout = env.eng.config().timeout;
  x->set_deadline(timeout, [x, timeout] {
    x->fail(errc::unavailable, "the command did not finish within "
                                 + std::to_string(timeout.count())
                                 + " ms; its append may still be committed");
  });
  std::weak_ptr<exchange> wx = x;
  env.eng.execute_unbounded(std::move(cmd),
                            [wx](caf::expected<command_outcome> r) {
                              auto x = wx.lock();
                              if (!x)
                                return;
                              x->on_strand([x, r = std::move(r)] {
                                if (x->answered())
                                  return;
                                if (!r)
                                  return x->fail(r.error());
                                x->reply(200, outcome_json(*r));
                              });
                            });
}

void list(route_env& env, const std::shared_ptr<exchange>& x) {
  auto out = json::array();
  for (auto& entry : env.commands->list())
    out.push_back(
      json{{"name", entry->name}, {"description", entry->description}});
  x->reply(200, out);
}

} // namespace

route_table command_routes(route_env& env) {
  if (!env.commands)
    return {};
  return {
    {"/v1/commands", bhttp::verb::get,
     [&env](const std::shared_ptr<exchange>& x) {
       list(env, x);
     }},
    {"/v1/commands/{name}", bhttp::verb::post,
     [&env](const std::shared_ptr<exchange>& x) {
       run(env, x);
     }},
  };
}

} // namespace dcbd::http
