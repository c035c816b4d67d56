// The msgpack codec for events: the binary wire and payload format.
#pragma once

#include "store/model.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace dcbd {

// Format (versioned arrays: fields are only ever appended, never reordered):
//   event            = [type: str, tags: [str...], data: bin, metadata: bin]
//   sequenced_event  = [position: uint, recorded_at_us: int, event]

/// Encodes `e` as msgpack.
std::string encode(const event& e);

/// Encodes `e` as msgpack.
std::string encode(const sequenced_event& e);

/// Encodes a list of events as a msgpack array.
std::string encode(const std::vector<event>& events);

/// Decodes one event. Throws `store_error(invalid_argument)` on malformed
/// input, trailing bytes included. Does not validate limits.
event decode_event(std::string_view buf);

/// Decodes one sequenced event. Throws like `decode_event`.
sequenced_event decode_sequenced_event(std::string_view buf);

/// Decodes a msgpack array of events. Throws like `decode_event`.
std::vector<event> decode_events(std::string_view buf);

} // namespace dcbd
