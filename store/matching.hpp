// Query matching: the one definition of which events a query selects.
#pragma once

#include "store/model.hpp"

namespace dcbd {

/// Returns whether `item` matches `e`. Expects both normalized (tags and
/// types sorted and de-duplicated; see `normalize`).
bool matches(const query_item& item, const event& e) noexcept;

/// Returns whether `q` matches `e`: any item matches, or `q` has no items.
/// Expects both normalized.
bool matches(const query& q, const event& e) noexcept;

} // namespace dcbd
