#include "store/event_store.hpp"

#include <algorithm>

namespace dcbd {

position_range range_of(const read_options& options) noexcept {
  position_range r;
  if (options.backwards)
    r.hi = options.from.value_or(r.hi);
  else
    r.lo = std::max<std::uint64_t>(options.from.value_or(1), 1);
  return r;
}

std::uint64_t event_store::append(std::vector<event> events,
                                  std::optional<append_condition> condition) {
  std::vector<append_request> group(1);
  group[0].events = std::move(events);
  group[0].condition = std::move(condition);
  auto results = append_group(std::move(group));
  auto& res = results.at(0);
  if (!res.ok())
    throw store_error{res.code, res.message};
  return res.last_position;
}

} // namespace dcbd
