#include "store/matching.hpp"

#include <algorithm>

namespace dcbd {

bool matches(const query_item& item, const event& e) noexcept {
  if (!item.types.empty()
      && !std::binary_search(item.types.begin(), item.types.end(), e.type))
    return false;
  return std::includes(e.tags.begin(), e.tags.end(), item.tags.begin(),
                       item.tags.end());
}

bool matches(const query& q, const event& e) noexcept {
  if (q.matches_all())
    return true;
  return std::any_of(q.items.begin(), q.items.end(),
                     [&e](const query_item& item) {
                       return matches(item, e);
                     });
}

} // namespace dcbd
