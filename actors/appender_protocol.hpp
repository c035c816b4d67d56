// Appenders: a pool of scheduled actors in front of the store actor. They
// validate appends before anything reaches the store, and run commands: the
// DCB loop of project -> decide -> conditional append -> on conflict retry
// with a fresh model.
//
// Messages:
//   (append_atom, append_request)   -> append_ack | error(errc)
//   (execute_atom, command_request) -> command_outcome | error(errc)
//       a rejection by decide() is an outcome (accepted = false), not an
//       error; a decide() that throws fails that command with `internal`.
//       A conflict is retried up to `max_attempts` times in all, then
//       answered with `append_condition_failed`.
#pragma once

#include "actors/inspect.hpp"
#include "actors/reader_protocol.hpp"
#include "actors/store_protocol.hpp"
#include "store/decision.hpp"

#include <caf/allowed_unsafe_message_type.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace dcbd {

/// A command carries C++ code (its projectors and decide). It travels between
/// actors of one node as a shared pointer; the code never crosses a node
/// boundary: the serializer skips it, and a remote appender answers
/// `invalid_argument` naming the command.
using command_ptr = std::shared_ptr<const command>;

} // namespace dcbd

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dcbd::command_ptr)

namespace dcbd {

using execute_atom = caf::atom_constant<caf::atom("dcbExecute")>;

/// Runs a command.
struct command_request {
  /// The command's name (travels even where the code cannot).
  std::string name;
  /// Node-local; see `command_ptr`.
  command_ptr code;
  /// The number of the first round the appender runs: above 1 when the
  /// caller already ran rounds that conflicted (`engine::execute_unbounded`
  /// runs the first on its own thread). At most `max_attempts`.
  std::uint32_t first_attempt = 1;
  /// Whether that round may project at the event cache's head
  /// (`decision_model::at_cache_head`); false after a conflict or a verdict
  /// without append made on such a model.
  bool optimistic = true;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, command_request& x) {
  return f(caf::meta::type_name("dcbd::command_request"), x.name, x.code,
           x.first_attempt, x.optimistic);
}

/// What became of a command that did not fail.
struct command_outcome {
  /// False when decide() rejected the command; nothing was appended.
  bool accepted = false;
  /// decide()'s reason when rejected.
  std::string rejection;
  /// Positions of the appended events; both 0 when none were appended.
  std::uint64_t first_position = 0;
  std::uint64_t last_position = 0;
  /// How many times the model was projected and decided (1 + retries).
  std::uint32_t attempts = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, command_outcome& x) {
  return f(caf::meta::type_name("dcbd::command_outcome"), x.accepted,
           x.rejection, x.first_position, x.last_position, x.attempts);
}

using appender_actor = caf::typed_actor<
  caf::replies_to<append_atom, append_request>::with<append_ack>,
  caf::replies_to<execute_atom, command_request>::with<command_outcome>>;

/// Settings of one appender.
struct appender_config {
  /// Where appends go.
  store_actor store;
  /// Where decision models are projected.
  reader_actor readers;
  /// Admission control shared with the store actor's other producers.
  std::shared_ptr<store_gate> gate;
  /// Projections and decisions per command, retries included.
  std::uint32_t max_attempts = 10;
  /// How long to wait for the store and the readers.
  std::chrono::milliseconds timeout{30'000};
  /// Input limits.
  dcbd::limits limits;
};

/// Spawns an appender.
appender_actor spawn_appender(caf::actor_system& sys, appender_config cfg);

} // namespace dcbd
