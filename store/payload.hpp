// Typed event payloads over msgpack: structs in, bytes out.
//
//   struct course_defined {
//     std::string course_id;
//     int capacity = 0;
//     MSGPACK_DEFINE_MAP(course_id, capacity);
//   };
//   auto e = dcbd::make_event("CourseDefined", {"course:c1"},
//                             course_defined{"c1", 30});
//   auto back = dcbd::decode_payload<course_defined>(e.data);
//
// Maps (MSGPACK_DEFINE_MAP) keep payloads readable by other languages and
// tolerate added fields. This header includes msgpack; include it only where
// payloads are encoded or decoded, and link the CMake target `dcbd_payload`
// (it carries msgpack-c and MSGPACK_NO_BOOST).
#pragma once

#include "store/codec_msgpack.hpp"
#include "store/error.hpp"
#include "store/model.hpp"

#include <msgpack.hpp>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dcbd {

/// Encodes `value` as msgpack bytes.
template <class T>
bytes encode_payload(const T& value) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, value);
  return bytes(buf.data(), buf.size());
}

/// Decodes msgpack bytes into a `T`. Throws `store_error(invalid_argument)`
/// when the bytes are not msgpack, have trailing bytes, nest deeper than
/// 64 levels, or do not fit `T` (the guard of store/codec_msgpack.hpp).
template <class T>
T decode_payload(std::string_view data) {
  static const msgpack_wording wording{
    "payload does not decode: ",
    "payload has trailing bytes after the msgpack value"};
  auto handle = unpack_guarded(data, wording);
  try {
    return handle.get().as<T>();
  } catch (const std::exception& e) {
    throw store_error(errc::invalid_argument, wording.prefix + e.what());
  }
}

/// Makes an event whose data is the msgpack encoding of `payload`.
template <class T>
event make_event(std::string type, std::vector<std::string> tags,
                 const T& payload) {
  return event{std::move(type), std::move(tags), encode_payload(payload), {}};
}

} // namespace dcbd
