// Registration of every dcbd message type and error category with CAF.
#pragma once

#include <caf/fwd.hpp>

namespace dcbd {

/// Registers every dcbd message type (under its `dcbd::...` name) and the
/// "dcbd" error category. Call on every node's config before constructing
/// the actor system, so messages can cross node boundaries.
void register_types(caf::actor_system_config& cfg);

} // namespace dcbd
