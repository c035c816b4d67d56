// Registration of every dcbd message type and error category with CAF.
#pragma once

#include <caf/fwd.hpp>

namespace dcbd {

/// Registers every dcbd message type (under its `dcbd::...` name) and the
/// "dcbd" error category. Call on every node's config before constructing
/// the actor system, so messages can cross node boundaries.
void register_types(caf::actor_system_config& cfg);

/// Sets scheduler defaults that suit dcbd; call before `cfg.parse()`, so the
/// config file and the command line can still override them.
///
/// CAF 0.17's work-stealing workers, once idle, poll in 50 us sleeps for a
/// while before they block on a condition variable. dcbd's hot paths hop
/// between scheduled actors and detached (database) threads, so a reply
/// would often wait out such a sleep: about 150 us per one-caller append.
/// This skips the sleeping phase (`work-stealing.moderate-poll-attempts=0`):
/// idle workers spin briefly, then block until work arrives.
void tune_scheduler(caf::actor_system_config& cfg);

} // namespace dcbd
