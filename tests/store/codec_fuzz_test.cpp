// Fuzzing the msgpack decoders: random and mutated buffers must decode or
// fail with `store_error(invalid_argument)`, never anything else.
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

system_clock::time_point at_us(std::int64_t us) {
  return system_clock::time_point{
    std::chrono::duration_cast<system_clock::duration>(microseconds{us})};
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
