// The read paths' event formatter (runtime/json_api `append_json`) must
// write exactly what nlohmann's dump of `to_json` writes, byte for byte:
// clients compare bodies, and the streamed and in-memory answers of one
// read must not differ. Checked on every ASCII byte, on valid and invalid
// UTF-8, and on random events.
#include "runtime/json_api.hpp"

#include "runtime/subscribe_frames.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace dcbd::test {
namespace {

using http::append_json;
using http::append_json_string;
using http::dump;
using http::to_json;
using json = nlohmann::json;

sequenced_event make(std::string type, std::vector<std::string> tags,
                     std::string data, std::string metadata,
                     std::uint64_t position) {
  sequenced_event e;
  e.position = position;
  e.event.type = std::move(type);
  e.event.tags = std::move(tags);
  e.event.data = std::move(data);
  e.event.metadata = std::move(metadata);
  return e;
}

void expect_same(const sequenced_event& e) {
  for (bool with_metadata : {false, true}) {
    std::string fast = "prefix";
    append_json(fast, e, with_metadata);
    EXPECT_EQ(fast, "prefix" + dump(to_json(e, with_metadata)))
      << "with_metadata=" << with_metadata;
  }
  // A subscription's event frame: the event and its `prev`.
  auto j = to_json(e);
  j["prev"] = e.position / 2;
  std::string fast;
  append_json(fast, e, false, e.position / 2);
  EXPECT_EQ(fast, dump(j));
}

TEST(JsonApi, EveryAsciiByteIsEscapedAsTheDumpDoes) {
  for (int c = 0; c < 0x80; ++c) {
    std::string s = "a";
    s += static_cast<char>(c);
    s += "b";
    std::string fast;
    append_json_string(fast, s);
    EXPECT_EQ(fast, dump(json(s))) << "byte " << c;
  }
}

TEST(JsonApi, Utf8ValidOrNotComesOutAsTheDumpWritesIt) {
  const std::vector<std::string> samples = {
    "",
    "Caf\xc3\xa9",
    "\xe2\x82\xac and \xf0\x9f\x98\x80",
    "\xff",
    "ok\xc3",               // truncated two-byte sequence
    "\xe2\x82",             // truncated three-byte sequence
    "\xc0\xaf",             // overlong
    "\xed\xa0\x80",         // surrogate
    "mixed \"\\\n\xc3\xa9", // escapes next to UTF-8
  };
  for (auto& s : samples) {
    std::string fast;
    append_json_string(fast, s);
    EXPECT_EQ(fast, dump(json(s)));
    expect_same(make(s, {s, "k:1"}, s, s, 7));
  }
}

TEST(JsonApi, EventsWithAndWithoutMetadataMatchTheDump) {
  expect_same(make("A", {}, "", "", 0));
  expect_same(make("A", {}, "", "", std::numeric_limits<std::uint64_t>::max()));
  expect_same(make("Read", {"read:34"}, "payload-1", "", 1));
  expect_same(make("T", {"a", "b", "c"}, R"({"course":"c1"})", R"({"by":"u"})",
                   123456789));
}

TEST(JsonApi, SseEventFramesCarryTheEventAndItsPrev) {
  bus_item item;
  item.position = 9;
  item.prev = 4;
  item.event = std::make_shared<const sequenced_event>(
    make("T", {"a:1"}, "d\"q", "", 9));
  auto j = to_json(*item.event);
  j["prev"] = 4;
  EXPECT_EQ(http::sse_frame(item),
            "id: 9\nevent: event\ndata: " + dump(j) + "\n\n");
}

// NDJSON and WebSocket frames: `append_frame` writes what the dump of
// `frame_json` (plus "sub") writes, for events and for the other kinds.
TEST(JsonApi, SubscriptionFramesMatchTheDumpWithAndWithoutSub) {
  std::vector<bus_item> items(5);
  items[0].position = 9;
  items[0].prev = 4;
  items[0].event = std::make_shared<const sequenced_event>(
    make("T\xc3\xa9", {"a:1", "b\n"}, "d\"q\x01", "meta", 9));
  items[1].kind = bus_item_kind::checkpoint;
  items[1].position = 10;
  items[1].head = 12;
  items[2].kind = bus_item_kind::caught_up;
  items[2].position = 12;
  items[2].head = 12;
  items[3].kind = bus_item_kind::heartbeat;
  items[3].head = 13;
  // An event whose position differs from its item's takes the json path.
  items[4] = items[0];
  items[4].position = 11;
  for (auto& item : items) {
    std::string fast = "x";
    http::append_frame(fast, item);
    EXPECT_EQ(fast, "x" + dump(http::frame_json(item)));
    for (std::string sub : {"s1", "", "q\"\xff"}) {
      std::string with_sub;
      http::append_frame(with_sub, item, sub);
      auto j = http::frame_json(item);
      j["sub"] = sub;
      EXPECT_EQ(with_sub, dump(j)) << "sub " << sub;
    }
  }
}

TEST(JsonApi, RandomEventsMatchTheDump) {
  std::mt19937_64 rng{20261202};
  // Mostly printable, some escapes, some bytes past ASCII.
  auto text = [&rng] {
    std::string s;
    auto n = rng() % 24;
    for (std::uint64_t i = 0; i < n; ++i) {
      auto pick = rng() % 10;
      if (pick < 6)
        s += static_cast<char>(0x20 + rng() % 0x5f);
      else if (pick < 8)
        s += "\"\\\n\t\x01/"[rng() % 6];
      else
        s += static_cast<char>(0x80 + rng() % 0x80);
    }
    return s;
  };
  for (int i = 0; i < 2000; ++i) {
    std::vector<std::string> tags(rng() % 4);
    for (auto& t : tags)
      t = text();
    auto e = make(text(), std::move(tags), text(), text(), rng());
    expect_same(e);
    bus_item item;
    item.position = e.position;
    item.prev = e.position / 3;
    item.event = std::make_shared<const sequenced_event>(e);
    auto sub = text();
    std::string fast;
    http::append_frame(fast, item, sub);
    auto j = http::frame_json(item);
    j["sub"] = sub;
    EXPECT_EQ(fast, dump(j));
  }
}

} // namespace
} // namespace dcbd::test
