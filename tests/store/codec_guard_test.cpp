// The shared msgpack guard (store/codec_msgpack.hpp) that every decoder
// uses: nesting, sizes, trailing bytes, and each decoder's own wording.
#include "store/codec.hpp"
#include "store/codec_msgpack.hpp"
#include "store/error.hpp"
#include "store/payload.hpp"
#include "tests/store/msgpack_writer.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

using dcbd::errc;
using dcbd::event;
using dcbd::store_error;
using dcbd::test::writer;

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

} // namespace
