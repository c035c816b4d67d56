// The msgpack codec: round trips, the pinned wire format, and robustness
// against malformed input (it must throw `store_error`, never crash); and
// the shared guard (store/codec_msgpack.hpp) that every decoder uses.
#include "store/codec.hpp"

#include "store/codec_msgpack.hpp"
#include "store/error.hpp"
#include "store/model.hpp"
#include "store/payload.hpp"

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
using std::chrono::microseconds;
using std::chrono::system_clock;

// A minimal msgpack writer, so that tests state the wire format byte by byte
// without depending on the codec's own library.
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
writer wire_event(std::string_view type, std::vector<std::string> tags,
                  std::string_view data, std::string_view metadata) {
  writer w;
  w.array(4).str(type).array(static_cast<std::uint32_t>(tags.size()));
  for (const auto& t : tags)
    w.str(t);
  w.bin(data).bin(metadata);
  return w;
}

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
template <class F>
std::string store_error_message(F&& f) {
  try {
    f();
    ADD_FAILURE() << "decoded; expected a store_error";
  } catch (const store_error& e) {
    EXPECT_EQ(e.code(), errc::invalid_argument) << e.what();
    return e.what();
  }
  return {};
}

// An event whose ignored fifth field nests `depth` arrays (the event itself
// is one more level).
std::string event_with_nesting(int depth) {
  writer w;
  w.array(5).str("T").array(0).bin("").bin("");
  for (int i = 1; i < depth; ++i)
    w.array(1);
  w.array(0);
  return w.bytes();
}

TEST(Codec, NestsAtMost64Levels) {
  // 1 + 63 levels decode; 1 + 64 are refused by the shared guard.
  EXPECT_EQ(dcbd::decode_event(event_with_nesting(63)).type, "T");
  auto message = store_error_message([] {
    dcbd::decode_event(event_with_nesting(64));
  });
  EXPECT_NE(message.find("malformed msgpack: nests deeper than 64"),
            std::string::npos)
    << message;
}

TEST(Codec, KeepsItsWordingThroughTheSharedGuard) {
  auto buf = dcbd::encode(event{"T", {}, "d", "m"});
  EXPECT_EQ(store_error_message([&] {
              dcbd::decode_event(buf + '\0');
            }),
            "malformed msgpack: trailing bytes after the object");
  auto truncated = store_error_message([&] {
    dcbd::decode_event(buf.substr(0, buf.size() - 1));
  });
  EXPECT_EQ(truncated.rfind("malformed msgpack: ", 0), 0u) << truncated;
  // A claim of 2^32-1 array elements in 5 bytes is refused by size, before
  // anything is allocated for it.
  auto huge = store_error_message([] {
    dcbd::decode_events(writer{}.byte(0xdd).be(0xffffffff, 4).bytes());
  });
  EXPECT_NE(huge.find("array size overflow"), std::string::npos) << huge;
}

TEST(CodecGuard, DecodePayloadSharesTheGuard) {
  // decode_payload keeps its wording and gains the depth limit.
  std::vector<int> xs{1, 2, 3};
  auto bytes = dcbd::encode_payload(xs);
  EXPECT_EQ(dcbd::decode_payload<std::vector<int>>(bytes), xs);
  EXPECT_EQ(store_error_message([&] {
              dcbd::decode_payload<std::vector<int>>(bytes + '\xc0');
            }),
            "payload has trailing bytes after the msgpack value");
  auto deep = std::string(65, '\x91') + '\xc0';
  auto message = store_error_message([&] {
    dcbd::decode_payload<std::vector<int>>(deep);
  });
  EXPECT_EQ(message.rfind("payload does not decode: nests deeper than 64", 0),
            0u)
    << message;
  auto wrong = store_error_message([&] {
    dcbd::decode_payload<std::vector<int>>(
      dcbd::encode_payload(std::string{"text"}));
  });
  EXPECT_EQ(wrong.rfind("payload does not decode: ", 0), 0u) << wrong;
}

TEST(CodecGuard, UnpackGuardedHonoursAnExplicitSizeLimit) {
  // The limit of a caller (e.g. the HTTP body limit) caps every size below
  // the buffer size.
  auto ten = std::string{"\x9a"} + std::string(10, '\xc0');
  dcbd::msgpack_wording say{"x: ", "x: trailing"};
  EXPECT_EQ(dcbd::unpack_guarded(ten, say).get().via.array.size, 10u);
  auto message = store_error_message([&] {
    dcbd::unpack_guarded(ten, say, 9);
  });
  EXPECT_EQ(message, "x: array size overflow (limits: 9 elements, 9 bytes)");
  auto str = std::string{"\xa5hello"};
  EXPECT_EQ(store_error_message([&] {
              dcbd::unpack_guarded(str, say, 4);
            }),
            "x: str size overflow (limits: 4 elements, 4 bytes)");
  // An element bound tighter than the size bound caps containers only.
  EXPECT_EQ(store_error_message([&] {
              dcbd::unpack_guarded(ten, say, 100, dcbd::msgpack_max_depth, 9);
            }),
            "x: array size overflow (limits: 9 elements, 11 bytes)");
  EXPECT_EQ(dcbd::unpack_guarded(str, say, 100, dcbd::msgpack_max_depth, 1)
              .get()
              .via.str.size,
            5u);
}

// -- fuzzing -----------------------------------------------------------------

// What a decoder did with an input.
enum class outcome { decoded, rejected };

// Decodes `buf` with `decode`, which returns the re-encoded result. Fails
// the test for anything but success or `store_error(invalid_argument)`.
// A decoded result must be stable: its encoding decodes to the same value.
outcome try_decode(const std::string& buf,
                   const std::function<std::string(std::string_view)>& decode,
                   const char* name, std::size_t& failures) {
  auto report = [&](const std::string& why) {
    if (++failures > 10)
      return;
    std::string hex;
    for (std::size_t i = 0; i < buf.size() && i < 64; ++i) {
      static constexpr char digits[] = "0123456789abcdef";
      auto c = static_cast<unsigned char>(buf[i]);
      hex += digits[c >> 4];
      hex += digits[c & 15];
    }
    ADD_FAILURE() << name << ": " << why << " on " << buf.size()
                  << " bytes: " << hex;
  };
  try {
    auto again = decode(buf);
    try {
      if (decode(again) != again)
        report("re-encoding is not stable");
    } catch (const std::exception& e) {
      report(std::string{"re-encoded result does not decode: "} + e.what());
    }
    return outcome::decoded;
  } catch (const store_error& e) {
    if (e.code() != errc::invalid_argument)
      report(std::string{"wrong code: "} + e.what());
    return outcome::rejected;
  } catch (const std::exception& e) {
    report(std::string{"escaped exception: "} + e.what());
  } catch (...) {
    report("escaped non-std exception");
  }
  return outcome::rejected;
}

struct decoder {
  const char* name;
  std::function<std::string(std::string_view)> decode;
};

std::vector<decoder> decoders() {
  return {
    {"decode_event",
     [](std::string_view b) {
       return dcbd::encode(dcbd::decode_event(b));
     }},
    {"decode_sequenced_event",
     [](std::string_view b) {
       return dcbd::encode(dcbd::decode_sequenced_event(b));
     }},
    {"decode_events",
     [](std::string_view b) {
       return dcbd::encode(dcbd::decode_events(b));
     }},
  };
}

// Valid encodings to mutate.
std::vector<std::string> seeds() {
  event a{"CourseRegistered", {"course:1", "student:2"}, "{\"x\":1}", "m"};
  event b{"T", {}, std::string{"\0\xff\x00", 3}, {}};
  event c{"Caf\xc3\xa9", {"\xe2\x82\xac"}, std::string(40, 'd'), "meta"};
  return {
    dcbd::encode(a),
    dcbd::encode(b),
    dcbd::encode(c),
    dcbd::encode(sequenced_event{1, at_us(1'700'000'000'000'000), a}),
    dcbd::encode(sequenced_event{300, at_us(-5), b}),
    dcbd::encode(std::vector<event>{a, b, c}),
    dcbd::encode(std::vector<event>{}),
  };
}

// Seeded from $DCBD_SEED when set, so a failure can be replayed.
std::uint64_t fuzz_seed() {
  if (const char* s = std::getenv("DCBD_SEED"); s && *s)
    return std::stoull(s);
  return 20240611;
}

TEST(CodecFuzz, RandomBytesDecodeOrThrowStoreError) {
  auto seed = fuzz_seed();
  SCOPED_TRACE("DCBD_SEED=" + std::to_string(seed));
  std::mt19937_64 rng{seed};
  // Bias towards bytes that start msgpack containers, so that many inputs
  // get past the first byte.
  const unsigned char interesting[] = {0x90, 0x91, 0x93, 0x94, 0xa1, 0xc4,
                                       0xc0, 0xdc, 0xdd, 0xd9, 0xc6, 0x00,
                                       0x7f, 0xff, 0xcf, 0xd3, 0x80, 0xde};
  auto ds = decoders();
  std::size_t failures = 0;
  std::size_t decoded = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string buf(rng() % 48, '\0');
    for (auto& c : buf)
      c = static_cast<char>(rng() % 3 == 0
                              ? interesting[rng() % sizeof(interesting)]
                              : rng() & 0xff);
    if (rng() % 2 == 0 && !buf.empty())
      buf[0] = static_cast<char>(0x94);
    for (const auto& d : ds)
      if (try_decode(buf, d.decode, d.name, failures) == outcome::decoded)
        ++decoded;
  }
  EXPECT_EQ(failures, 0u);
  RecordProperty("decoded", static_cast<int>(decoded));
}

TEST(CodecFuzz, MutatedEncodingsDecodeOrThrowStoreError) {
  auto seed = fuzz_seed();
  SCOPED_TRACE("DCBD_SEED=" + std::to_string(seed));
  std::mt19937_64 rng{seed};
  auto valid = seeds();
  auto ds = decoders();
  std::size_t failures = 0;
  std::size_t decoded = 0;
  std::size_t rejected = 0;
  for (int i = 0; i < 20000; ++i) {
    auto buf = valid[rng() % valid.size()];
    auto mutations = 1 + rng() % 4;
    for (std::uint64_t m = 0; m < mutations; ++m) {
      auto pos = buf.empty() ? 0 : rng() % buf.size();
      switch (rng() % 6) {
        case 0: // flip a bit
          if (!buf.empty())
            buf[pos] = static_cast<char>(buf[pos] ^ (1 << (rng() % 8)));
          break;
        case 1: // overwrite a byte
          if (!buf.empty())
            buf[pos] = static_cast<char>(rng() & 0xff);
          break;
        case 2: // insert a byte
          buf.insert(buf.begin() + static_cast<std::ptrdiff_t>(pos),
                     static_cast<char>(rng() & 0xff));
          break;
        case 3: // delete a byte
          if (!buf.empty())
            buf.erase(pos, 1);
          break;
        case 4: // truncate
          buf.resize(pos);
          break;
        default: // set a byte to an extreme value
          if (!buf.empty())
            buf[pos] = static_cast<char>(rng() % 2 ? 0xff : 0x00);
          break;
      }
    }
    for (const auto& d : ds) {
      if (try_decode(buf, d.decode, d.name, failures) == outcome::decoded)
        ++decoded;
      else
        ++rejected;
    }
  }
  EXPECT_EQ(failures, 0u);
  // Sanity of the fuzzer itself: both paths were exercised.
  EXPECT_GT(decoded, 100u);
  EXPECT_GT(rejected, 100u);
}

TEST(CodecFuzz, RoundTripsRandomEvents) {
  auto seed = fuzz_seed();
  SCOPED_TRACE("DCBD_SEED=" + std::to_string(seed));
  std::mt19937_64 rng{seed};
  auto random_bytes = [&](std::size_t max) {
    std::string s(rng() % (max + 1), '\0');
    for (auto& c : s)
      c = static_cast<char>(rng() & 0xff);
    return s;
  };
  for (int i = 0; i < 2000; ++i) {
    std::vector<event> events(rng() % 4);
    for (auto& e : events) {
      e.type = random_bytes(40);
      e.tags.resize(rng() % 5);
      for (auto& t : e.tags)
        t = random_bytes(20);
      e.data = random_bytes(rng() % 8 == 0 ? 70000 : 100);
      e.metadata = random_bytes(30);
      ASSERT_EQ(dcbd::decode_event(dcbd::encode(e)), e) << "iteration " << i;
    }
    ASSERT_EQ(dcbd::decode_events(dcbd::encode(events)), events);
    sequenced_event se{rng() >> 1,
                       at_us(static_cast<std::int64_t>(rng() % (1ull << 52))
                             - (std::int64_t{1} << 51)),
                       events.empty() ? event{} : events.front()};
    auto back = dcbd::decode_sequenced_event(dcbd::encode(se));
    ASSERT_EQ(back.position, se.position);
    ASSERT_EQ(back.recorded_at, se.recorded_at);
    ASSERT_EQ(back.event, se.event);
  }
}

} // namespace
