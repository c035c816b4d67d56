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

decision_fold::decision_fold(const std::vector<projector>& projectors)
  : projectors_(projectors) {
  states_.reserve(projectors_.size());
  for (auto& p : projectors_)
    states_.push_back(p.initial);
}

void decision_fold::apply(const sequenced_event& e) {
  ++events_;
  for (std::size_t i = 0; i < projectors_.size(); ++i) {
    auto& p = projectors_[i];
    if (!matches(p.query, e.event))
      continue;
    try {
      p.apply(states_[i], e);
    } catch (const std::exception& ex) {
      throw store_error(errc::internal,
                        "projector '" + p.id + "' threw: " + ex.what());
    } catch (...) {
      throw store_error(errc::internal, "projector '" + p.id + "' threw");
    }
  }
}

decision decision_fold::finish(query q, std::uint64_t head) {
  decision result;
  result.head = head;
  result.events_read = events_;
  auto out = std::make_shared<decision_states>();
  for (std::size_t i = 0; i < projectors_.size(); ++i)
    out->add(projectors_[i].id, std::move(states_[i]));
  result.states = std::move(out);
  if (!projectors_.empty())
    result.condition = append_condition{std::move(q), head};
  return result;
}

decision project(event_store& store, const std::vector<projector>& projectors,
                 const stream_options& chunking) {
  if (projectors.empty())
    return decision_fold{projectors}.finish({}, 0);
  decision_fold fold{projectors};
  auto q = union_query(projectors);
  auto stream = store.stream(q, {}, chunking);
  std::vector<sequenced_event> chunk;
  while (stream->next(chunk))
    for (auto& e : chunk)
      fold.apply(e);
  return fold.finish(std::move(q), stream->head());
}

} // namespace dcbd
