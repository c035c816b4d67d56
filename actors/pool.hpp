// A pool of workers that is also their supervisor.
//
// The pool hands each message to its next worker in turn, sender and
// request id intact, so the worker answers the caller directly. It replaces
// a worker that dies; when a worker cannot be made (its database is down)
// it tries again every second, and while it has no worker it answers every
// request with `unavailable`. Unlike caf::actor_pool it outlives its last
// worker. On exit it stops its workers, each of which answers what it has
// taken before it quits.
//
// Messages (besides what its workers take):
//   (sys_atom, get_atom) -> std::vector<caf::actor>   the current workers
#pragma once

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include <cstddef>
#include <functional>
#include <string>

namespace dcbd {

/// Makes one worker; may throw when it cannot (e.g. no database).
using worker_factory = std::function<caf::actor()>;

/// Spawns a pool of `size` (at least one) workers made by `make`; `kind`
/// names them in errors ("no reader is running").
caf::actor spawn_pool(caf::actor_system& sys, std::string kind,
                      worker_factory make, std::size_t size);

/// Stops `pool` and waits until its workers are gone (they answer what they
/// have taken first). Blocks the calling thread: not for actor code.
void stop_pool(caf::actor_system& sys, const caf::actor& pool);

} // namespace dcbd
