// A program that embeds a node (runtime/node.hpp) the way a user would: an
// option group of its own, an actor of its own, a patterned route, a metric,
// a job worker, commands for HTTP clients, and stop hooks.
// tests/runtime/node_embedding_test.cpp runs it as a child process; its
// "embedded: ..." lines on stdout tell the test what ran when.
#include "actors/engine.hpp"
#include "actors/jobs.hpp"
#include "runtime/command_registry.hpp"
#include "runtime/http_routes.hpp"
#include "runtime/metrics.hpp"
#include "runtime/node.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/config_option_adder.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>
#include <prometheus/counter.h>

#include <iostream>
#include <stdexcept>
#include <string>

namespace {

using dcbd::http::bhttp::verb;
using json = nlohmann::json;
using xptr = std::shared_ptr<dcbd::http::exchange>;

// An actor that lives until it is told to stop: were it not stopped by a
// hook, the actor system would wait for it and the process would not end.
caf::behavior idler(caf::event_based_actor*) {
  return {[](const std::string& s) {
    return s;
  }};
}

// Claims a name once: rejected when a NameClaimed event holds it.
dcbd::command claim(const std::string& name) {
  auto tag = "name:" + name;
  auto claimed = dcbd::make_projector(
    "claimed", dcbd::query{{dcbd::query_item{{"NameClaimed"}, {tag}}}}, false,
    [](bool& taken, const dcbd::sequenced_event&) {
      taken = true;
    });
  return dcbd::command{
    "claim", {std::move(claimed)}, [name, tag](const dcbd::decision_states& s) {
      if (s.get<bool>("claimed"))
        return dcbd::verdict::reject("name '" + name + "' is taken");
      return dcbd::verdict::accept(
        {dcbd::event{"NameClaimed", {tag}, name, {}}});
    }};
}

void add_commands(dcbd::command_registry& commands) {
  commands.add(
    "claim",
    [](const json& args) {
      auto i = args.find("name");
      if (i == args.end() || !i->is_string() || i->get<std::string>().empty())
        throw std::invalid_argument("\"name\" must be a non-empty string");
      return claim(i->get<std::string>());
    },
    "claims a name once");
  commands.add("explode", [](const json&) {
    return dcbd::command{"explode", {}, [](const dcbd::decision_states&) {
                           throw std::runtime_error("boom");
                           return dcbd::verdict::reject("unreachable");
                         }};
  });
}

void setup(dcbd::node& n) {
  auto& cfg = n.config();
  if (caf::get_or(cfg, "embedded.fail-setup", false)) {
    n.on_stop([] {
      std::cout << "embedded: hook of a failed setup" << std::endl;
    });
    throw std::runtime_error("no projectors today");
  }
  auto greeting = caf::get_or(cfg, "embedded.greeting", std::string{"hello"});
  auto& hellos = prometheus::BuildCounter()
                   .Name("embedded_hellos_total")
                   .Help("greetings answered")
                   .Register(*n.metrics()->registry())
                   .Add({});
  auto worker = n.system().spawn(idler);
  // Jobs of kind "embedded_echo" run here.
  dcbd::job_worker_spec echo;
  echo.kind = "embedded_echo";
  echo.handle = [](const dcbd::job& j) {
    std::cout << "embedded: job " << j.id << " ran" << std::endl;
    return dcbd::job_result::ok();
  };
  n.jobs().add_worker(std::move(echo));
  add_commands(n.commands());
  n.add_routes([&n, &hellos, greeting](dcbd::http::route_env&) {
    return dcbd::http::route_table{
      {"/v1/hello/{name}", verb::get,
       [&n, &hellos, greeting](const xptr& x) {
         hellos.Increment();
         x->reply(200, json{{"greeting", greeting},
                            {"name", x->path_param("name")},
                            {"node", n.name()}});
       }},
      {"/v1/stop/{code}", verb::post, [&n](const xptr& x) {
         auto code = std::stoi(x->path_param("code"));
         x->reply(202, json::object());
         n.stop(code);
       }}};
  });
  if (caf::get_or(cfg, "embedded.bad-route", false))
    n.add_routes([](dcbd::http::route_env&) {
      return dcbd::http::route_table{
        {"/v1/x/{", verb::get, [](const xptr&) {}}};
    });
  // Registered first, so it runs last: the engine still answers.
  n.on_stop([&n] {
    auto head = n.engine().head();
    std::cout << "embedded: engine hook, head "
              << (head ? std::to_string(*head) : "unavailable") << std::endl;
  });
  n.on_stop([worker] {
    caf::anon_send_exit(worker, caf::exit_reason::user_shutdown);
    std::cout << "embedded: actor hook" << std::endl;
  });
  std::cout << "embedded: setup done for " << n.name() << " on schema "
            << n.schema() << ", API port " << n.http_settings().port
            << std::endl;
}

} // namespace

int main(int argc, char** argv) {
  dcbd::node_options options;
  options.configure = [](caf::actor_system_config&,
                         caf::config_option_set& opts) {
    caf::config_option_adder{opts, "embedded"}
      .add<std::string>("greeting", "what GET /v1/hello/{name} says")
      .add<bool>("fail-setup", "throw from setup")
      .add<bool>("bad-route", "add a malformed route");
  };
  options.setup = setup;
  return dcbd::run_node(argc, argv, std::move(options));
}
