#include "actors/pool.hpp"

#include "actors/inspect.hpp"
#include "store/error.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/mailbox_element.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

namespace dcbd {

namespace {

using respawn_atom = caf::atom_constant<caf::atom("dcbRespawn")>;

struct pool_state {
  // A declared constructor keeps this from being an aggregate: CAF 0.17
  // constructs states from the actor pointer when it can, and C++20 would
  // aggregate-initialize the first member from it.
  pool_state() = default;

  worker_factory make;
  std::size_t size = 0;
  std::vector<caf::actor> workers;
  std::size_t next = 0;
  bool respawn_scheduled = false;
  bool stopping = false;
  std::string kind;
  static inline const char* name = "dcbd.pool";
};

using pool_pointer = caf::stateful_actor<pool_state>*;

// Makes workers until the pool has `size`; if one cannot be made (the
// database is down), tries again in a second.
void fill(pool_pointer self) {
  auto& st = self->state;
  while (!st.stopping && st.workers.size() < st.size) {
    caf::actor w;
    try {
      w = st.make();
    } catch (const std::exception&) {
      if (!st.respawn_scheduled) {
        st.respawn_scheduled = true;
        self->delayed_send(self, std::chrono::seconds(1), respawn_atom::value);
      }
      return;
    }
    self->monitor(w);
    st.workers.push_back(std::move(w));
  }
}

// A pool of `size` workers that is also their supervisor: it hands each
// message to the next worker in turn (sender and request id intact, so the
// worker answers the caller directly), and replaces a worker that dies.
// Unlike caf::actor_pool it outlives its last worker: while it has none,
// callers get `unavailable`. On exit it stops its workers; each answers
// what it has taken before it quits.
caf::behavior pool_impl(pool_pointer self, std::string kind,
                        worker_factory make, std::size_t size) {
  auto& st = self->state;
  st.kind = std::move(kind);
  st.make = std::move(make);
  st.size = std::max<std::size_t>(size, 1);
  fill(self);
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    auto i = std::find(st.workers.begin(), st.workers.end(), dm.source);
    if (i == st.workers.end())
      return;
    st.workers.erase(i);
    fill(self);
  });
  self->set_exit_handler([self](caf::exit_msg& em) {
    auto& st = self->state;
    st.stopping = true;
    for (auto& w : st.workers)
      self->send_exit(w, em.reason);
    self->quit(std::move(em.reason));
  });
  self->set_default_handler(
    [self](caf::scheduled_actor*,
           caf::message_view& view) -> caf::result<caf::message> {
      auto& st = self->state;
      if (st.workers.empty())
        return caf::make_error(errc::unavailable,
                               "no " + st.kind
                                 + " is running (the database may be down)");
      auto& w = st.workers[st.next++ % st.workers.size()];
      auto* me = self->current_mailbox_element();
      w->enqueue(caf::make_mailbox_element(me->sender, me->mid,
                                           std::move(me->stages),
                                           view.move_content_to_message()),
                 self->context());
      return caf::delegated<caf::message>{};
    });
  return {
    [self](respawn_atom) {
      self->state.respawn_scheduled = false;
      fill(self);
    },
    [self](caf::sys_atom, caf::get_atom) {
      return self->state.workers;
    },
  };
}

} // namespace

caf::actor spawn_pool(caf::actor_system& sys, std::string kind,
                      worker_factory make, std::size_t size) {
  return sys.spawn(pool_impl, std::move(kind), std::move(make), size);
}

void stop_pool(caf::actor_system& sys, const caf::actor& pool) {
  caf::scoped_actor self{sys};
  std::vector<caf::actor> workers;
  self
    ->request(pool, std::chrono::seconds(5), caf::sys_atom::value,
              caf::get_atom::value)
    .receive(
      [&](std::vector<caf::actor>& ws) {
        workers = std::move(ws);
      },
      [](caf::error&) {});
  for (auto& w : workers)
    self->monitor(w);
  self->monitor(pool);
  self->send_exit(pool, caf::exit_reason::user_shutdown);
  for (std::size_t i = 0; i < workers.size() + 1; ++i)
    self->receive([](const caf::down_msg&) {});
}

} // namespace dcbd
