// Where a chunked read stands; shared by the stores' streams.
#pragma once

#include "store/event_store.hpp"
#include "store/model.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>

namespace dcbd {

/// The positions [lo, hi] a read still has to scan and how many events it
/// may still return. Forward reads scan up from `lo`, backward reads down
/// from `hi`; `next()` is the next position to look at.
class read_cursor {
public:
  explicit read_cursor(const read_options& options)
    : backwards_(options.backwards)
    , remaining_(
        options.limit.value_or(std::numeric_limits<std::uint64_t>::max())) {
    auto range = range_of(options);
    lo_ = range.lo;
    hi_ = range.hi;
  }

  /// Caps the range at a snapshot's head.
  void cap(std::uint64_t head) noexcept {
    hi_ = std::min(hi_, head);
  }

  /// Whether the read is over: nothing left to scan or the limit reached.
  bool done() const noexcept {
    return closed_ || remaining_ == 0 || lo_ > hi_;
  }

  /// Ends the read early (e.g. a page came back empty).
  void close() noexcept {
    closed_ = true;
  }

  /// The next position to scan.
  std::uint64_t next() const noexcept {
    return backwards_ ? hi_ : lo_;
  }

  /// Moves the scan past `position`, having returned `taken` more events.
  void passed(std::uint64_t position, std::uint64_t taken = 0) noexcept {
    if (backwards_)
      hi_ = position - 1; // lo_ >= 1, so passing 1 ends the read
    else
      lo_ = position + 1;
    remaining_ -= std::min(remaining_, taken);
  }

  bool backwards() const noexcept {
    return backwards_;
  }
  std::uint64_t lo() const noexcept {
    return lo_;
  }
  std::uint64_t hi() const noexcept {
    return hi_;
  }
  std::uint64_t remaining() const noexcept {
    return remaining_;
  }

private:
  bool backwards_;
  bool closed_ = false;
  std::uint64_t remaining_;
  std::uint64_t lo_ = 1;
  std::uint64_t hi_ = std::numeric_limits<std::uint64_t>::max();
};

} // namespace dcbd
