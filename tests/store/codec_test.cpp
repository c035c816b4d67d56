// The msgpack codec: round trips, the pinned wire format, and robustness
// against malformed input (it must throw `store_error`, never crash). The
// shared guard is tested in codec_guard_test.cpp, fuzzing in
// codec_fuzz_test.cpp.
#include "store/codec.hpp"

#include "store/codec_msgpack.hpp"
#include "store/error.hpp"
#include "store/model.hpp"
#include "store/payload.hpp"
#include "tests/store/msgpack_writer.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace {

using dcbd::errc;
using dcbd::event;
using dcbd::sequenced_event;
using dcbd::store_error;
using dcbd::test::wire_event;
using dcbd::test::writer;
using std::chrono::microseconds;
using std::chrono::system_clock;

// Runs `f`; checks it throws `store_error(invalid_argument)`.
template <class F>
void expect_malformed(F&& f, std::string_view what) {
  try {
    f();
    ADD_FAILURE() << "decoded; expected invalid_argument for " << what;
  } catch (const store_error& e) {
    EXPECT_EQ(dcbd::to_string(e.code()), "invalid_argument")
      << what << ": " << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": not a store_error: " << e.what();
  } catch (...) {
    ADD_FAILURE() << what << ": not a std::exception";
  }
}

// Checks that every decoder rejects `buf`.
void expect_all_reject(const std::string& buf, std::string_view what) {
  expect_malformed(
    [&] {
      dcbd::decode_event(buf);
    },
    what);
  expect_malformed(
    [&] {
      dcbd::decode_sequenced_event(buf);
    },
    what);
  expect_malformed(
    [&] {
      dcbd::decode_events(buf);
    },
    what);
}

std::string all_bytes() {
  std::string s;
  for (int i = 0; i < 256; ++i)
    s += static_cast<char>(i);
  return s;
}

system_clock::time_point at_us(std::int64_t us) {
  return system_clock::time_point{
    std::chrono::duration_cast<system_clock::duration>(microseconds{us})};
}

// -- round trips -------------------------------------------------------------

TEST(Codec, EventRoundTrip) {
  event e{"CourseRegistered",
          {"course:c1", "student:s1"},
          "{\"n\":1}",
          "{\"correlation\":\"abc\"}"};
  EXPECT_EQ(dcbd::decode_event(dcbd::encode(e)), e);
}

TEST(Codec, EventRoundTripBinaryPayload) {
  std::string nuls{"\0\0a\0", 4};
  event e{"T", {"k:v"}, all_bytes() + nuls, std::string{"\xff\0\xff", 3}};
  auto back = dcbd::decode_event(dcbd::encode(e));
  EXPECT_EQ(back, e);
  EXPECT_EQ(back.data.size(), 260u);
  EXPECT_EQ(back.metadata.size(), 3u);
}

TEST(Codec, EventRoundTripEmptyFields) {
  event e{"T", {}, {}, {}};
  EXPECT_EQ(dcbd::decode_event(dcbd::encode(e)), e);
  // The codec does not validate: an empty type still round-trips.
  event empty{};
  EXPECT_EQ(dcbd::decode_event(dcbd::encode(empty)), empty);
}

TEST(Codec, EventRoundTripUtf8AndManyTags) {
  event e{"Caf\xc3\xa9\xf0\x9f\x98\x80", {}, "x", "y"};
  for (int i = 0; i < 1000; ++i)
    e.tags.push_back("tag:" + std::to_string(i) + ":\xe2\x82\xac");
  EXPECT_EQ(dcbd::decode_event(dcbd::encode(e)), e);
}

TEST(Codec, EventRoundTripOneMegabyte) {
  std::mt19937 rng{42};
  std::string data(std::size_t{1} << 20, '\0');
  for (auto& c : data)
    c = static_cast<char>(rng());
  event e{"Big", {"k:v"}, data, std::string(70000, '\xff')};
  auto buf = dcbd::encode(e);
  EXPECT_GT(buf.size(), data.size() + 70000);
  EXPECT_EQ(dcbd::decode_event(buf), e);
}

TEST(Codec, SequencedEventRoundTrip) {
  for (std::int64_t us :
       {std::int64_t{0}, std::int64_t{1}, std::int64_t{1'700'000'000'123'456},
        std::int64_t{-1}, std::int64_t{-86'400'000'000}}) {
    for (std::uint64_t pos :
         {std::uint64_t{1}, std::uint64_t{127}, std::uint64_t{128},
          std::uint64_t{1} << 40, std::uint64_t{9'223'372'036'854'775'807}}) {
      sequenced_event se{pos, at_us(us),
                         event{"T", {"a", "b"}, std::string{"\0\xff", 2}, "m"}};
      auto back = dcbd::decode_sequenced_event(dcbd::encode(se));
      EXPECT_EQ(back.position, pos);
      EXPECT_EQ(back.recorded_at, se.recorded_at) << "us " << us;
      EXPECT_EQ(back.event, se.event);
    }
  }
}

TEST(Codec, SequencedEventKeepsMicroseconds) {
  // A real clock reading, cut to microseconds, survives exactly.
  auto now = std::chrono::time_point_cast<microseconds>(system_clock::now());
  sequenced_event se{3, now, event{"T", {}, {}, {}}};
  auto back = dcbd::decode_sequenced_event(dcbd::encode(se));
  EXPECT_EQ(back.recorded_at, se.recorded_at);
  // Microseconds that differ by one stay different.
  sequenced_event next{3, now + microseconds{1}, se.event};
  EXPECT_NE(dcbd::decode_sequenced_event(dcbd::encode(next)).recorded_at,
            back.recorded_at);
}

TEST(Codec, EventListRoundTrip) {
  std::vector<event> events{
    event{"A", {}, {}, {}},
    event{"B", {"x", "y"}, std::string{"\0", 1}, std::string{"\xff", 1}},
    event{"C", {"z"}, std::string(300, 'c'), std::string(70000, 'm')},
  };
  EXPECT_EQ(dcbd::decode_events(dcbd::encode(events)), events);
  EXPECT_TRUE(dcbd::decode_events(dcbd::encode(std::vector<event>{})).empty());
  std::vector<event> many(20000, event{"E", {"t"}, "d", {}});
  EXPECT_EQ(dcbd::decode_events(dcbd::encode(many)), many);
}

// -- the wire format ---------------------------------------------------------

TEST(Codec, EncodesTheDocumentedEventFormat) {
  // [type: str, tags: [str...], data: bin, metadata: bin]
  event e{"T", {"a:1", "b"}, std::string{"\0\xff", 2}, "m"};
  auto expected
    = wire_event("T", {"a:1", "b"}, std::string{"\0\xff", 2}, "m").bytes();
  EXPECT_EQ(dcbd::encode(e), expected);
}

TEST(Codec, EncodesTheDocumentedSequencedEventFormat) {
  // [position: uint, recorded_at_us: int, event]
  sequenced_event se{5, at_us(1'000'000), event{"T", {}, "d", ""}};
  auto buf = dcbd::encode(se);
  ASSERT_GE(buf.size(), 3u);
  EXPECT_EQ(static_cast<unsigned char>(buf[0]), 0x93);
  EXPECT_EQ(static_cast<unsigned char>(buf[1]), 0x05);
  // The event is the last field, in its own format.
  auto ev = wire_event("T", {}, "d", "").bytes();
  ASSERT_GE(buf.size(), ev.size());
  EXPECT_EQ(buf.substr(buf.size() - ev.size()), ev);
  // The timestamp decodes from any integer encoding.
  auto hand = writer{}.array(3).uint(5).sint(1'000'000).raw(ev).bytes();
  auto back = dcbd::decode_sequenced_event(hand);
  EXPECT_EQ(back.position, 5u);
  EXPECT_EQ(back.recorded_at, se.recorded_at);
  EXPECT_EQ(back.event, se.event);
}

TEST(Codec, EncodesEventListAsArray) {
  std::vector<event> events{event{"A", {}, {}, {}}, event{"B", {"t"}, "d", {}}};
  auto expected = writer{}
                    .array(2)
                    .raw(wire_event("A", {}, "", "").bytes())
                    .raw(wire_event("B", {"t"}, "d", "").bytes())
                    .bytes();
  EXPECT_EQ(dcbd::encode(events), expected);
}

TEST(Codec, DecodesHandWrittenEvent) {
  auto buf = wire_event("Type", {"k:v", "x"}, "payload", "meta").bytes();
  auto e = dcbd::decode_event(buf);
  EXPECT_EQ(e.type, "Type");
  EXPECT_EQ(e.tags, (std::vector<std::string>{"k:v", "x"}));
  EXPECT_EQ(e.data, "payload");
  EXPECT_EQ(e.metadata, "meta");
}

TEST(Codec, DecodesLongFormsOfLengths) {
  // str8/array16/bin32 headers are valid even where a shorter form exists.
  auto buf = writer{}
               .array(4)
               .byte(0xd9)
               .be(1, 1)
               .raw("T")
               .byte(0xdc)
               .be(1, 2)
               .byte(0xda)
               .be(3, 2)
               .raw("k:v")
               .byte(0xc6)
               .be(2, 4)
               .raw("dd")
               .byte(0xc5)
               .be(0, 2)
               .bytes();
  EXPECT_EQ(dcbd::decode_event(buf), (event{"T", {"k:v"}, "dd", ""}));
}

TEST(Codec, AcceptsStrForDataAndMetadata) {
  // Decision: text is accepted for the opaque payload fields too.
  auto buf = writer{}.array(4).str("T").array(0).str("data").str("").bytes();
  EXPECT_EQ(dcbd::decode_event(buf), (event{"T", {}, "data", ""}));
}

TEST(Codec, IgnoresFieldsAddedByLaterVersions) {
  // Fields are only ever appended; a reader skips the ones it does not know.
  auto buf = writer{}
               .array(5)
               .str("T")
               .array(1)
               .str("t")
               .bin("d")
               .bin("m")
               .map(1)
               .str("future")
               .uint(1)
               .bytes();
  EXPECT_EQ(dcbd::decode_event(buf), (event{"T", {"t"}, "d", "m"}));
}

// -- malformed input ---------------------------------------------------------

TEST(Codec, RejectsEmptyBuffer) {
  expect_all_reject("", "empty buffer");
}

TEST(Codec, RejectsGarbage) {
  expect_all_reject("\xc1", "reserved byte 0xc1");
  expect_all_reject("hello, world", "text");
  expect_all_reject(std::string(64, '\xff'), "negative fixints");
  expect_all_reject(all_bytes(), "all bytes");
}

TEST(Codec, RejectsEveryTruncation) {
  event e{"Type", {"a:1", "b:2"}, std::string(300, '\0'), "meta"};
  auto buf = dcbd::encode(e);
  for (std::size_t n = 0; n < buf.size(); ++n)
    expect_malformed(
      [&] {
        dcbd::decode_event(buf.substr(0, n));
      },
      "event cut to " + std::to_string(n));
  auto seq = dcbd::encode(sequenced_event{9, at_us(123456), e});
  for (std::size_t n = 0; n < seq.size(); ++n)
    expect_malformed(
      [&] {
        dcbd::decode_sequenced_event(seq.substr(0, n));
      },
      "sequenced_event cut to " + std::to_string(n));
  auto list = dcbd::encode(std::vector<event>{e, e});
  for (std::size_t n = 0; n < list.size(); ++n)
    expect_malformed(
      [&] {
        dcbd::decode_events(list.substr(0, n));
      },
      "events cut to " + std::to_string(n));
}

TEST(Codec, RejectsTrailingBytes) {
  event e{"T", {}, "d", "m"};
  auto buf = dcbd::encode(e);
  expect_malformed(
    [&] {
      dcbd::decode_event(buf + '\0');
    },
    "NUL after event");
  expect_malformed(
    [&] {
      dcbd::decode_event(buf + buf);
    },
    "two events");
  auto seq = dcbd::encode(sequenced_event{1, at_us(0), e});
  expect_malformed(
    [&] {
      dcbd::decode_sequenced_event(seq + "\x90");
    },
    "array after sequenced_event");
  auto list = dcbd::encode(std::vector<event>{e});
  expect_malformed(
    [&] {
      dcbd::decode_events(list + "\xc0");
    },
    "nil after events");
}

TEST(Codec, RejectsMapInsteadOfArray) {
  auto buf = writer{}
               .map(4)
               .str("type")
               .str("T")
               .str("tags")
               .array(0)
               .str("data")
               .bin("")
               .str("metadata")
               .bin("")
               .bytes();
  expect_all_reject(buf, "map event");
  expect_malformed(
    [&] {
      dcbd::decode_events(writer{}.map(1).uint(0).raw(buf).bytes());
    },
    "map of events");
}

TEST(Codec, RejectsWrongTopLevelTypes) {
  for (const auto& buf : {writer{}.nil().bytes(), writer{}.uint(4).bytes(),
                          writer{}.str("T").bytes(), writer{}.bin("T").bytes(),
                          writer{}.boolean(true).bytes()})
    expect_all_reject(buf, "scalar");
}

TEST(Codec, RejectsMissingEventFields) {
  expect_malformed(
    [] {
      dcbd::decode_event(writer{}.array(0).bytes());
    },
    "empty array");
  expect_malformed(
    [] {
      dcbd::decode_event(writer{}.array(1).str("T").bytes());
    },
    "type only");
  expect_malformed(
    [] {
      dcbd::decode_event(writer{}.array(3).str("T").array(0).bin("d").bytes());
    },
    "no metadata");
}

TEST(Codec, RejectsWrongFieldTypes) {
  struct wrong {
    const char* what;
    std::string buf;
  };
  std::vector<wrong> cases{
    {"int type", writer{}.array(4).uint(1).array(0).bin("").bin("").bytes()},
    {"nil type", writer{}.array(4).nil().array(0).bin("").bin("").bytes()},
    {"tags as str",
     writer{}.array(4).str("T").str("k:v").bin("").bin("").bytes()},
    {"tags as map", writer{}
                      .array(4)
                      .str("T")
                      .map(1)
                      .str("k")
                      .str("v")
                      .bin("")
                      .bin("")
                      .bytes()},
    {"int tag",
     writer{}.array(4).str("T").array(1).uint(7).bin("").bin("").bytes()},
    {"nil tag",
     writer{}.array(4).str("T").array(1).nil().bin("").bin("").bytes()},
    {"nested tag array",
     writer{}.array(4).str("T").array(1).array(0).bin("").bin("").bytes()},
    {"int data", writer{}.array(4).str("T").array(0).uint(1).bin("").bytes()},
    {"negative int data",
     writer{}.array(4).str("T").array(0).sint(-1).bin("").bytes()},
    {"nil data", writer{}.array(4).str("T").array(0).nil().bin("").bytes()},
    {"array data",
     writer{}.array(4).str("T").array(0).array(1).uint(1).bin("").bytes()},
    {"int metadata",
     writer{}.array(4).str("T").array(0).bin("").uint(0).bytes()},
    {"bool metadata",
     writer{}.array(4).str("T").array(0).bin("").boolean(false).bytes()},
  };
  for (const auto& c : cases)
    expect_malformed(
      [&] {
        dcbd::decode_event(c.buf);
      },
      c.what);
  // The same wrong event inside a list is rejected too.
  for (const auto& c : cases)
    expect_malformed(
      [&] {
        dcbd::decode_events(writer{}
                              .array(2)
                              .raw(dcbd::encode(event{"T", {}, {}, {}}))
                              .raw(c.buf)
                              .bytes());
      },
      std::string{"list with "} + c.what);
}

TEST(Codec, RejectsWrongSequencedEventFields) {
  auto ev = wire_event("T", {}, "", "").bytes();
  struct wrong {
    const char* what;
    std::string buf;
  };
  std::vector<wrong> cases{
    {"negative position", writer{}.array(3).sint(-1).uint(0).raw(ev).bytes()},
    {"str position", writer{}.array(3).str("1").uint(0).raw(ev).bytes()},
    {"nil position", writer{}.array(3).nil().uint(0).raw(ev).bytes()},
    {"str recorded_at", writer{}.array(3).uint(1).str("now").raw(ev).bytes()},
    {"nil recorded_at", writer{}.array(3).uint(1).nil().raw(ev).bytes()},
    {"float recorded_at",
     writer{}.array(3).uint(1).byte(0xcb).be(0, 8).raw(ev).bytes()},
    {"event as str", writer{}.array(3).uint(1).uint(0).str("T").bytes()},
    {"event missing", writer{}.array(2).uint(1).uint(0).bytes()},
    {"bare event", ev},
  };
  for (const auto& c : cases)
    expect_malformed(
      [&] {
        dcbd::decode_sequenced_event(c.buf);
      },
      c.what);
}

TEST(Codec, RejectsRecordedAtOutsideTheClockRange) {
  // system_clock counts nanoseconds in 64 bits (about +-292 years around
  // 1970); a microsecond count beyond that cannot be represented and must
  // not wrap silently.
  auto ev = wire_event("T", {}, "", "").bytes();
  for (std::int64_t us :
       {std::numeric_limits<std::int64_t>::max(),
        std::numeric_limits<std::int64_t>::min(), std::int64_t{1} << 62}) {
    auto buf = writer{}.array(3).uint(1).sint(us).raw(ev).bytes();
    expect_malformed(
      [&] {
        dcbd::decode_sequenced_event(buf);
      },
      "recorded_at_us " + std::to_string(us));
  }
}

TEST(Codec, RejectsHugeDeclaredLengths) {
  // A few bytes claiming billions of elements must fail fast, not allocate.
  std::vector<std::string> bufs{
    writer{}.byte(0xdd).be(0xffffffff, 4).bytes(),
    writer{}.byte(0xdf).be(0xffffffff, 4).bytes(),
    writer{}.byte(0xdb).be(0xffffffff, 4).raw("abc").bytes(),
    writer{}.byte(0xc6).be(0xffffffff, 4).raw("abc").bytes(),
    writer{}.array(4).str("T").byte(0xdd).be(0xfffffff0, 4).bytes(),
    writer{}.byte(0xdd).be(0x10000000, 4).bytes(),
  };
  for (std::size_t i = 0; i < bufs.size(); ++i)
    expect_all_reject(bufs[i], "huge length #" + std::to_string(i));
}

TEST(Codec, SurvivesDeepNesting) {
  // Deeply nested arrays in an ignored trailing field must not overflow the
  // stack.
  writer w;
  w.array(5).str("T").array(0).bin("").bin("");
  for (int i = 0; i < 100000; ++i)
    w.array(1);
  w.nil();
  try {
    dcbd::decode_event(w.bytes());
    SUCCEED() << "accepted (the nesting is in an ignored field)";
  } catch (const store_error& e) {
    EXPECT_EQ(dcbd::to_string(e.code()), "invalid_argument") << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a store_error: " << e.what();
  }
  expect_all_reject(std::string(100000, '\x91'), "nesting without end");
}

// The message of the `store_error` that `f` throws; fails the test (and
// returns "") when it does not throw one.
} // namespace
