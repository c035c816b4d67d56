// The one guarded msgpack decoder of the project. Every msgpack decode
// (store/codec.cpp, `decode_payload` in store/payload.hpp, the HTTP wire in
// runtime/wire_codec.cpp) goes through `unpack_guarded`, so untrusted bytes
// meet the same limits everywhere:
//
//   - nesting deeper than `max_depth` (64) is refused by msgpack-c's own
//     parser, which keeps its stack on the heap: no stack overflow;
//   - no container, string or binary may claim more elements or bytes than
//     the input could hold (or than `max_size`), so a few bytes cannot make
//     the decoder allocate gigabytes;
//   - the value must span the whole buffer: trailing bytes are an error.
//
// Failures are `store_error(errc::invalid_argument)` with the caller's
// wording. This header includes msgpack.hpp (1.5 s per translation unit):
// include it only from codec and payload files.
#pragma once

#include "store/error.hpp"

#include <msgpack.hpp>

#include <algorithm>
#include <cstddef>
#include <limits>
#include <string>
#include <string_view>

namespace dcbd {

/// How a decoder words its failures.
struct msgpack_wording {
  /// Put before the reason of every failure, e.g. "malformed msgpack: ".
  std::string prefix;
  /// The whole message when bytes follow the value.
  std::string trailing;
};

/// Default nesting limit of `unpack_guarded`: containers inside containers.
inline constexpr std::size_t msgpack_max_depth = 64;

/// Unpacks exactly one msgpack value spanning all of `buf`. Strings and
/// binaries of the result point into `buf`: keep `buf` alive while using
/// it. No string or binary may hold more than `max_size` bytes and no
/// container more than `max_elements` elements (and never more than `buf`
/// could hold). msgpack-c allocates a container's slots (16 bytes each, 32
/// per map entry) when it reads the count, before the elements: a tight
/// `max_elements` keeps a short body that claims big containers, nested
/// `max_depth` deep, from costing gigabytes. Throws
/// `store_error(errc::invalid_argument)` worded by `say` on malformed or
/// truncated input, trailing bytes, nesting deeper than `max_depth`, or a size
/// over the limits.
inline msgpack::object_handle
unpack_guarded(std::string_view buf, const msgpack_wording& say,
               std::size_t max_size = std::numeric_limits<std::size_t>::max(),
               std::size_t max_depth = msgpack_max_depth,
               std::size_t max_elements
               = std::numeric_limits<std::size_t>::max()) {
  // Every element takes at least one byte (a map entry two), so no honest
  // count or length exceeds the buffer size.
  auto n = std::min(buf.size(), max_size);
  auto elements = std::min(n, max_elements);
  msgpack::unpack_limit limits{elements, std::min(n / 2, elements), n, n, n,
                               max_depth};
  // Strings and binaries refer to `buf` instead of being copied.
  auto refer = [](msgpack::type::object_type, std::size_t, void*) {
    return true;
  };
  std::size_t off = 0;
  msgpack::object_handle handle;
  try {
    handle = msgpack::unpack(buf.data(), buf.size(), off, refer, nullptr,
                             limits);
  } catch (const msgpack::depth_size_overflow&) {
    throw store_error(errc::invalid_argument, say.prefix + "nests deeper than "
                                                + std::to_string(max_depth)
                                                + " levels");
  } catch (const msgpack::size_overflow& e) {
    throw store_error(errc::invalid_argument,
                      say.prefix + e.what()
                        + " (limits: " + std::to_string(elements)
                        + " elements, " + std::to_string(n) + " bytes)");
  } catch (const std::exception& e) {
    // insufficient_bytes, parse_error, and std::bad_alloc from the zone.
    throw store_error(errc::invalid_argument, say.prefix + e.what());
  }
  if (off != buf.size())
    throw store_error(errc::invalid_argument, say.trailing);
  return handle;
}

} // namespace dcbd
