// The closed set of store errors.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace dcbd {

/// What went wrong, by what the caller should do about it. The numbers are
/// part of the wire format: never reuse or renumber them.
enum class errc : std::uint8_t {
  /// No error.
  none = 0,
  /// The request is malformed; fix it, retrying will not help. Nothing was
  /// written.
  invalid_argument = 1,
  /// An event matching the condition exists after `after`; rebuild the
  /// decision model and decide again. Nothing was written.
  append_condition_failed = 2,
  /// Too much work queued; back off and retry. Nothing was written.
  overloaded = 3,
  /// The database is unreachable or the connection broke; retry later.
  /// Nothing of the failed request was written.
  unavailable = 4,
  /// A bug or an unexpected database error.
  internal = 5,
};

/// Returns the stable lower-case name of `code`, e.g. "invalid_argument".
std::string_view to_string(errc code) noexcept;

/// The exception the store layer throws for every expected failure.
class store_error : public std::runtime_error {
public:
  store_error(errc code, const std::string& message)
    : std::runtime_error(message)
    , code_(code) {
    // nop
  }

  /// The kind of failure.
  errc code() const noexcept {
    return code_;
  }

private:
  errc code_;
};

} // namespace dcbd
