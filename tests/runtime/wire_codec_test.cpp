// The binary HTTP wire (runtime/wire_codec): round trips of JSON documents
// through msgpack, interoperability with nlohmann's independent msgpack
// implementation, and refusal of hostile input (deep nesting, truncation,
// trailing bytes, oversized containers) as `store_error(invalid_argument)`
// naming the field.
#include "runtime/wire_codec.hpp"

#include "store/error.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dcbd::test {
namespace {

using json = nlohmann::json;
using http::from_msgpack;
using http::to_msgpack;

json binary(const std::string& s) {
  return json::binary(std::vector<std::uint8_t>(s.begin(), s.end()));
}

// A document with every kind the wire carries.
json sample() {
  return json{
    {"events",
     json::array({json{{"type", "A"},
                       {"tags", {"k:1", "k:2"}},
                       {"data", binary(std::string{"\x00\xff\x01", 3})}},
                  json{{"type", "Caf\xc3\xa9"}, {"tags", json::array()}}})},
    {"nested", json{{"a", json{{"b", json::array({1, -2, 300000, nullptr})}}}}},
    {"numbers", json::array({0, 127, 128, 65536, std::uint64_t{1} << 63, -1,
                             -129, std::int64_t{-1} << 40, 1.5})},
    {"flags", json::array({true, false})},
    {"empty", json::object()},
    {"long", std::string(70000, 'x')},
  };
}

// The store_error message `f` throws (fails the test if it throws nothing
// or something else).
template <class F>
std::string refusal(F&& f) {
  try {
    f();
    ADD_FAILURE() << "decoded; expected invalid_argument";
  } catch (const store_error& e) {
    EXPECT_EQ(e.code(), errc::invalid_argument) << e.what();
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a store_error: " << e.what();
  }
  return {};
}

std::string nested_arrays(std::size_t depth) {
  return std::string(depth - 1, '\x91') + '\x90';
}

TEST(WireCodec, RoundTripsEveryKind) {
  auto doc = sample();
  auto bytes = to_msgpack(doc);
  auto back = from_msgpack(bytes, "body");
  EXPECT_EQ(back, doc);
  auto& data = back["events"][0]["data"];
  ASSERT_TRUE(data.is_binary());
  EXPECT_EQ(data.get_binary().size(), 3u);
}

TEST(WireCodec, InteroperatesWithAnIndependentImplementation) {
  // nlohmann's own msgpack reads what we write and we read what it writes.
  auto doc = sample();
  EXPECT_EQ(json::from_msgpack(to_msgpack(doc)), doc);
  EXPECT_EQ(from_msgpack(http::to_msgpack(doc), "body"),
            json::from_msgpack(json::to_msgpack(doc)));
  auto theirs = json::to_msgpack(doc);
  EXPECT_EQ(from_msgpack(std::string(theirs.begin(), theirs.end()), "body"),
            doc);
  // Both pick the smallest integer forms: same bytes for integers.
  auto ints = json::array({0, 127, 128, 255, 256, 65536, -1, -33, -129});
  auto expected = json::to_msgpack(ints);
  EXPECT_EQ(to_msgpack(ints), std::string(expected.begin(), expected.end()));
}

TEST(WireCodec, ExtIsBinaryWithItsSubtype) {
  // fixext1, type 5, one byte.
  auto j = from_msgpack(std::string{"\xd4\x05\x2a", 3}, "body");
  ASSERT_TRUE(j.is_binary());
  EXPECT_TRUE(j.get_binary().has_subtype());
  EXPECT_EQ(j.get_binary().subtype(), 5u);
  EXPECT_EQ(to_msgpack(j), std::string("\xd4\x05\x2a", 3));
}

TEST(WireCodec, NestsAtMost64Levels) {
  EXPECT_TRUE(from_msgpack(nested_arrays(64), "body").is_array());
  auto m = refusal([] {
    from_msgpack(nested_arrays(65), "body");
  });
  EXPECT_NE(m.find("body is not a valid msgpack document: nests deeper than "
                   "64 levels"),
            std::string::npos)
    << m;
  // A million levels: refused at level 65, no stack overflow.
  auto deep = std::string(1'000'000, '\x91') + '\xc0';
  EXPECT_NE(refusal([&] {
              from_msgpack(deep, "body");
            }).find("nests deeper"),
            std::string::npos);
  // Maps count the same.
  std::string maps;
  for (int i = 0; i < 65; ++i)
    maps += "\x81\xa1k";
  maps += '\xc0';
  EXPECT_NE(refusal([&] {
              from_msgpack(maps, "query");
            }).find("query is not a valid msgpack document"),
            std::string::npos);
}

TEST(WireCodec, RefusesEveryTruncation) {
  auto bytes = to_msgpack(sample());
  for (std::size_t n = 0; n < bytes.size(); n += 1 + n / 50) {
    SCOPED_TRACE("cut to " + std::to_string(n));
    auto m = refusal([&] {
      from_msgpack(bytes.substr(0, n), "body");
    });
    EXPECT_EQ(m.rfind("body is not a valid msgpack document", 0), 0u) << m;
  }
}

TEST(WireCodec, RefusesTrailingBytes) {
  auto bytes = to_msgpack(json{{"a", 1}});
  EXPECT_EQ(refusal([&] {
              from_msgpack(bytes + '\xc0', "body");
            }),
            "body is not a valid msgpack document: trailing bytes after it");
  EXPECT_FALSE(refusal([&] {
                 from_msgpack(bytes + bytes, "body");
               }).empty());
}

TEST(WireCodec, RefusesOversizedContainersAndStrings) {
  // Container claims far beyond the input fail before anything is
  // allocated for them.
  for (std::string claim : {std::string{"\xdd\xff\xff\xff\xff", 5}, // array32
                            std::string{"\xdf\xff\xff\xff\xff", 5}}) { // map32
    auto m = refusal([&] {
      from_msgpack(claim, "body");
    });
    EXPECT_NE(m.find("size overflow (limits: 5 elements"), std::string::npos)
      << m;
  }
  // String and binary claims beyond the input are truncated input.
  for (std::string claim : {std::string{"\xdb\xff\xff\xff\xff"
                                        "abc",
                                        8},
                            std::string{"\xc6\xff\xff\xff\xff"
                                        "abc",
                                        8}})
    EXPECT_FALSE(refusal([&] {
                   from_msgpack(claim, "body");
                 }).empty());
  // Honest sizes over the caller's limit (the body limit) are refused too.
  auto hundred = to_msgpack(json(std::vector<int>(100, 0)));
  EXPECT_EQ(from_msgpack(hundred, "body", 1000).size(), 100u);
  EXPECT_NE(refusal([&] {
              from_msgpack(hundred, "body", 99);
            }).find("array size overflow (limits: 99 elements"),
            std::string::npos);
  auto text = to_msgpack(json(std::string(500, 'x')));
  EXPECT_NE(refusal([&] {
              from_msgpack(text, "body", 499);
            }).find("str size overflow"),
            std::string::npos);
  auto bin = to_msgpack(binary(std::string(500, 'x')));
  EXPECT_NE(refusal([&] {
              from_msgpack(bin, "body", 499);
            }).find("bin size overflow"),
            std::string::npos);
}

// msgpack-c allocates a container's slots when it reads the count. A body
// of 64 nested arrays each claiming 1,000,000 elements, padded to 16 MiB so
// that the claims fit the input, would make it reserve 64 x 16 MB; the
// element bound refuses the first claim instead.
TEST(WireCodec, BoundsContainerClaimsBelowTheBodySize) {
  std::string claim{"\xdd\x00\x0f\x42\x40", 5}; // array32 of 1,000,000
  std::string body;
  for (int i = 0; i < 64; ++i)
    body += claim;
  body.resize(std::size_t{16} << 20, '\xc0'); // nil padding
  auto m = refusal([&] {
    http::from_msgpack(body, "body", std::size_t{16} << 20);
  });
  EXPECT_NE(m.find("array size overflow (limits: 100000 elements"),
            std::string::npos)
    << m;
  // The largest honest container of the API still decodes.
  auto events = to_msgpack(json(std::vector<int>(http::max_wire_elements, 1)));
  EXPECT_EQ(from_msgpack(events, "body", std::size_t{16} << 20).size(),
            http::max_wire_elements);
}

TEST(WireCodec, RefusesGarbageAndNonStringKeys) {
  EXPECT_FALSE(refusal([] {
                 from_msgpack(std::string{"\xc1", 1}, "body");
               }).empty());
  EXPECT_FALSE(refusal([] {
                 from_msgpack("", "body");
               }).empty());
  // {1: 2}
  EXPECT_NE(refusal([] {
              from_msgpack(std::string{"\x81\x01\x02", 3}, "body");
            }).find("map keys must be strings"),
            std::string::npos);
}

} // namespace
} // namespace dcbd::test
