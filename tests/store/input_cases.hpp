// Test support for the bad-input suites (bad_input_test.cpp over both
// stores, validation_test.cpp on validate() directly): constants, event
// builders and the check that a call is refused naming a field.
#pragma once

#include "store/error.hpp"
#include "store/model.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <exception>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dcbd::test {

inline constexpr std::uint64_t int64_max
  = std::numeric_limits<std::int64_t>::max();
inline constexpr std::size_t mib = std::size_t{1} << 20;

// Returns whether `text` contains `part`.
inline bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

// Runs `f`; checks it throws `store_error(invalid_argument)` whose message
// names `field`.
template <class F>
inline void expect_invalid(F&& f, std::string_view field) {
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

inline event make_event(std::string type, std::vector<std::string> tags = {},
                        std::string data = "d") {
  return event{std::move(type), std::move(tags), std::move(data), {}};
}

// A string of `n` bytes of `c`.
inline std::string bytes_of(std::size_t n, char c = 'x') {
  return std::string(n, c);
}

// `n` distinct tags.
inline std::vector<std::string> many_tags(std::size_t n) {
  std::vector<std::string> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i)
    out.push_back("tag:" + std::to_string(i));
  return out;
}

inline const std::string nul_string{"a\0b", 3};
// 0xc3 must be followed by a continuation byte; '(' is none.
inline const std::string bad_utf8{"ab\xc3(", 4};

// A condition whose only item is `item`.
inline append_condition condition_with(query_item item) {
  return append_condition{query{{std::move(item)}}, std::nullopt};
}

} // namespace dcbd::test
