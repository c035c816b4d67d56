#include "store/decision.hpp"

#include "store/error.hpp"
#include "store/matching.hpp"
#include "store/validation.hpp"

#include <algorithm>
#include <stdexcept>

namespace dcbd {

const std::any& decision_states::find(const std::string& id) const {
  for (auto& [key, state] : states_)
    if (key == id)
      return state;
  throw std::out_of_range("no projector state named '" + id + "'");
}

query union_query(const std::vector<projector>& projectors) {
  query result;
  for (auto& p : projectors) {
    if (p.query.matches_all())
      return query::all();
    for (auto& item : p.query.items)
      if (std::find(result.items.begin(), result.items.end(), item)
          == result.items.end())
        result.items.push_back(item);
  }
  return result;
}

void validate(std::vector<projector>& projectors, const limits& lim) {
  for (std::size_t i = 0; i < projectors.size(); ++i) {
    auto& p = projectors[i];
    auto field = "projectors[" + std::to_string(i) + "]";
    if (p.id.empty())
      throw store_error(errc::invalid_argument,
                        field + ".id: must not be empty");
    for (std::size_t j = 0; j < i; ++j)
      if (projectors[j].id == p.id)
        throw store_error(errc::invalid_argument,
                          field + ".id: duplicate id '" + p.id + "'");
    if (!p.apply)
      throw store_error(errc::invalid_argument, field + ".apply: must be set");
    validate(p.query, lim, field + ".query");
  }
}

decision project(event_store& store, const std::vector<projector>& projectors,
                 const stream_options& chunking) {
  decision result;
  if (projectors.empty()) {
    result.states = std::make_shared<const decision_states>();
    return result;
  }
  std::vector<std::any> states;
  states.reserve(projectors.size());
  for (auto& p : projectors)
    states.push_back(p.initial);
  auto q = union_query(projectors);
  auto stream = store.stream(q, {}, chunking);
  std::vector<sequenced_event> chunk;
  while (stream->next(chunk)) {
    for (auto& e : chunk) {
      for (std::size_t i = 0; i < projectors.size(); ++i) {
        auto& p = projectors[i];
        if (!matches(p.query, e.event))
          continue;
        try {
          p.apply(states[i], e);
        } catch (const std::exception& ex) {
          throw store_error(errc::internal,
                            "projector '" + p.id + "' threw: " + ex.what());
        } catch (...) {
          throw store_error(errc::internal, "projector '" + p.id + "' threw");
        }
      }
    }
    result.events_read += chunk.size();
  }
  result.head = stream->head();
  auto out = std::make_shared<decision_states>();
  for (std::size_t i = 0; i < projectors.size(); ++i)
    out->add(projectors[i].id, std::move(states[i]));
  result.states = std::move(out);
  result.condition = append_condition{std::move(q), result.head};
  return result;
}

} // namespace dcbd
