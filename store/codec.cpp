#include "store/codec.hpp"

#include "store/codec_msgpack.hpp"
#include "store/error.hpp"

#include <msgpack.hpp>

#include <chrono>
#include <limits>
#include <ratio>

namespace dcbd {

namespace {

using packer = msgpack::packer<msgpack::sbuffer>;

void pack_bin(packer& pk, const bytes& b) {
  pk.pack_bin(static_cast<std::uint32_t>(b.size()));
  pk.pack_bin_body(b.data(), static_cast<std::uint32_t>(b.size()));
}

void pack_event(packer& pk, const event& e) {
  pk.pack_array(4);
  pk.pack(e.type);
  pk.pack_array(static_cast<std::uint32_t>(e.tags.size()));
  for (const auto& tag : e.tags)
    pk.pack(tag);
  pack_bin(pk, e.data);
  pack_bin(pk, e.metadata);
}

void pack_sequenced(packer& pk, const sequenced_event& e) {
  using std::chrono::duration_cast;
  using std::chrono::microseconds;
  pk.pack_array(3);
  pk.pack(e.position);
  pk.pack(static_cast<std::int64_t>(
    duration_cast<microseconds>(e.recorded_at.time_since_epoch()).count()));
  pack_event(pk, e.event);
}

[[noreturn]] void malformed(std::string_view what) {
  throw store_error{errc::invalid_argument,
                    "malformed msgpack: " + std::string{what}};
}

const msgpack::object_array& as_array(const msgpack::object& o,
                                      std::uint32_t min_size,
                                      std::string_view what) {
  if (o.type != msgpack::type::ARRAY)
    malformed(std::string{what} + " must be an array");
  if (o.via.array.size < min_size)
    malformed(std::string{what} + " has too few fields");
  return o.via.array;
}

std::string as_str(const msgpack::object& o, std::string_view what) {
  if (o.type != msgpack::type::STR)
    malformed(std::string{what} + " must be a string");
  return {o.via.str.ptr, o.via.str.size};
}

// Payloads are binary, but text is accepted too for clients that only
// produce strings.
bytes as_bytes(const msgpack::object& o, std::string_view what) {
  if (o.type == msgpack::type::BIN)
    return {o.via.bin.ptr, o.via.bin.size};
  if (o.type == msgpack::type::STR)
    return {o.via.str.ptr, o.via.str.size};
  malformed(std::string{what} + " must be bin or str");
}

event unpack_event(const msgpack::object& o) {
  // Fields past the known ones are ignored: later versions append fields.
  const auto& a = as_array(o, 4, "event");
  event e;
  e.type = as_str(a.ptr[0], "event.type");
  const auto& tags = as_array(a.ptr[1], 0, "event.tags");
  e.tags.reserve(tags.size);
  for (std::uint32_t i = 0; i < tags.size; ++i)
    e.tags.push_back(as_str(tags.ptr[i], "event.tags[]"));
  e.data = as_bytes(a.ptr[2], "event.data");
  e.metadata = as_bytes(a.ptr[3], "event.metadata");
  return e;
}

sequenced_event unpack_sequenced(const msgpack::object& o) {
  const auto& a = as_array(o, 3, "sequenced_event");
  if (a.ptr[0].type != msgpack::type::POSITIVE_INTEGER)
    malformed("sequenced_event.position must be a positive integer");
  auto us_type = a.ptr[1].type;
  if (us_type != msgpack::type::POSITIVE_INTEGER
      && us_type != msgpack::type::NEGATIVE_INTEGER)
    malformed("sequenced_event.recorded_at must be an integer");
  sequenced_event se;
  se.position = a.ptr[0].via.u64;
  // The clock counts in finer units than microseconds: reject what it
  // cannot hold instead of overflowing.
  using clock_rep = std::chrono::system_clock::duration::rep;
  constexpr auto per_us = std::chrono::system_clock::duration::period::den
                          / std::micro::den;
  constexpr auto max_us = static_cast<std::uint64_t>(
    std::numeric_limits<clock_rep>::max() / per_us);
  if (us_type == msgpack::type::POSITIVE_INTEGER
        ? a.ptr[1].via.u64 > max_us
        : a.ptr[1].via.i64 < -static_cast<std::int64_t>(max_us))
    malformed("sequenced_event.recorded_at is out of range");
  auto us = us_type == msgpack::type::POSITIVE_INTEGER
              ? static_cast<std::int64_t>(a.ptr[1].via.u64)
              : a.ptr[1].via.i64;
  se.recorded_at = std::chrono::system_clock::time_point{
    std::chrono::duration_cast<std::chrono::system_clock::duration>(
      std::chrono::microseconds{us})};
  se.event = unpack_event(a.ptr[2]);
  return se;
}

// Unpacks exactly one object spanning the whole buffer (the shared guard:
// store/codec_msgpack.hpp) and converts it with `f`.
template <class F>
auto decode_whole(std::string_view buf, F&& f) {
  static const msgpack_wording wording{
    "malformed msgpack: ",
    "malformed msgpack: trailing bytes after the object"};
  auto handle = unpack_guarded(buf, wording);
  try {
    return f(handle.get());
  } catch (const store_error&) {
    throw;
  } catch (const std::exception& e) {
    // A msgpack type_error from a conversion means malformed input too.
    malformed(e.what());
  }
}

} // namespace

std::string encode(const event& e) {
  msgpack::sbuffer buf;
  packer pk{buf};
  pack_event(pk, e);
  return {buf.data(), buf.size()};
}

std::string encode(const sequenced_event& e) {
  msgpack::sbuffer buf;
  packer pk{buf};
  pack_sequenced(pk, e);
  return {buf.data(), buf.size()};
}

std::string encode(const std::vector<event>& events) {
  msgpack::sbuffer buf;
  packer pk{buf};
  pk.pack_array(static_cast<std::uint32_t>(events.size()));
  for (const auto& e : events)
    pack_event(pk, e);
  return {buf.data(), buf.size()};
}

event decode_event(std::string_view buf) {
  return decode_whole(buf, unpack_event);
}

sequenced_event decode_sequenced_event(std::string_view buf) {
  return decode_whole(buf, unpack_sequenced);
}

std::vector<event> decode_events(std::string_view buf) {
  return decode_whole(buf, [](const msgpack::object& o) {
    const auto& a = as_array(o, 0, "events");
    std::vector<event> out;
    out.reserve(a.size);
    for (std::uint32_t i = 0; i < a.size; ++i)
      out.push_back(unpack_event(a.ptr[i]));
    return out;
  });
}

} // namespace dcbd
