// Appenders: validate appends before anything reaches the store actor, and
// run commands (project -> decide -> conditional append -> on conflict
// again, bounded).
#include "actors/appender_protocol.hpp"
#include "actors/command_round.hpp"
#include "actors/errors.hpp"
#include "store/validation.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <optional>
#include <utility>

namespace dcbd {

namespace {

using detail::install_exception_handler;

// -- appender -----------------------------------------------------------------

struct appender_state {
  // A declared constructor keeps this from being an aggregate: CAF 0.17
  // constructs states from the actor pointer when it can, and C++20 would
  // aggregate-initialize the first member from it.
  appender_state() = default;

  appender_config cfg;
  // Calls taken and not yet answered; on exit the appender waits for them.
  std::size_t in_flight = 0;
  bool stopping = false;
  caf::error exit_reason;
  static inline const char* name = "dcbd.appender";
};

using appender_pointer = appender_actor::stateful_pointer<appender_state>;

void call_finished(appender_pointer self) {
  auto& st = self->state;
  if (--st.in_flight == 0 && st.stopping)
    self->quit(st.exit_reason);
}

// A response promise that counts the appender's calls in flight.
template <class T>
struct tracked_promise {
  tracked_promise(appender_pointer self, caf::typed_response_promise<T> promise)
    : self(self)
    , rp(std::move(promise)) {
    ++self->state.in_flight;
  }

  template <class U>
  void deliver(U&& x) {
    rp.deliver(std::forward<U>(x));
    call_finished(self);
  }

  appender_pointer self;
  caf::typed_response_promise<T> rp;
};

caf::error shutting_down() {
  return caf::make_error(errc::unavailable, "the appender is shutting down");
}

caf::error overloaded_error(const store_gate& gate) {
  return caf::make_error(errc::overloaded, "the store queue is full ("
                                             + std::to_string(gate.capacity())
                                             + " requests); retry later");
}

// One round of the DCB loop: project, decide, append; on a conflict, again.
//
// The first round projects at the event cache's own head, without a read
// index (`decision_model::at_cache_head`): no head query, no wait. That is
// safe for a verdict that appends, because the append carries the model's
// condition: an event the stale model missed fails it, and the next round
// projects linearizably. A verdict that appends nothing (a rejection, an
// empty accept) has no condition to protect it, so after an optimistic
// round it is decided again on a linearizable model before it is answered:
// that re-check is not a conflict and does not count as an attempt.
void attempt(appender_pointer self, command_ptr cmd,
             tracked_promise<command_outcome> rp, std::uint32_t n,
             bool optimistic) {
  auto& cfg = self->state.cfg;
  projectors_ptr projectors{cmd, &cmd->projectors};
  self
    ->request(cfg.readers, cfg.timeout, project_atom::value,
              decision_model{std::move(projectors), optimistic})
    .then(
      [self, cmd, rp, n, optimistic](const projection& d) mutable {
        auto& cfg = self->state.cfg;
        auto v = command_round::decide(*cmd, *d.states);
        if (!v) {
          rp.deliver(std::move(v.error()));
          return;
        }
        if (!command_round::writes(*v)) {
          if (optimistic)
            return attempt(self, cmd, rp, n, false);
          rp.deliver(command_round::without_append(*v, n));
          return;
        }
        auto req = command_round::to_append(*cmd, *v, d.condition, cfg.limits);
        if (!req) {
          rp.deliver(std::move(req.error()));
          return;
        }
        auto gate = cfg.gate;
        if (!gate->try_enter()) {
          rp.deliver(overloaded_error(*gate));
          return;
        }
        self
          ->request(cfg.store, cfg.timeout, append_atom::value, std::move(*req))
          .then(
            [gate, rp, n](const append_ack& ack) mutable {
              gate->leave();
              rp.deliver(command_round::accepted(n, ack.first_position,
                                                 ack.last_position));
            },
            [self, cmd, gate, rp, n](caf::error& err) mutable {
              gate->leave();
              if (code_of(err) != errc::append_condition_failed) {
                rp.deliver(std::move(err));
              } else if (n < self->state.cfg.max_attempts) {
                attempt(self, cmd, rp, n + 1, false);
              } else {
                rp.deliver(command_round::exhausted(*cmd, n, err));
              }
            });
      },
      [rp](caf::error& err) mutable {
        rp.deliver(std::move(err));
      });
}

appender_actor::behavior_type appender_impl(appender_pointer self,
                                            appender_config cfg) {
  cfg.max_attempts = std::max<std::uint32_t>(cfg.max_attempts, 1);
  self->state.cfg = std::move(cfg);
  install_exception_handler(self);
  // Graceful exit: answer every call taken, refuse new ones, then quit.
  self->set_exit_handler([self](caf::exit_msg& em) {
    auto& st = self->state;
    st.stopping = true;
    st.exit_reason = std::move(em.reason);
    if (st.in_flight == 0)
      self->quit(st.exit_reason);
  });
  return {
    [self](append_atom, append_request& req) -> caf::result<append_ack> {
      auto& cfg = self->state.cfg;
      if (self->state.stopping)
        return shutting_down();
      std::optional<validated_append> valid;
      try {
        valid = validate_append(std::move(req), cfg.limits);
      } catch (const store_error& e) {
        return to_error(e);
      }
      auto gate = cfg.gate;
      if (!gate->try_enter())
        return overloaded_error(*gate);
      tracked_promise<append_ack> rp{self,
                                     self->make_response_promise<append_ack>()};
      self
        ->request(cfg.store, cfg.timeout, append_atom::value, std::move(*valid))
        .then(
          [gate, rp](const append_ack& ack) mutable {
            gate->leave();
            rp.deliver(ack);
          },
          [gate, rp](caf::error& err) mutable {
            gate->leave();
            rp.deliver(std::move(err));
          });
      return rp.rp;
    },
    [self](execute_atom, command_request& req) -> caf::result<command_outcome> {
      if (!req.code)
        return caf::make_error(errc::invalid_argument,
                               "command '" + req.name
                                 + "' carries no code here; commands run on "
                                   "the node that defines them");
      if (!req.code->decide)
        return caf::make_error(errc::invalid_argument,
                               "command '" + req.name
                                 + "': decide must be set");
      if (self->state.stopping)
        return shutting_down();
      tracked_promise<command_outcome> rp{
        self, self->make_response_promise<command_outcome>()};
      // A caller that ran earlier rounds itself (`engine::execute_unbounded`)
      // says where the loop stands.
      auto first = std::max<std::uint32_t>(req.first_attempt, 1);
      if (first > self->state.cfg.max_attempts)
        return caf::make_error(
          errc::invalid_argument,
          "command '" + req.name + "': attempt " + std::to_string(first)
            + " of at most " + std::to_string(self->state.cfg.max_attempts));
      attempt(self, std::move(req.code), rp, first, req.optimistic);
      return rp.rp;
    },
  };
}

} // namespace

appender_actor spawn_appender(caf::actor_system& sys, appender_config cfg) {
  return sys.spawn(appender_impl, std::move(cfg));
}

} // namespace dcbd
