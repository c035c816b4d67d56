#include "actors/types.hpp"

#include "actors/appender_protocol.hpp"
#include "actors/inspect.hpp"
#include "actors/reader_protocol.hpp"
#include "actors/store_protocol.hpp"

#include <caf/actor_system_config.hpp>
#include <caf/message.hpp>
#include <caf/sec.hpp>

namespace dcbd {

errc code_of(const caf::error& err) noexcept {
  if (!err)
    return errc::none;
  if (err.category() == caf::atom("dcbd")) {
    auto code = err.code();
    if (code <= static_cast<std::uint8_t>(errc::internal))
      return static_cast<errc>(code);
    return errc::internal;
  }
  if (err.category() == caf::atom("system")) {
    switch (static_cast<caf::sec>(err.code())) {
      case caf::sec::request_timeout:
      case caf::sec::request_receiver_down:
      case caf::sec::no_route_to_receiving_node:
      case caf::sec::remote_linking_failed:
      case caf::sec::cannot_connect_to_node:
        return errc::unavailable;
      default:
        break;
    }
  }
  return errc::internal;
}

std::string message_of(const caf::error& err) {
  auto& ctx = err.context();
  if (ctx.size() == 1 && ctx.match_element<std::string>(0))
    return ctx.get_as<std::string>(0);
  return caf::to_string(err);
}

void tune_scheduler(caf::actor_system_config& cfg) {
  cfg.set("work-stealing.moderate-poll-attempts", 0);
}

void register_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<event>("dcbd::event");
  cfg.add_message_type<sequenced_event>("dcbd::sequenced_event");
  cfg.add_message_type<query_item>("dcbd::query_item");
  cfg.add_message_type<query>("dcbd::query");
  cfg.add_message_type<read_options>("dcbd::read_options");
  cfg.add_message_type<append_condition>("dcbd::append_condition");
  cfg.add_message_type<append_request>("dcbd::append_request");
  cfg.add_message_type<read_result>("dcbd::read_result");
  cfg.add_message_type<stream_options>("dcbd::stream_options");
  // store
  cfg.add_message_type<append_ack>("dcbd::append_ack");
  cfg.add_message_type<committed_events>("dcbd::committed_events");
  cfg.add_message_type<store_stats>("dcbd::store_stats");
  cfg.add_message_type<store_actor>("dcbd::store_actor");
  // readers
  cfg.add_message_type<stream_request>("dcbd::stream_request");
  cfg.add_message_type<stream_chunk>("dcbd::stream_chunk");
  cfg.add_message_type<stream_end>("dcbd::stream_end");
  cfg.add_message_type<decision_model>("dcbd::decision_model");
  cfg.add_message_type<projection>("dcbd::projection");
  cfg.add_message_type<reader_actor>("dcbd::reader_actor");
  // appenders
  cfg.add_message_type<command_request>("dcbd::command_request");
  cfg.add_message_type<command_outcome>("dcbd::command_outcome");
  cfg.add_message_type<appender_actor>("dcbd::appender_actor");
  cfg.add_error_category(caf::atom("dcbd"), [](std::uint8_t code,
                                               caf::atom_value,
                                               const caf::message& ctx) {
    std::string out{dcbd::to_string(static_cast<errc>(code))};
    if (ctx.size() == 1 && ctx.match_element<std::string>(0)) {
      out += ": ";
      out += ctx.get_as<std::string>(0);
    } else if (!ctx.empty()) {
      out += ": ";
      out += to_string(ctx);
    }
    return out;
  });
}

} // namespace dcbd
