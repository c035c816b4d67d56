// Commands by name, for clients that are not C++ (POST /v1/commands/{name},
// runtime/routes_commands.cpp).
//
// A command is C++ code: projectors plus `decide` (store/decision.hpp). A
// program that embeds a node registers a factory per command name; the
// factory turns a request's JSON arguments into the command, and the node
// runs it as `engine::execute` does (project, decide, conditional append,
// retried on conflicts). So HTTP clients enforce the application's rules
// without holding its code:
//
//   n.commands().add("subscribe", [](const nlohmann::json& args) {
//     return subscribe(args.at("student").get<std::string>(),
//                      args.at("course").get<std::string>());
//   }, "subscribes a student to a course");
#pragma once

#include "store/decision.hpp"

#include <nlohmann/json_fwd.hpp>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace dcbd {

/// Makes a command from the JSON arguments of a request (an object; `{}`
/// when the request has no body). What it throws is the client's fault: the
/// request gets 400 `invalid_argument` with the message, and nothing runs.
using command_factory = std::function<command(const nlohmann::json& args)>;

/// A registered command.
struct command_entry {
  std::string name;
  /// One line for people (GET /v1/commands); may be empty.
  std::string description;
  command_factory make;
};

/// The node's commands by name. Thread-safe.
class command_registry {
public:
  /// Registers `make` as `name`. Throws `std::invalid_argument` when the
  /// name is not 1-100 letters, digits, `_`, `-` or `.`, when it is taken,
  /// or when `make` is empty.
  void add(std::string name, command_factory make,
           std::string description = {});

  /// The command named `name`, or null.
  std::shared_ptr<const command_entry> find(std::string_view name) const;

  /// Every command, by name.
  std::vector<std::shared_ptr<const command_entry>> list() const;

private:
  mutable std::mutex mtx_;
  std::map<std::string, std::shared_ptr<const command_entry>, std::less<>>
    entries_;
};

} // namespace dcbd
