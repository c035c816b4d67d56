// Test support: a minimal msgpack writer, so that tests state the wire
// format byte by byte without depending on the codec's own library.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dcbd::test {

class writer {
public:
  writer& array(std::uint32_t n) {
    if (n < 16)
      return byte(0x90 | n);
    if (n <= 0xffff)
      return byte(0xdc).be(n, 2);
    return byte(0xdd).be(n, 4);
  }

  writer& map(std::uint32_t n) {
    if (n < 16)
      return byte(0x80 | n);
    return byte(0xde).be(n, 2);
  }

  writer& str(std::string_view s) {
    if (s.size() < 32)
      byte(0xa0 | static_cast<unsigned>(s.size()));
    else if (s.size() <= 0xff)
      byte(0xd9).be(s.size(), 1);
    else if (s.size() <= 0xffff)
      byte(0xda).be(s.size(), 2);
    else
      byte(0xdb).be(s.size(), 4);
    return raw(s);
  }

  writer& bin(std::string_view s) {
    if (s.size() <= 0xff)
      byte(0xc4).be(s.size(), 1);
    else if (s.size() <= 0xffff)
      byte(0xc5).be(s.size(), 2);
    else
      byte(0xc6).be(s.size(), 4);
    return raw(s);
  }

  writer& uint(std::uint64_t v) {
    if (v < 128)
      return byte(static_cast<unsigned>(v));
    return byte(0xcf).be(v, 8);
  }

  writer& sint(std::int64_t v) {
    if (v >= -32 && v < 0)
      return byte(static_cast<unsigned>(v) & 0xff);
    return byte(0xd3).be(static_cast<std::uint64_t>(v), 8);
  }

  writer& nil() {
    return byte(0xc0);
  }

  writer& boolean(bool b) {
    return byte(b ? 0xc3 : 0xc2);
  }

  writer& byte(unsigned b) {
    out_ += static_cast<char>(b);
    return *this;
  }

  writer& raw(std::string_view s) {
    out_ += s;
    return *this;
  }

  // Writes the low `n` bytes of `v`, big-endian.
  writer& be(std::uint64_t v, int n) {
    for (int i = n - 1; i >= 0; --i)
      byte(static_cast<unsigned>((v >> (8 * i)) & 0xff));
    return *this;
  }

  const std::string& bytes() const {
    return out_;
  }

private:
  std::string out_;
};

// The wire form of `{type, tags, data, metadata}` as the format documents it.
inline writer wire_event(std::string_view type, std::vector<std::string> tags,
                         std::string_view data, std::string_view metadata) {
  writer w;
  w.array(4).str(type).array(static_cast<std::uint32_t>(tags.size()));
  for (const auto& t : tags)
    w.str(t);
  w.bin(data).bin(metadata);
  return w;
}

} // namespace dcbd::test
