#include "store/event_store.hpp"

#include <algorithm>

namespace dcbd {

position_range range_of(const read_options& options) noexcept {
  position_range r;
  if (options.backwards)
    r.hi = options.from.value_or(r.hi);
  else {
    r.lo = std::max<std::uint64_t>(options.from.value_or(1), 1);
    r.hi = options.until.value_or(r.hi);
  }
  return r;
}

std::uint64_t event_store::append(std::vector<event> events,
                                  std::optional<append_condition> condition) {
  std::vector<validated_append> group;
  group.push_back(validate_append(
    append_request{std::move(events), std::move(condition)}, limits_));
  auto results = append_validated(group);
  auto& res = results.at(0);
  if (!res.ok())
    throw store_error{res.code, res.message};
  return res.last_position;
}

std::vector<append_result>
event_store::append_group(std::vector<append_request> requests) {
  std::vector<append_result> results(requests.size());
  std::vector<validated_append> valid;
  std::vector<std::size_t> index;
  valid.reserve(requests.size());
  index.reserve(requests.size());
  for (std::size_t i = 0; i < requests.size(); ++i) {
    try {
      valid.push_back(validate_append(std::move(requests[i]), limits_));
      index.push_back(i);
    } catch (const store_error& e) {
      results[i].code = e.code();
      results[i].message = e.what();
    }
  }
  if (valid.empty())
    return results;
  auto committed = append_validated(valid);
  if (committed.size() != valid.size())
    throw store_error{errc::internal,
                      "the store returned " + std::to_string(committed.size())
                        + " results for " + std::to_string(valid.size())
                        + " requests"};
  for (std::size_t k = 0; k < valid.size(); ++k)
    results[index[k]] = std::move(committed[k]);
  return results;
}

} // namespace dcbd
