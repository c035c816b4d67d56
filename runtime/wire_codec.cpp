#include "runtime/wire_codec.hpp"

#include "store/codec_msgpack.hpp"
#include "store/error.hpp"

#include <msgpack.hpp>

#include <cstdint>
#include <utility>

namespace dcbd::http {

namespace {

using json = nlohmann::json;
using packer = msgpack::packer<msgpack::sbuffer>;

[[noreturn]] void bad(std::string_view field, const std::string& what) {
  throw store_error(errc::invalid_argument, std::string{field} + " " + what);
}

json::binary_t::container_type bytes_of(const char* p, std::size_t n) {
  auto u = reinterpret_cast<const std::uint8_t*>(p);
  return {u, u + n};
}

// Recursion is bounded: the guard refused nesting deeper than 64 levels.
json to_json(const msgpack::object& o, std::string_view field) {
  namespace t = msgpack::type;
  switch (o.type) {
    case t::NIL:
      return nullptr;
    case t::BOOLEAN:
      return o.via.boolean;
    case t::POSITIVE_INTEGER:
      return o.via.u64;
    case t::NEGATIVE_INTEGER:
      return o.via.i64;
    case t::FLOAT32:
    case t::FLOAT64:
      return o.via.f64;
    case t::STR:
      return std::string{o.via.str.ptr, o.via.str.size};
    case t::BIN:
      return json::binary(bytes_of(o.via.bin.ptr, o.via.bin.size));
    case t::EXT:
      // As nlohmann reads ext: binary with the type as its subtype.
      return json::binary(bytes_of(o.via.ext.data(), o.via.ext.size),
                          static_cast<std::uint8_t>(o.via.ext.type()));
    case t::ARRAY: {
      json a = json::array();
      for (std::uint32_t i = 0; i < o.via.array.size; ++i)
        a.push_back(to_json(o.via.array.ptr[i], field));
      return a;
    }
    case t::MAP: {
      json m = json::object();
      for (std::uint32_t i = 0; i < o.via.map.size; ++i) {
        auto& kv = o.via.map.ptr[i];
        if (kv.key.type != t::STR)
          bad(field, "is not a valid msgpack document: map keys must be "
                     "strings");
        m[std::string{kv.key.via.str.ptr, kv.key.via.str.size}]
          = to_json(kv.val, field);
      }
      return m;
    }
  }
  bad(field, "is not a valid msgpack document: unknown type");
}

void pack(packer& pk, const json& j) {
  switch (j.type()) {
    case json::value_t::null:
    case json::value_t::discarded:
      pk.pack_nil();
      return;
    case json::value_t::boolean:
      j.get<bool>() ? pk.pack_true() : pk.pack_false();
      return;
    case json::value_t::number_integer:
      pk.pack_int64(j.get<std::int64_t>());
      return;
    case json::value_t::number_unsigned:
      pk.pack_uint64(j.get<std::uint64_t>());
      return;
    case json::value_t::number_float:
      pk.pack_double(j.get<double>());
      return;
    case json::value_t::string: {
      auto& s = j.get_ref<const std::string&>();
      pk.pack_str(static_cast<std::uint32_t>(s.size()));
      pk.pack_str_body(s.data(), static_cast<std::uint32_t>(s.size()));
      return;
    }
    case json::value_t::binary: {
      auto& b = j.get_binary();
      auto data = reinterpret_cast<const char*>(b.data());
      auto n = static_cast<std::uint32_t>(b.size());
      if (b.has_subtype()) {
        pk.pack_ext(n, static_cast<std::int8_t>(b.subtype()));
        pk.pack_ext_body(data, n);
      } else {
        pk.pack_bin(n);
        pk.pack_bin_body(data, n);
      }
      return;
    }
    case json::value_t::array:
      pk.pack_array(static_cast<std::uint32_t>(j.size()));
      for (auto& x : j)
        pack(pk, x);
      return;
    case json::value_t::object:
      pk.pack_map(static_cast<std::uint32_t>(j.size()));
      for (auto& [key, value] : j.items()) {
        pk.pack_str(static_cast<std::uint32_t>(key.size()));
        pk.pack_str_body(key.data(), static_cast<std::uint32_t>(key.size()));
        pack(pk, value);
      }
      return;
  }
}

} // namespace

json from_msgpack(std::string_view bytes, std::string_view field,
                  std::size_t max_size) {
  auto prefix = std::string{field} + " is not a valid msgpack document: ";
  msgpack_wording wording{prefix, prefix + "trailing bytes after it"};
  auto handle = unpack_guarded(bytes, wording, max_size, msgpack_max_depth,
                               max_wire_elements);
  return to_json(handle.get(), field);
}

std::string to_msgpack(const json& j) {
  msgpack::sbuffer buf;
  packer pk{buf};
  pack(pk, j);
  return {buf.data(), buf.size()};
}

} // namespace dcbd::http
