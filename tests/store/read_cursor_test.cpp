// The read cursor both stores' streams share.
#include "store/read_cursor.hpp"

#include <gtest/gtest.h>

namespace dcbd {
namespace {

TEST(ReadCursor, ForwardScanStartsAtFromAndStopsAtTheCappedHead) {
  read_cursor c{read_options{3, std::nullopt, false}};
  c.cap(5);
  EXPECT_EQ(c.next(), 3u);
  c.passed(3, 1);
  EXPECT_EQ(c.next(), 4u);
  c.passed(5);
  EXPECT_TRUE(c.done());
}

TEST(ReadCursor, BackwardScanEndsAfterPositionOne) {
  read_cursor c{read_options{std::nullopt, std::nullopt, true}};
  c.cap(2);
  EXPECT_EQ(c.next(), 2u);
  c.passed(2, 1);
  EXPECT_FALSE(c.done());
  EXPECT_EQ(c.next(), 1u);
  c.passed(1, 1);
  EXPECT_TRUE(c.done());
  read_cursor from{read_options{7, std::nullopt, true}};
  from.cap(100);
  EXPECT_EQ(from.next(), 7u);
}

TEST(ReadCursor, LimitCountsOnlyReturnedEvents) {
  read_cursor c{read_options{std::nullopt, 2, false}};
  c.cap(10);
  c.passed(1);    // skipped: no match
  c.passed(2, 1); // returned
  EXPECT_EQ(c.remaining(), 1u);
  EXPECT_FALSE(c.done());
  c.passed(4, 1);
  EXPECT_EQ(c.remaining(), 0u);
  EXPECT_TRUE(c.done());
}

TEST(ReadCursor, EmptyRangeAndCloseEndTheRead) {
  read_cursor empty{read_options{5, std::nullopt, false}};
  empty.cap(4);
  EXPECT_TRUE(empty.done());
  read_cursor zero{read_options{std::nullopt, 0, false}};
  EXPECT_TRUE(zero.done());
  read_cursor open{read_options{}};
  open.cap(3);
  EXPECT_FALSE(open.done());
  open.close();
  EXPECT_TRUE(open.done());
}

} // namespace
} // namespace dcbd
