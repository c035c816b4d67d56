#include "store/event_store.hpp"

namespace dcbd {

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
