#include "store/pg_group.hpp"

#include "store/error.hpp"
#include "store/event_store.hpp"
#include "store/matching.hpp"
#include "store/pg_internal.hpp"

#include <algorithm>
#include <map>

namespace dcbd::pg {

void array_builder::add(std::int64_t x) {
  sep();
  out_ += std::to_string(x);
}

void array_builder::add(std::string_view s) {
  sep();
  append_array_element(out_, s);
}

void array_builder::add_null() {
  sep();
  out_ += "NULL";
}

condition_kind kind_of(const validated_append& req) noexcept {
  if (!req.condition())
    return unconditional;
  return req.condition()->fail_if_events_match.matches_all() ? all : items;
}

// -- group_index --------------------------------------------------------------

void group_index::add(std::size_t r, const std::vector<event>& events) {
  for (std::size_t k = 0; k < events.size(); ++k) {
    const auto& e = events[k];
    event_ref ref{r, k, &e};
    by_type_[e.type].push_back(ref);
    for (const auto& t : e.tags)
      by_tag_[t].push_back(ref);
  }
}

std::vector<std::pair<std::size_t, std::size_t>>
group_index::last_matches(const query& q) const {
  std::map<std::size_t, std::size_t> last;
  for (const auto& item : q.items) {
    for (const auto* refs : candidates(item))
      for (const auto& ref : *refs)
        if (matches(item, *ref.e)) {
          auto [i, added] = last.emplace(ref.req, ref.idx);
          if (!added)
            i->second = std::max(i->second, ref.idx);
        }
  }
  return {last.begin(), last.end()};
}

// Every event an item can match is in the list of its rarest tag, or (for a
// type-only item) in the lists of its types.
std::vector<const group_index::refs*>
group_index::candidates(const query_item& item) const {
  std::vector<const refs*> out;
  if (!item.tags.empty()) {
    const refs* best = nullptr;
    for (const auto& t : item.tags) {
      auto i = by_tag_.find(t);
      if (i == by_tag_.end())
        return {}; // no event carries this tag
      if (!best || i->second.size() < best->size())
        best = &i->second;
    }
    out.push_back(best);
    return out;
  }
  for (const auto& t : item.types)
    if (auto i = by_type_.find(t); i != by_type_.end())
      out.push_back(&i->second);
  return out;
}

// -- flatten ------------------------------------------------------------------

group_arrays flatten(const std::vector<validated_append>& group,
                     const std::vector<std::size_t>& part,
                     std::span<const std::uint64_t> checked_through) {
  group_arrays a;
  group_index earlier;
  std::int64_t n_events = 0, n_tags = 0, n_types = 0, n_itags = 0;
  for (std::size_t r = 0; r < part.size(); ++r) {
    const auto& req = group[part[r]];
    const auto& events = req.events();
    auto kind = kind_of(req);
    auto req_no = static_cast<std::int64_t>(r + 1);
    a.req_kind.add(kind);
    std::uint64_t after = req.condition() ? req.condition()->after.value_or(0)
                                          : 0;
    // (A request known to fail is not sent: pg_event_store leaves it out.)
    if (kind == items && part[r] < checked_through.size()
        && checked_through[part[r]] != condition_fails)
      after = std::max(after, checked_through[part[r]]);
    a.req_after.add(static_cast<std::int64_t>(after));
    a.req_nev.add(static_cast<std::int64_t>(events.size()));
    n_events += static_cast<std::int64_t>(events.size());
    a.req_last_event.add(n_events);
    a.conditional = a.conditional || kind != unconditional;
    for (std::size_t i = 0; i < events.size(); ++i) {
      const auto& e = events[i];
      a.ev_req.add(req_no);
      a.ev_idx.add(static_cast<std::int64_t>(i));
      a.ev_type.add(e.type);
      a.ev_tag_off.add(n_tags + 1);
      a.ev_tag_cnt.add(static_cast<std::int64_t>(e.tags.size()));
      for (const auto& t : e.tags)
        a.tags.add(t);
      n_tags += static_cast<std::int64_t>(e.tags.size());
      a.ev_data_off.add(static_cast<std::int64_t>(a.data.size()) + 1);
      a.ev_data_len.add(static_cast<std::int64_t>(e.data.size()));
      a.data += e.data;
      a.ev_meta_off.add(static_cast<std::int64_t>(a.meta.size()) + 1);
      a.ev_meta_len.add(static_cast<std::int64_t>(e.metadata.size()));
      a.meta += e.metadata;
    }
    if (kind == items) {
      for (const auto& item : req.condition()->fail_if_events_match.items) {
        a.it_req.add(req_no);
        a.it_type_off.add(n_types + 1);
        a.it_type_cnt.add(static_cast<std::int64_t>(item.types.size()));
        for (const auto& t : item.types)
          a.it_types.add(t);
        n_types += static_cast<std::int64_t>(item.types.size());
        a.it_tag_off.add(n_itags + 1);
        a.it_tag_cnt.add(static_cast<std::int64_t>(item.tags.size()));
        for (const auto& t : item.tags)
          a.it_tags.add(t);
        n_itags += static_cast<std::int64_t>(item.tags.size());
      }
    }
    // In-group dependencies: the last event of each earlier request that
    // this request's condition matches. The server decides, knowing which
    // earlier requests were accepted and at which positions.
    if (kind == all) {
      for (std::size_t j = 0; j < r; ++j) {
        a.dep_req.add(req_no);
        a.dep_on.add(static_cast<std::int64_t>(j + 1));
        a.dep_off.add(
          static_cast<std::int64_t>(group[part[j]].events().size() - 1));
      }
    } else if (kind == items) {
      for (auto [j, k] :
           earlier.last_matches(req.condition()->fail_if_events_match)) {
        a.dep_req.add(req_no);
        a.dep_on.add(static_cast<std::int64_t>(j + 1));
        a.dep_off.add(static_cast<std::int64_t>(k));
      }
    }
    earlier.add(r, events);
    for (const auto& j : req.jobs()) {
      a.has_jobs = true;
      a.job_req.add(req_no);
      a.job_queue.add(j.queue);
      a.job_kind.add(j.kind);
      a.job_args.add(j.args);
      a.job_priority.add(static_cast<std::int64_t>(j.priority));
      if (j.run_at_us)
        a.job_run_at.add(*j.run_at_us);
      else
        a.job_run_at.add_null();
      a.job_delay.add(j.delay_ms);
      a.job_max_attempts.add(static_cast<std::int64_t>(j.max_attempts));
      if (j.unique_key.empty())
        a.job_unique_key.add_null();
      else
        a.job_unique_key.add(j.unique_key);
    }
  }
  return a;
}

std::vector<std::int64_t> parse_int_array(std::string_view s) {
  std::vector<std::int64_t> out;
  if (s.size() < 2 || s.front() != '{' || s.back() != '}')
    throw store_error{errc::internal, "unexpected array: " + std::string{s}};
  s = s.substr(1, s.size() - 2);
  while (!s.empty()) {
    auto comma = s.find(',');
    auto item = s.substr(0, comma);
    out.push_back(std::stoll(std::string{item}));
    if (comma == std::string_view::npos)
      break;
    s.remove_prefix(comma + 1);
  }
  return out;
}

} // namespace dcbd::pg
