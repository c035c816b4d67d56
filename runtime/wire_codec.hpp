// The binary HTTP wire: msgpack documents <-> JSON documents. Requests with
// `Content-Type: application/msgpack` and answers to `Accept:
// application/msgpack` carry the same documents as the JSON API, with one
// addition: msgpack `bin` is a JSON binary value (and back), so event data
// and metadata travel as raw bytes. Decoding goes through the project's one
// guarded msgpack decoder (store/codec_msgpack.hpp); msgpack.hpp stays in
// wire_codec.cpp.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <limits>
#include <string>
#include <string_view>

namespace dcbd::http {

/// The most elements one container of a request document may hold: the
/// largest the API accepts is an append's event list (100,000 events at
/// most, store/model.hpp). It bounds what a short body that claims huge
/// containers makes the decoder allocate.
inline constexpr std::size_t max_wire_elements = 100'000;

/// Decodes one msgpack document into JSON. No string or binary may exceed
/// `max_size` bytes (callers pass the body limit) and no container
/// `max_wire_elements` elements.
/// Throws `store_error(errc::invalid_argument)` naming `field` on malformed
/// or truncated input, trailing bytes, nesting deeper than 64 levels, sizes
/// over the limit, or map keys that are not strings.
nlohmann::json
from_msgpack(std::string_view bytes, std::string_view field,
             std::size_t max_size = std::numeric_limits<std::size_t>::max());

/// Encodes a JSON document as msgpack (binary values as `bin`, or `ext`
/// when they carry a subtype).
std::string to_msgpack(const nlohmann::json& j);

} // namespace dcbd::http
