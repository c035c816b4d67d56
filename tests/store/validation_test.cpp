// validate() and is_utf8() directly: normalization, field names, limits,
// the validated append (bad input through the stores: bad_input_test.cpp).
#include "store/validation.hpp"

#include "store/error.hpp"
#include "store/event_store.hpp"
#include "store/job_model.hpp"
#include "store/model.hpp"
#include "tests/store/input_cases.hpp"
#include "tests/support/pg_fixture.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace {

using dcbd::append_condition;
using dcbd::append_request;
using dcbd::event;
using dcbd::job_request;
using dcbd::query;
using dcbd::query_item;
using dcbd::read_options;
using dcbd::store_error;
using namespace dcbd::test;

// Only validation makes a validated append: the store actor and the
// stores, which take nothing else, can never be handed an unchecked request
// (this replaced StoreActor.InvalidDirectRequestFailsAloneInItsGroup, whose
// case no longer compiles).
static_assert(!std::is_constructible_v<dcbd::validated_append, append_request>);
static_assert(
  !std::is_constructible_v<dcbd::validated_append, const append_request&>);
static_assert(!std::is_default_constructible_v<dcbd::validated_append>);
static_assert(!std::is_convertible_v<append_request, dcbd::validated_append>);

// -- validate() and is_utf8() directly ---------------------------------------

TEST(Validation, EventNormalizesTags) {
  event e{"T", {"c", "a", "b", "a", "c"}, "data", "meta"};
  dcbd::validate(e, dcbd::limits{}, "events[0]");
  EXPECT_EQ(e.tags, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(e.type, "T");
  EXPECT_EQ(e.data, "data");
  EXPECT_EQ(e.metadata, "meta");
}

TEST(Validation, EventFieldIsPrefixed) {
  event e{"", {}, {}, {}};
  expect_invalid(
    [&] {
      dcbd::validate(e, dcbd::limits{}, "events[7]");
    },
    "events[7].type");
  event f{"T", {"ok", bytes_of(300)}, {}, {}};
  expect_invalid(
    [&] {
      dcbd::validate(f, dcbd::limits{}, "x");
    },
    "x.tags[1]");
}

TEST(Validation, EventRespectsCustomLimits) {
  dcbd::limits lim;
  lim.max_type_bytes = 4;
  lim.max_tag_bytes = 2;
  lim.max_payload_bytes = 3;
  lim.max_tags_per_event = 2;
  event ok{"abcd", {"ab", "cd"}, "12", "3"};
  EXPECT_NO_THROW(dcbd::validate(ok, lim, "e"));
  event long_type{"abcde", {}, {}, {}};
  expect_invalid(
    [&] {
      dcbd::validate(long_type, lim, "e");
    },
    "e.type");
  event long_tag{"a", {"abc"}, {}, {}};
  expect_invalid(
    [&] {
      dcbd::validate(long_tag, lim, "e");
    },
    "e.tags[0]");
  event big{"a", {}, "12", "34"};
  expect_invalid(
    [&] {
      dcbd::validate(big, lim, "e");
    },
    "e.data");
  event tags{"a", {"a", "b", "c"}, {}, {}};
  expect_invalid(
    [&] {
      dcbd::validate(tags, lim, "e");
    },
    "e.tags");
}

TEST(Validation, QueryNormalizesItems) {
  query q{{query_item{{"B", "A", "B"}, {"y", "x", "x"}},
           query_item{{}, {"k", "j", "k"}}}};
  dcbd::validate(q, dcbd::limits{}, "query");
  ASSERT_EQ(q.items.size(), 2u);
  EXPECT_EQ(q.items[0].types, (std::vector<std::string>{"A", "B"}));
  EXPECT_EQ(q.items[0].tags, (std::vector<std::string>{"x", "y"}));
  EXPECT_TRUE(q.items[1].types.empty());
  EXPECT_EQ(q.items[1].tags, (std::vector<std::string>{"j", "k"}));
}

TEST(Validation, QueryAllIsValid) {
  auto q = query::all();
  EXPECT_NO_THROW(dcbd::validate(q, dcbd::limits{}, "query"));
  EXPECT_TRUE(q.matches_all());
}

TEST(Validation, QueryItemWithoutTypesOrTagsIsInvalid) {
  query q{{query_item{{}, {"t"}}, query_item{{"T"}, {}}, query_item{}}};
  expect_invalid(
    [&] {
      dcbd::validate(q, dcbd::limits{}, "query");
    },
    "query.items[2]");
}

TEST(Validation, AppendRequestNormalizesEventsAndCondition) {
  append_request req{
    {event{"A", {"z", "y", "z"}, {}, {}}, event{"B", {}, {}, {}}},
    append_condition{query{{query_item{{"B", "A"}, {"z", "y"}}}}, 5}};
  dcbd::validate(req, dcbd::limits{});
  EXPECT_EQ(req.events[0].tags, (std::vector<std::string>{"y", "z"}));
  const auto& item = req.condition->fail_if_events_match.items.at(0);
  EXPECT_EQ(item.types, (std::vector<std::string>{"A", "B"}));
  EXPECT_EQ(item.tags, (std::vector<std::string>{"y", "z"}));
  EXPECT_EQ(req.condition->after, 5u);
}

TEST(Validation, ValidatedAppendIsNormalizedAndSized) {
  append_request req{{event{"AB", {"z", "y", "z"}, "dd", "m"}},
                     append_condition{query{{query_item{{}, {"b", "a"}}}}, 2}};
  auto v = dcbd::validate_append(req, dcbd::limits{});
  ASSERT_EQ(v.events().size(), 1u);
  EXPECT_EQ(v.events()[0].tags, (std::vector<std::string>{"y", "z"}));
  ASSERT_TRUE(v.condition());
  EXPECT_EQ(v.condition()->fail_if_events_match.items.at(0).tags,
            (std::vector<std::string>{"a", "b"}));
  // "AB" + "y" + "z" + "dd" + "m"
  EXPECT_EQ(v.payload_bytes(), 7u);
  auto events = std::move(v).take_events();
  EXPECT_EQ(events.at(0).type, "AB");
}

TEST(Validation, ValidateAppendRefusesWhatValidateRefuses) {
  expect_invalid(
    [&] {
      dcbd::validate_append(append_request{}, dcbd::limits{});
    },
    "events");
  dcbd::limits tight;
  tight.max_payload_bytes = 1;
  expect_invalid(
    [&] {
      dcbd::validate_append(
        append_request{{event{"A", {}, "too big", {}}}, std::nullopt}, tight);
    },
    "events[0].data");
}

TEST(Validation, AppendRequestNamesFields) {
  append_request empty;
  expect_invalid(
    [&] {
      dcbd::validate(empty, dcbd::limits{});
    },
    "events");
  append_request bad_tag{
    {event{"A", {}, {}, {}}, event{"B", {"", "x"}, {}, {}}}, std::nullopt};
  expect_invalid(
    [&] {
      dcbd::validate(bad_tag, dcbd::limits{});
    },
    "events[1].tags[0]");
  append_request bad_after{{event{"A", {}, {}, {}}},
                           append_condition{query::all(), int64_max + 1}};
  expect_invalid(
    [&] {
      dcbd::validate(bad_after, dcbd::limits{});
    },
    "condition.after");
  append_request bad_item{
    {event{"A", {}, {}, {}}},
    append_condition{query{{query_item{{"A"}, {"x", bad_utf8}}}}, {}}};
  expect_invalid(
    [&] {
      dcbd::validate(bad_item, dcbd::limits{});
    },
    "condition.fail_if_events_match.items[0].tags[1]");
}

TEST(Validation, AppendRequestValidatesItsJobs) {
  job_request ok;
  ok.kind = "k";
  ok.args = "";
  append_request req{{event{"A", {}, {}, {}}}, std::nullopt, {ok, ok}};
  req.jobs[1].kind.clear();
  expect_invalid(
    [&] {
      dcbd::validate(req, dcbd::limits{});
    },
    "jobs[1].kind");
  req.jobs[1].kind = "k";
  auto v = dcbd::validate_append(req, dcbd::limits{});
  ASSERT_EQ(v.jobs().size(), 2u);
  EXPECT_EQ(v.jobs()[0].args, "{}");
  // Jobs count toward the bytes the statement carries: queue, kind, args.
  EXPECT_EQ(v.payload_bytes(), 1u + 2 * (7 + 1 + 2));
  req.jobs.assign(dcbd::job_limits{}.max_jobs_per_request + 1, ok);
  expect_invalid(
    [&] {
      dcbd::validate(req, dcbd::limits{});
    },
    "jobs");
  // Jobs need events, as every append does.
  append_request no_events{{}, std::nullopt, {ok}};
  expect_invalid(
    [&] {
      dcbd::validate(no_events, dcbd::limits{});
    },
    "events");
}

TEST(Validation, ReadOptionsFromMustFitInt64) {
  EXPECT_NO_THROW(dcbd::validate(read_options{}, "options"));
  EXPECT_NO_THROW(
    dcbd::validate(read_options{int64_max, int64_max + 1, true}, "options"));
  expect_invalid(
    [] {
      dcbd::validate(read_options{int64_max + 1, {}, false}, "options");
    },
    "options.from");
}

TEST(Utf8, AcceptsWellFormedText) {
  EXPECT_TRUE(dcbd::is_utf8(""));
  EXPECT_TRUE(dcbd::is_utf8("plain ascii \x7f"));
  EXPECT_TRUE(dcbd::is_utf8("\xc2\x80"));         // U+0080
  EXPECT_TRUE(dcbd::is_utf8("caf\xc3\xa9"));      // U+00E9
  EXPECT_TRUE(dcbd::is_utf8("\xdf\xbf"));         // U+07FF
  EXPECT_TRUE(dcbd::is_utf8("\xe0\xa0\x80"));     // U+0800
  EXPECT_TRUE(dcbd::is_utf8("\xe2\x82\xac"));     // U+20AC
  EXPECT_TRUE(dcbd::is_utf8("\xed\x9f\xbf"));     // U+D7FF
  EXPECT_TRUE(dcbd::is_utf8("\xee\x80\x80"));     // U+E000
  EXPECT_TRUE(dcbd::is_utf8("\xef\xbf\xbf"));     // U+FFFF
  EXPECT_TRUE(dcbd::is_utf8("\xf0\x90\x80\x80")); // U+10000
  EXPECT_TRUE(dcbd::is_utf8("\xf0\x9f\x98\x80")); // U+1F600
  EXPECT_TRUE(dcbd::is_utf8("\xf4\x8f\xbf\xbf")); // U+10FFFF
  EXPECT_TRUE(dcbd::is_utf8("a\xc3\xa9z\xe2\x82\xac\xf0\x9f\x98\x80!"));
}

TEST(Utf8, RejectsOverlongEncodings) {
  EXPECT_FALSE(dcbd::is_utf8("\xc0\x80"));         // U+0000 in 2 bytes
  EXPECT_FALSE(dcbd::is_utf8("\xc0\xaf"));         // '/'
  EXPECT_FALSE(dcbd::is_utf8("\xc1\xbf"));         // U+007F
  EXPECT_FALSE(dcbd::is_utf8("\xe0\x80\x80"));     // U+0000 in 3 bytes
  EXPECT_FALSE(dcbd::is_utf8("\xe0\x9f\xbf"));     // U+07FF in 3 bytes
  EXPECT_FALSE(dcbd::is_utf8("\xf0\x80\x80\x80")); // U+0000 in 4 bytes
  EXPECT_FALSE(dcbd::is_utf8("\xf0\x8f\xbf\xbf")); // U+FFFF in 4 bytes
}

TEST(Utf8, RejectsSurrogates) {
  EXPECT_FALSE(dcbd::is_utf8("\xed\xa0\x80")); // U+D800
  EXPECT_FALSE(dcbd::is_utf8("\xed\xaf\xbf")); // U+DBFF
  EXPECT_FALSE(dcbd::is_utf8("\xed\xb0\x80")); // U+DC00
  EXPECT_FALSE(dcbd::is_utf8("\xed\xbf\xbf")); // U+DFFF
  // A CESU-8 style surrogate pair for U+1F600.
  EXPECT_FALSE(dcbd::is_utf8("\xed\xa0\xbd\xed\xb8\x80"));
}

TEST(Utf8, RejectsTruncatedSequences) {
  EXPECT_FALSE(dcbd::is_utf8("\xc3"));
  EXPECT_FALSE(dcbd::is_utf8("\xe2\x82"));
  EXPECT_FALSE(dcbd::is_utf8("\xf0\x9f\x98"));
  EXPECT_FALSE(dcbd::is_utf8("abc\xe2"));
  EXPECT_FALSE(dcbd::is_utf8("\xe2\x82x")); // cut by an ASCII byte
  EXPECT_FALSE(dcbd::is_utf8("\xf0\x9f\x98\xc3\xa9"));
}

TEST(Utf8, RejectsCodePointsBeyondU10FFFF) {
  EXPECT_FALSE(dcbd::is_utf8("\xf4\x90\x80\x80")); // U+110000
  EXPECT_FALSE(dcbd::is_utf8("\xf7\xbf\xbf\xbf")); // U+1FFFFF
  EXPECT_FALSE(dcbd::is_utf8("\xf5\x80\x80\x80"));
  EXPECT_FALSE(dcbd::is_utf8("\xf8\x88\x80\x80\x80")); // old 5-byte form
  EXPECT_FALSE(dcbd::is_utf8("\xfc\x84\x80\x80\x80\x80"));
}

TEST(Utf8, RejectsStrayBytes) {
  EXPECT_FALSE(dcbd::is_utf8("\x80")); // lone continuation
  EXPECT_FALSE(dcbd::is_utf8("a\xbf"));
  EXPECT_FALSE(dcbd::is_utf8("\xc3\xa9\x80")); // one too many
  EXPECT_FALSE(dcbd::is_utf8("\xfe"));
  EXPECT_FALSE(dcbd::is_utf8("\xff"));
  EXPECT_FALSE(dcbd::is_utf8("\xc3\x28"));
}

TEST(Utf8, AgreesWithAReferenceDecoderOnAllShortSequences) {
  // Every 1- and 2-byte string, and every 3-byte string starting with a
  // lead byte, against a straightforward reference of the Unicode table
  // of well-formed byte sequences (Unicode 15, table 3-7).
  auto reference = [](std::string_view s) {
    std::size_t i = 0;
    auto at = [&](std::size_t k) {
      return static_cast<unsigned char>(s[k]);
    };
    auto in = [](unsigned char c, unsigned lo, unsigned hi) {
      return c >= lo && c <= hi;
    };
    while (i < s.size()) {
      auto c = at(i);
      std::size_t n;
      unsigned lo = 0x80;
      unsigned hi = 0xbf;
      if (c <= 0x7f) {
        ++i;
        continue;
      } else if (in(c, 0xc2, 0xdf)) {
        n = 1;
      } else if (c == 0xe0) {
        n = 2;
        lo = 0xa0;
      } else if (in(c, 0xe1, 0xec) || in(c, 0xee, 0xef)) {
        n = 2;
      } else if (c == 0xed) {
        n = 2;
        hi = 0x9f;
      } else if (c == 0xf0) {
        n = 3;
        lo = 0x90;
      } else if (in(c, 0xf1, 0xf3)) {
        n = 3;
      } else if (c == 0xf4) {
        n = 3;
        hi = 0x8f;
      } else {
        return false;
      }
      if (i + n >= s.size())
        return false;
      if (!in(at(i + 1), lo, hi))
        return false;
      for (std::size_t k = 2; k <= n; ++k)
        if (!in(at(i + k), 0x80, 0xbf))
          return false;
      i += n + 1;
    }
    return true;
  };
  std::size_t mismatches = 0;
  auto check = [&](const std::string& s) {
    if (dcbd::is_utf8(s) != reference(s) && ++mismatches <= 10) {
      std::string hex;
      for (unsigned char c : s)
        hex += std::to_string(c) + " ";
      ADD_FAILURE() << "is_utf8 disagrees on bytes " << hex;
    }
  };
  for (int a = 0; a < 256; ++a) {
    check(std::string(1, static_cast<char>(a)));
    for (int b = 0; b < 256; ++b) {
      std::string two{static_cast<char>(a), static_cast<char>(b)};
      check(two);
      if (a >= 0xc0)
        for (int c = 0x70; c < 0xd0; ++c)
          check(two + static_cast<char>(c));
    }
  }
  for (int a = 0xf0; a < 0xf8; ++a)
    for (int b = 0x80; b < 0xc0; ++b)
      for (int c : {0x7f, 0x80, 0xbf, 0xc0})
        for (int d : {0x7f, 0x80, 0xbf, 0xc0})
          check(std::string{static_cast<char>(a), static_cast<char>(b),
                            static_cast<char>(c), static_cast<char>(d)});
  EXPECT_EQ(mismatches, 0u);
}

} // namespace
