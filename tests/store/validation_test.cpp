// Bad input: every invalid case of DESIGN §2 is rejected with
// `invalid_argument`, with a message naming the field, and nothing is
// written. Runs over both stores; also unit tests of `validate`/`is_utf8`.
#include "store/validation.hpp"

#include "store/error.hpp"
#include "store/event_store.hpp"
#include "store/model.hpp"
#include "tests/support/pg_fixture.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <exception>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

using dcbd::append_condition;
using dcbd::append_request;
using dcbd::event;
using dcbd::query;
using dcbd::query_item;
using dcbd::read_options;
using dcbd::store_error;

constexpr std::uint64_t int64_max = std::numeric_limits<std::int64_t>::max();
constexpr std::size_t mib = std::size_t{1} << 20;

// Returns whether `text` contains `part`.
bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

// Runs `f`; checks it throws `store_error(invalid_argument)` whose message
// names `field`.
template <class F>
void expect_invalid(F&& f, std::string_view field) {
  try {
    f();
    ADD_FAILURE() << "accepted; expected invalid_argument naming " << field;
  } catch (const store_error& e) {
    EXPECT_EQ(dcbd::to_string(e.code()), "invalid_argument") << e.what();
    EXPECT_TRUE(contains(e.what(), field))
      << "message \"" << e.what() << "\" does not name " << field;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "unexpected exception (not store_error): " << e.what();
  }
}

event make_event(std::string type, std::vector<std::string> tags = {},
                 std::string data = "d") {
  return event{std::move(type), std::move(tags), std::move(data), {}};
}

// A string of `n` bytes of `c`.
std::string bytes_of(std::size_t n, char c = 'x') {
  return std::string(n, c);
}

// `n` distinct tags.
std::vector<std::string> many_tags(std::size_t n) {
  std::vector<std::string> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i)
    out.push_back("tag:" + std::to_string(i));
  return out;
}

const std::string nul_string{"a\0b", 3};
// 0xc3 must be followed by a continuation byte; '(' is none.
const std::string bad_utf8{"ab\xc3(", 4};

// A condition whose only item is `item`.
append_condition condition_with(query_item item) {
  return append_condition{query{{std::move(item)}}, std::nullopt};
}

// -- typed tests over both stores -------------------------------------------

template <class Factory>
class BadInput : public dcbd::test::StoreTest<Factory> {
protected:
  void SetUp() override {
    dcbd::test::StoreTest<Factory>::SetUp();
    // One valid event, so that "nothing was written" is observable.
    ASSERT_EQ(store().append({make_event("Seed", {"k:v"})}), 1u);
  }

  dcbd::event_store& store() {
    return *this->store_;
  }

  // Checks that the store still holds exactly the seed event.
  void expect_unchanged() {
    EXPECT_EQ(store().head(), 1u);
    auto all = store().read(query::all());
    EXPECT_EQ(all.head, 1u);
    ASSERT_EQ(all.events.size(), 1u);
    EXPECT_EQ(all.events[0].event.type, "Seed");
  }

  // Checks that appending `events` (with `condition`) is rejected naming
  // `field`, both by `append` and by `append_group` (where a valid request
  // of the same group still succeeds), and that only the valid request was
  // written.
  void expect_rejected(std::vector<event> events,
                       std::optional<append_condition> condition,
                       std::string_view field) {
    {
      SCOPED_TRACE("append");
      expect_invalid(
        [&] {
          store().append(events, condition);
        },
        field);
      expect_unchanged();
    }
    if (this->HasFailure())
      return;
    SCOPED_TRACE("append_group");
    std::vector<append_request> group;
    group.push_back(append_request{{make_event("Before")}, std::nullopt});
    group.push_back(append_request{std::move(events), std::move(condition)});
    group.push_back(append_request{{make_event("After1"), make_event("After2")},
                                   append_condition{query::all(), 2}});
    auto results = store().append_group(std::move(group));
    ASSERT_EQ(results.size(), 3u);
    EXPECT_EQ(dcbd::to_string(results[0].code), "none") << results[0].message;
    EXPECT_EQ(results[0].last_position, 2u);
    EXPECT_EQ(dcbd::to_string(results[1].code), "invalid_argument")
      << results[1].message;
    EXPECT_FALSE(results[1].ok());
    EXPECT_EQ(results[1].last_position, 0u);
    EXPECT_TRUE(contains(results[1].message, field))
      << "message \"" << results[1].message << "\" does not name " << field;
    // The invalid request wrote nothing, so the third one's condition (no
    // event after 2) holds.
    EXPECT_EQ(dcbd::to_string(results[2].code), "none") << results[2].message;
    EXPECT_EQ(results[2].last_position, 4u);
    auto all = store().read(query::all());
    EXPECT_EQ(all.head, 4u);
    std::vector<std::string> types;
    for (const auto& e : all.events)
      types.push_back(e.event.type);
    EXPECT_EQ(types,
              (std::vector<std::string>{"Seed", "Before", "After1", "After2"}));
  }

  // Checks that an event list is accepted and round-trips.
  void expect_accepted(std::vector<event> events) {
    auto expected = events;
    auto before = store().head();
    std::uint64_t last = 0;
    ASSERT_NO_THROW(last = store().append(events));
    EXPECT_EQ(last, before + expected.size());
    auto back = store().read(query::all(), read_options{before + 1, {}, false});
    ASSERT_EQ(back.events.size(), expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
      dcbd::normalize(expected[i]);
      EXPECT_EQ(back.events[i].event, expected[i]) << "event " << i;
    }
  }

  // Checks that reading and streaming with `q` and `opts` are rejected
  // naming `field`.
  void expect_read_rejected(const query& q, const read_options& opts,
                            std::string_view field) {
    {
      SCOPED_TRACE("read");
      expect_invalid(
        [&] {
          store().read(q, opts);
        },
        field);
    }
    {
      SCOPED_TRACE("stream");
      expect_invalid(
        [&] {
          // Validation may happen when the stream opens or on first use.
          auto s = store().stream(q, opts, {});
          std::vector<dcbd::sequenced_event> chunk;
          while (s->next(chunk)) {
            // drain
          }
        },
        field);
    }
    expect_unchanged();
  }
};

TYPED_TEST_SUITE(BadInput, dcbd::test::store_kinds,
                 dcbd::test::store_kind_names);

TYPED_TEST(BadInput, EmptyEventList) {
  this->expect_rejected({}, std::nullopt, "events");
}

TYPED_TEST(BadInput, EmptyEventListWithCondition) {
  this->expect_rejected({}, append_condition{query::all(), 0}, "events");
}

TYPED_TEST(BadInput, TooManyEvents) {
  std::vector<event> events(dcbd::limits{}.max_events_per_append + 1,
                            make_event("T"));
  this->expect_rejected(std::move(events), std::nullopt, "events");
}

TYPED_TEST(BadInput, EmptyType) {
  this->expect_rejected({make_event("A"), make_event("")}, std::nullopt,
                        "events[1].type");
}

TYPED_TEST(BadInput, TypeOf256Bytes) {
  this->expect_rejected({make_event("A"), make_event(bytes_of(256))},
                        std::nullopt, "events[1].type");
}

TYPED_TEST(BadInput, TypeOf255BytesIsAccepted) {
  this->expect_accepted({make_event(bytes_of(255, 't'))});
  // 255 bytes of multi-byte UTF-8 (85 three-byte characters).
  std::string euros;
  for (int i = 0; i < 85; ++i)
    euros += "\xe2\x82\xac";
  ASSERT_EQ(euros.size(), 255u);
  this->expect_accepted({make_event(euros)});
}

TYPED_TEST(BadInput, TypeWithNul) {
  this->expect_rejected({make_event(nul_string)}, std::nullopt,
                        "events[0].type");
}

TYPED_TEST(BadInput, TypeWithInvalidUtf8) {
  this->expect_rejected({make_event("A"), make_event("B"),
                         make_event(bad_utf8)},
                        std::nullopt, "events[2].type");
}

TYPED_TEST(BadInput, TypeWithSurrogate) {
  this->expect_rejected({make_event("\xed\xa0\x80")}, std::nullopt,
                        "events[0].type");
}

TYPED_TEST(BadInput, EmptyTag) {
  // The index is the tag's place in the request, before tags are sorted
  // (sorted, "" would come first).
  this->expect_rejected({make_event("A", {"b", "c", ""})}, std::nullopt,
                        "events[0].tags[2]");
}

TYPED_TEST(BadInput, TagOf256Bytes) {
  this->expect_rejected({make_event("A", {"k:v"}),
                         make_event("B", {"x", bytes_of(256)})},
                        std::nullopt, "events[1].tags[1]");
}

TYPED_TEST(BadInput, TagOf255BytesIsAccepted) {
  this->expect_accepted({make_event("A", {bytes_of(255, 'g'), "k:v"})});
}

TYPED_TEST(BadInput, TagWithNul) {
  this->expect_rejected({make_event("A", {"k:1", "k:2", nul_string})},
                        std::nullopt, "events[0].tags[2]");
}

TYPED_TEST(BadInput, TagWithInvalidUtf8) {
  this->expect_rejected({make_event("A", {"z", bad_utf8})}, std::nullopt,
                        "events[0].tags[1]");
}

TYPED_TEST(BadInput, TagWithOverlongEncoding) {
  // "\xc0\xaf" is an overlong '/'.
  this->expect_rejected({make_event("A", {"a\xc0\xaf"})}, std::nullopt,
                        "events[0].tags[0]");
}

TYPED_TEST(BadInput, PayloadOverOneMebibyte) {
  // Neither field alone exceeds the limit; their sum does.
  event e = make_event("Big");
  e.data = bytes_of(mib / 2, '\xff');
  e.metadata = bytes_of(mib / 2 + 1, '\0');
  this->expect_rejected({make_event("Small"), std::move(e)}, std::nullopt,
                        "events[1].data");
}

TYPED_TEST(BadInput, DataOverOneMebibyte) {
  event e = make_event("Big");
  e.data = bytes_of(mib + 1);
  this->expect_rejected({std::move(e)}, std::nullopt, "events[0].data");
}

TYPED_TEST(BadInput, PayloadOfExactlyOneMebibyteIsAccepted) {
  event e = make_event("Big", {"k:v"});
  e.data = bytes_of(mib - 100, '\0');
  e.data[1] = '\xff';
  e.metadata = bytes_of(100, '\x01');
  this->expect_accepted({std::move(e)});
  event f = make_event("Big");
  f.data = bytes_of(mib, 'd');
  f.metadata.clear();
  this->expect_accepted({std::move(f)});
}

TYPED_TEST(BadInput, MoreThanOneThousandTags) {
  this->expect_rejected({make_event("A", many_tags(1001))}, std::nullopt,
                        "events[0].tags");
}

TYPED_TEST(BadInput, OneThousandTagsAreAccepted) {
  this->expect_accepted({make_event("A", many_tags(1000))});
}

TYPED_TEST(BadInput, ConditionItemWithoutTypesOrTags) {
  this->expect_rejected({make_event("A")}, condition_with(query_item{}),
                        "condition.fail_if_events_match.items[0]");
}

TYPED_TEST(BadInput, ConditionSecondItemWithoutTypesOrTags) {
  append_condition cond{query{{query_item{{"A"}, {}}, query_item{}}}, 0};
  this->expect_rejected({make_event("A")}, cond,
                        "condition.fail_if_events_match.items[1]");
}

TYPED_TEST(BadInput, ConditionItemWithEmptyType) {
  this->expect_rejected({make_event("A")},
                        condition_with(query_item{{"A", ""}, {}}),
                        "condition.fail_if_events_match.items[0].types[1]");
}

TYPED_TEST(BadInput, ConditionItemWithEmptyTag) {
  this->expect_rejected({make_event("A")},
                        condition_with(query_item{{}, {"k:v", ""}}),
                        "condition.fail_if_events_match.items[0].tags[1]");
}

TYPED_TEST(BadInput, ConditionItemWithNulType) {
  this->expect_rejected({make_event("A")},
                        condition_with(query_item{{nul_string}, {}}),
                        "condition.fail_if_events_match.items[0].types[0]");
}

TYPED_TEST(BadInput, ConditionItemWithInvalidUtf8Tag) {
  this->expect_rejected({make_event("A")},
                        condition_with(query_item{{}, {bad_utf8}}),
                        "condition.fail_if_events_match.items[0].tags[0]");
}

TYPED_TEST(BadInput, ConditionItemWithOversizedType) {
  this->expect_rejected({make_event("A")},
                        condition_with(query_item{{bytes_of(256)}, {}}),
                        "condition.fail_if_events_match.items[0].types[0]");
}

TYPED_TEST(BadInput, ConditionWithTooManyItems) {
  query q;
  for (int i = 0; i < 1001; ++i)
    q.items.push_back(query_item{{"T" + std::to_string(i)}, {}});
  this->expect_rejected({make_event("A")}, append_condition{q, {}},
                        "condition.fail_if_events_match.items");
}

TYPED_TEST(BadInput, ConditionAfterBeyondInt64Max) {
  this->expect_rejected({make_event("A")},
                        append_condition{query::all(), int64_max + 1},
                        "condition.after");
}

TYPED_TEST(BadInput, ConditionAfterUint64Max) {
  this->expect_rejected(
    {make_event("A")},
    append_condition{query::all(), std::numeric_limits<std::uint64_t>::max()},
    "condition.after");
}

TYPED_TEST(BadInput, ConditionAfterOfInt64MaxIsAccepted) {
  // Nothing can come after the largest position, so the condition holds.
  EXPECT_EQ(this->store().append({make_event("A")},
                                 append_condition{query::all(), int64_max}),
            2u);
}

TYPED_TEST(BadInput, ReadWithItemWithoutTypesOrTags) {
  this->expect_read_rejected(query{{query_item{{"A"}, {}}, query_item{}}}, {},
                             "query.items[1]");
}

TYPED_TEST(BadInput, ReadWithEmptyType) {
  this->expect_read_rejected(query{{query_item{{""}, {}}}}, {},
                             "query.items[0].types[0]");
}

TYPED_TEST(BadInput, ReadWithEmptyTag) {
  this->expect_read_rejected(query{{query_item{{"A"}, {"a", ""}}}}, {},
                             "query.items[0].tags[1]");
}

TYPED_TEST(BadInput, ReadWithNulTag) {
  this->expect_read_rejected(query{{query_item{{}, {nul_string}}}}, {},
                             "query.items[0].tags[0]");
}

TYPED_TEST(BadInput, ReadWithInvalidUtf8Type) {
  this->expect_read_rejected(query{{query_item{{bad_utf8}, {}}}}, {},
                             "query.items[0].types[0]");
}

TYPED_TEST(BadInput, ReadWithTooManyItemValues) {
  query_item item;
  item.types = many_tags(600);
  item.tags = many_tags(401);
  this->expect_read_rejected(query{{item}}, {}, "query.items[0]");
}

TYPED_TEST(BadInput, ReadFromBeyondInt64Max) {
  this->expect_read_rejected(
    query::all(), read_options{int64_max + 1, {}, false}, "options.from");
  this->expect_read_rejected(
    query::all(), read_options{int64_max + 1, {}, true}, "options.from");
  this->expect_read_rejected(
    query{{query_item{{"Seed"}, {}}}},
    read_options{std::numeric_limits<std::uint64_t>::max(), 1, false},
    "options.from");
}

TYPED_TEST(BadInput, ReadFromInt64MaxIsAccepted) {
  auto fwd = this->store().read(query::all(),
                                read_options{int64_max, {}, false});
  EXPECT_TRUE(fwd.events.empty());
  EXPECT_EQ(fwd.head, 1u);
  auto bwd = this->store().read(query::all(),
                                read_options{int64_max, {}, true});
  ASSERT_EQ(bwd.events.size(), 1u);
  EXPECT_EQ(bwd.events[0].position, 1u);
}

TYPED_TEST(BadInput, GroupOfOnlyInvalidRequestsWritesNothing) {
  std::vector<append_request> group;
  group.push_back(append_request{{}, std::nullopt});
  group.push_back(append_request{{make_event("")}, std::nullopt});
  group.push_back(
    append_request{{make_event("A")}, condition_with(query_item{})});
  auto results = this->store().append_group(std::move(group));
  ASSERT_EQ(results.size(), 3u);
  const char* fields[] = {"events", "events[0].type",
                          "condition.fail_if_events_match.items[0]"};
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(dcbd::to_string(results[i].code), "invalid_argument") << i;
    EXPECT_EQ(results[i].last_position, 0u) << i;
    EXPECT_TRUE(contains(results[i].message, fields[i]))
      << i << ": " << results[i].message;
  }
  this->expect_unchanged();
}

TYPED_TEST(BadInput, StoreStaysUsableAfterRejections) {
  for (int i = 0; i < 3; ++i)
    expect_invalid(
      [&] {
        this->store().append({make_event("")});
      },
      "events[0].type");
  EXPECT_EQ(this->store().append({make_event("Next")}), 2u);
  EXPECT_EQ(this->store().head(), 2u);
}

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
