// The wire shapes of live subscriptions (API.md §5), shared by SSE, NDJSON
// and WebSocket:
//
//   NDJSON / WebSocket objects ("kind"):
//     {"kind":"event","type","tags","data","position","prev"}
//     {"kind":"checkpoint","position","head"}
//     {"kind":"caught_up","position","head"}
//     {"kind":"heartbeat","head"}
//     {"kind":"error","code","message"}
//   SSE frames:
//     id: <pos> / event: event / data: {"type","tags","data","position","prev"}
//     id: <pos> / event: checkpoint / data: {"position","head"}
//     event: caught_up / data: {"position","head"}
//     : heartbeat head=<h>
//     event: error / data: {"code","message"}
#pragma once

#include "actors/bus_protocol.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace dcbd::http {

/// An item as an NDJSON / WebSocket object.
nlohmann::json frame_json(const bus_item& item);

/// Appends `dump(frame_json(item))` to `out`, with "sub" set to `sub` when
/// given (a WebSocket frame), byte for byte; an event's frame is written
/// without building the json (each connection formats every event).
void append_frame(std::string& out, const bus_item& item,
                  std::optional<std::string_view> sub = std::nullopt);

/// The error object that ends a subscription.
nlohmann::json error_frame_json(std::string_view code,
                                std::string_view message);

/// An item as one SSE frame (ending with the blank line).
std::string sse_frame(const bus_item& item);

/// The error that ends an SSE subscription.
std::string sse_error(std::string_view code, std::string_view message);

/// The first bytes of an SSE stream: the reconnection delay.
inline constexpr std::string_view sse_preamble = "retry: 2000\n\n";

/// Parses a position ("after", "Last-Event-ID"): decimal digits, at most
/// 2^63 - 1. Throws `store_error(invalid_argument)` naming `field`.
std::uint64_t parse_position(std::string_view text, std::string_view field);

} // namespace dcbd::http
