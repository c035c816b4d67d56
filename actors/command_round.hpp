// One round of a command's DCB loop after its model is projected: decide,
// then turn an accepted verdict into the conditional append that carries the
// model's condition. Shared by the appenders (actors/appender.cpp) and the
// engine's direct first round (`engine::execute_unbounded`), so that both
// answer a command the same way and with the same messages.
#pragma once

#include "actors/appender_protocol.hpp"
#include "actors/errors.hpp"
#include "store/decision.hpp"
#include "store/validation.hpp"

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <utility>

namespace dcbd::command_round {

inline std::string prefix(const command& cmd) {
  return "command '" + cmd.name + "': ";
}

/// decide() on `states`; what it throws fails the command with `internal`.
inline caf::expected<verdict> decide(const command& cmd,
                                     const decision_states& states) {
  try {
    return cmd.decide(states);
  } catch (const std::exception& e) {
    return caf::make_error(errc::internal,
                           prefix(cmd) + "decide() threw: " + e.what());
  } catch (...) {
    return caf::make_error(errc::internal, prefix(cmd) + "decide() threw");
  }
}

/// Whether `v` writes anything: a rejection or an empty accept does not,
/// so no condition protects it.
inline bool writes(const verdict& v) {
  return !v.rejection && !(v.events.empty() && v.jobs.empty());
}

/// The answer to a verdict that writes nothing.
inline command_outcome without_append(verdict& v, std::uint32_t attempt) {
  command_outcome o;
  o.attempts = attempt;
  if (v.rejection)
    o.rejection = std::move(*v.rejection);
  else
    o.accepted = true;
  return o;
}

inline command_outcome accepted(std::uint32_t attempt, std::uint64_t first,
                                std::uint64_t last) {
  command_outcome o;
  o.accepted = true;
  o.first_position = first;
  o.last_position = last;
  o.attempts = attempt;
  return o;
}

/// The validated append of a verdict that writes, under `condition` (the
/// model's). Events or jobs that do not validate fail the command with
/// `invalid_argument`. (Jobs without events are refused by validation, as
/// an append without events is: they would have no transaction to ride in.)
inline caf::expected<validated_append>
to_append(const command& cmd, verdict& v,
          const std::optional<append_condition>& condition, const limits& lim) {
  try {
    return validate_append(
      append_request{std::move(v.events), condition, std::move(v.jobs)}, lim);
  } catch (const store_error& e) {
    return caf::make_error(
      errc::invalid_argument,
      prefix(cmd) + "decide() returned invalid events or jobs: " + e.what());
  }
}

/// The error of a command whose `attempts` rounds all conflicted, the last
/// with `err`.
inline caf::error exhausted(const command& cmd, std::uint32_t attempts,
                            const caf::error& err) {
  return caf::make_error(errc::append_condition_failed,
                         prefix(cmd) + "conflicted on all "
                           + std::to_string(attempts)
                           + " attempts: " + message_of(err));
}

} // namespace dcbd::command_round
