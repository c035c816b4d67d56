#include "store/event_cache.hpp"

#include "store/matching.hpp"

#include <algorithm>
#include <limits>

namespace dcbd {

namespace {

// Heap bytes of a string beyond the object itself (short strings live
// inside it), with the allocator's per-block overhead.
std::size_t heap_of(const std::string& s) noexcept {
  return s.size() > 15 ? s.size() + 1 + 16 : 0;
}

// What one distinct index key costs: the hash node, the key and the
// vector's own block.
std::size_t key_cost(const std::string& key) noexcept {
  return 128 + heap_of(key);
}

// An index entry, with the vectors' growth slack.
constexpr std::size_t entry_cost = 2 * sizeof(std::uint64_t);

// The share of the bound the summary below `lo` takes.
constexpr std::size_t summary_share = 32;

// splitmix64's finalizer: a second, independent-enough hash from the first.
std::uint64_t remix(std::uint64_t x) noexcept {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

} // namespace

const char* to_string(cache_route r) noexcept {
  switch (r) {
    case cache_route::read:
      return "read";
    case cache_route::stream:
      return "stream";
    case cache_route::project:
      return "project";
  }
  return "read";
}

const char* to_string(cache_outcome o) noexcept {
  switch (o) {
    case cache_outcome::hit:
      return "hit";
    case cache_outcome::partial:
      return "partial";
    case cache_outcome::miss:
      return "miss";
  }
  return "miss";
}

// -- positions ----------------------------------------------------------------

void event_cache::positions::push_front(std::uint64_t p) {
  if (begin == 0) {
    auto n = size();
    auto gap = std::max<std::size_t>(n, 8);
    std::vector<std::uint64_t> grown(gap + n);
    std::copy(v.begin(), v.end(),
              grown.begin() + static_cast<std::ptrdiff_t>(gap));
    v.swap(grown);
    begin = gap;
  }
  v[--begin] = p;
}

void event_cache::positions::pop_front() {
  ++begin;
  if (begin >= 64 && begin * 2 >= v.size()) {
    v.erase(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(begin));
    begin = 0;
  }
}

// -- summary ------------------------------------------------------------------

event_cache::summary::summary(std::size_t bytes) {
  // A power of two of bits (at least 4096), allocated on the first event.
  std::uint64_t bits = 4096;
  while (bits * 2 <= std::uint64_t{bytes} * 8
         && bits < (std::uint64_t{1} << 32))
    bits *= 2;
  mask_ = bits - 1;
}

void event_cache::summary::add(const event& e) {
  if (bits_.empty())
    bits_.assign((mask_ + 1) / 64, 0);
  if (!types_full_ && types_.insert(e.type).second) {
    type_bytes_ += key_cost(e.type);
    if (types_.size() > max_types) {
      types_full_ = true;
      types_.clear();
      type_bytes_ = 0;
    }
  }
  for (auto& t : e.tags) {
    auto h = std::hash<std::string>{}(t);
    auto step = remix(h) | 1;
    for (int i = 0; i < hashes; ++i, h += step)
      bits_[(h & mask_) >> 6] |= std::uint64_t{1} << (h & 63);
  }
}

bool event_cache::summary::maybe_tag(const std::string& tag) const {
  if (bits_.empty())
    return false;
  auto h = std::hash<std::string>{}(tag);
  auto step = remix(h) | 1;
  for (int i = 0; i < hashes; ++i, h += step)
    if (!(bits_[(h & mask_) >> 6] & (std::uint64_t{1} << (h & 63))))
      return false;
  return true;
}

bool event_cache::summary::excludes(const query& q) const {
  if (q.matches_all())
    return false;
  // An event matches an item when its type is one of the item's (if it
  // names any) and it carries all of the item's tags.
  return std::all_of(q.items.begin(), q.items.end(), [this](auto& item) {
    auto no_type = !item.types.empty() && !types_full_
                   && std::none_of(item.types.begin(), item.types.end(),
                                   [this](auto& t) {
                                     return types_.count(t) > 0;
                                   });
    return no_type
           || std::any_of(item.tags.begin(), item.tags.end(), [this](auto& t) {
                return !maybe_tag(t);
              });
  });
}

void event_cache::summary::clear() {
  bits_.clear();
  bits_.shrink_to_fit();
  types_.clear();
  type_bytes_ = 0;
  types_full_ = false;
}

std::size_t event_cache::summary::bytes() const noexcept {
  return bits_.size() * sizeof(std::uint64_t) + type_bytes_;
}

// -- event_cache --------------------------------------------------------------

event_cache::event_cache(std::size_t max_bytes)
  : max_bytes_(max_bytes)
  , below_(max_bytes / summary_share) {
  // nop
}

std::size_t event_cache::footprint(const sequenced_event& e) noexcept {
  auto& ev = e.event;
  auto n = sizeof(sequenced_event) + heap_of(ev.type) + heap_of(ev.data)
           + heap_of(ev.metadata) + entry_cost;
  if (!ev.tags.empty())
    n += ev.tags.size() * (sizeof(std::string) + entry_cost) + 16;
  for (auto& t : ev.tags)
    n += heap_of(t);
  return n;
}

void event_cache::index_back(index& idx, const std::string& key,
                             std::uint64_t p) {
  auto [i, fresh] = idx.try_emplace(key);
  if (fresh)
    bytes_ += key_cost(key);
  i->second.v.push_back(p);
}

void event_cache::index_front(index& idx, const std::string& key,
                              std::uint64_t p) {
  auto [i, fresh] = idx.try_emplace(key);
  if (fresh)
    bytes_ += key_cost(key);
  i->second.push_front(p);
}

void event_cache::unindex_front(index& idx, const std::string& key) {
  auto i = idx.find(key);
  if (i == idx.end())
    return;
  i->second.pop_front();
  if (i->second.size() == 0) {
    bytes_ -= std::min(bytes_, key_cost(key));
    idx.erase(i);
  }
}

void event_cache::push_back(const sequenced_event& e) {
  events_.push_back(e);
  bytes_ += footprint(e);
  index_back(by_type_, e.event.type, e.position);
  for (auto& t : e.event.tags)
    index_back(by_tag_, t, e.position);
}

void event_cache::push_front(const sequenced_event& e) {
  events_.push_front(e);
  bytes_ += footprint(e);
  index_front(by_type_, e.event.type, e.position);
  for (auto& t : e.event.tags)
    index_front(by_tag_, t, e.position);
  --lo_;
  below_.from = lo_;
}

void event_cache::pop_front() {
  auto& e = events_.front();
  below_.add(e.event);
  unindex_front(by_type_, e.event.type);
  for (auto& t : e.event.tags)
    unindex_front(by_tag_, t);
  bytes_ -= std::min(bytes_, footprint(e));
  events_.pop_front();
  ++lo_;
  ++evicted_;
}

void event_cache::clear_at(std::uint64_t head) {
  events_.clear();
  by_type_.clear();
  by_tag_.clear();
  bytes_ = 0;
  lo_ = head;
  // Past a gap the summary no longer joins the cache: start it afresh.
  below_.clear();
  below_.from = head;
}

void event_cache::publish() {
  hi_.store(lo_ + events_.size(), std::memory_order_release);
  {
    // Taking the waiters' mutex orders this notification after a waiter's
    // check of `hi`, so no wake-up is lost.
    std::lock_guard<std::mutex> guard{wait_mutex_};
  }
  moved_.notify_all();
}

bool event_cache::start(std::uint64_t head) {
  std::unique_lock lock{mutex_};
  if (started_.load(std::memory_order_relaxed))
    return false;
  clear_at(head);
  started_.store(true, std::memory_order_release);
  publish();
  return true;
}

bool event_cache::extend(const std::vector<sequenced_event>& events,
                         bool restart_on_gap) {
  std::unique_lock lock{mutex_};
  if (!started_.load(std::memory_order_relaxed))
    return false;
  auto hi = lo_ + events_.size();
  std::size_t i = 0;
  while (i < events.size() && events[i].position <= hi)
    ++i;
  if (i == events.size())
    return true;
  if (events[i].position != hi + 1) {
    if (!restart_on_gap)
      return false;
    clear_at(events[i].position - 1);
    ++restarts_;
  }
  auto expected = lo_ + events_.size() + 1;
  for (; i < events.size(); ++i) {
    if (events[i].position != expected)
      break; // out of order input: keep the contiguous prefix
    push_back(events[i]);
    ++expected;
  }
  while (bytes_ + below_.bytes() > max_bytes_ && !events_.empty())
    pop_front();
  publish();
  return true;
}

std::size_t event_cache::prepend(const std::vector<sequenced_event>& events) {
  std::unique_lock lock{mutex_};
  if (!started_.load(std::memory_order_relaxed))
    return 0;
  std::size_t taken = 0;
  for (auto& e : events) {
    if (below_.from == 0 || e.position != below_.from)
      break;
    // Into the cache while it is contiguous with the summary (nothing
    // evicted or summarized yet) and has room; then into the summary.
    if (below_.from == lo_
        && bytes_ + below_.bytes() + footprint(e) <= max_bytes_) {
      push_front(e);
    } else {
      below_.add(e.event);
      --below_.from;
    }
    ++taken;
  }
  return taken;
}

std::uint64_t event_cache::warm_from() const {
  std::shared_lock lock{mutex_};
  return below_.from;
}

bool event_cache::wants_older() const {
  std::shared_lock lock{mutex_};
  return started_.load(std::memory_order_relaxed) && below_.from > 0;
}

bool event_cache::summary_excludes(const query& q, std::uint64_t first) const {
  return first > below_.from && below_.excludes(q);
}

bool event_cache::covers(const query& q, std::uint64_t first) const {
  std::shared_lock lock{mutex_};
  return started_.load(std::memory_order_relaxed)
         && (first > lo_ || summary_excludes(q, first));
}

condition_check event_cache::check_condition(const query& q,
                                             std::uint64_t after) const {
  bool matched = false;
  std::uint64_t next = 0, hi = 0;
  auto held = visit(
    q, after + 1, std::numeric_limits<std::uint64_t>::max(), false, 1,
    std::numeric_limits<std::size_t>::max(),
    [&](const sequenced_event&) {
      matched = true;
    },
    next, hi);
  condition_check c;
  if (matched)
    c.result = condition_check::matched;
  else if (held && hi > after)
    c = {condition_check::clean, hi};
  conditions_[c.result].fetch_add(1, std::memory_order_relaxed);
  return c;
}

std::uint64_t event_cache::lo() const {
  std::shared_lock lock{mutex_};
  return lo_;
}

bool event_cache::wait_for(
  std::uint64_t position,
  std::chrono::steady_clock::time_point deadline) const {
  std::unique_lock<std::mutex> lock{wait_mutex_};
  return moved_.wait_until(lock, deadline, [&] {
    return hi() >= position;
  });
}

cache_snapshot event_cache::snapshot() const {
  std::shared_lock lock{mutex_};
  cache_snapshot s;
  s.started = started_.load(std::memory_order_relaxed);
  s.lo = lo_;
  s.hi = lo_ + events_.size();
  s.bytes = bytes_;
  s.summary_bytes = below_.bytes();
  s.summary_from = below_.from;
  s.summary_types = below_.types();
  s.summary_types_full = below_.types_full();
  s.summary_answers = summary_answers_.load(std::memory_order_relaxed);
  s.conditions_clean = conditions_[0].load(std::memory_order_relaxed);
  s.conditions_matched = conditions_[1].load(std::memory_order_relaxed);
  s.conditions_missed = conditions_[2].load(std::memory_order_relaxed);
  s.events = events_.size();
  s.max_bytes = max_bytes_;
  s.restarts = restarts_;
  s.evicted = evicted_;
  for (int r = 0; r < 3; ++r)
    for (int o = 0; o < 3; ++o)
      s.served[r][o] = served_[r][o].load(std::memory_order_relaxed);
  s.waits = waits_.load(std::memory_order_relaxed);
  s.wait_timeouts = wait_timeouts_.load(std::memory_order_relaxed);
  return s;
}

bool event_cache::collect(const query& q, std::uint64_t first,
                          std::uint64_t last, bool backwards,
                          std::uint64_t limit, std::size_t max_bytes,
                          std::vector<sequenced_event>& out,
                          std::uint64_t& next,
                          std::uint64_t& snapshot_hi) const {
  return visit(
    q, first, last, backwards, limit, max_bytes,
    [&out](const sequenced_event& e) {
      out.push_back(e);
    },
    next, snapshot_hi);
}

bool event_cache::visit(const query& q, std::uint64_t first, std::uint64_t last,
                        bool backwards, std::uint64_t limit,
                        std::size_t max_bytes,
                        const std::function<void(const sequenced_event&)>& sink,
                        std::uint64_t& next, std::uint64_t& snapshot_hi) const {
  std::shared_lock lock{mutex_};
  if (!started_.load(std::memory_order_relaxed))
    return false;
  auto hi = lo_ + events_.size();
  snapshot_hi = hi;
  // What the scan covers goes down to `floor` + 1: the cache's low end, or
  // the range's when the summary rules out every match below the cache.
  auto floor = lo_;
  if (first <= lo_ && summary_excludes(q, first)) {
    floor = first - 1;
    summary_answers_.fetch_add(1, std::memory_order_relaxed);
  }
  // The scan's start must be covered: forward the range's low end,
  // backwards its high end (capped at hi).
  if (backwards ? std::min(last, hi) <= floor : first <= floor)
    return false;
  // Memory holds [a, b]; a backward scan that runs out is past `lowest`.
  auto a = std::max(first, lo_ + 1);
  auto b = std::min(last, hi);
  auto lowest = std::max(first, floor + 1);
  next = backwards ? b : a;
  if (a > b || limit == 0) {
    if (a > b)
      next = backwards ? lowest - 1 : b + 1;
    return true;
  }
  std::size_t bytes = 0;
  std::uint64_t taken = 0;
  // Emits the event at `p` if it matches; returns false once the read is
  // full (limit or bytes).
  // (As the stores do: an event that would take a non-empty result past
  // `max_bytes` is left for the next call.)
  auto emit = [&](std::uint64_t p) {
    auto& e = at(p);
    if (!matches(q, e.event)) {
      next = backwards ? p - 1 : p + 1;
      return true;
    }
    auto size = e.event.data.size() + e.event.metadata.size();
    if (taken > 0 && bytes + size > max_bytes)
      return false;
    next = backwards ? p - 1 : p + 1;
    sink(e);
    ++taken;
    bytes += size;
    return taken < limit && bytes < max_bytes;
  };
  if (q.matches_all()) {
    if (backwards) {
      for (auto p = b; p >= a; --p)
        if (!emit(p))
          return true;
    } else {
      for (auto p = a; p <= b; ++p)
        if (!emit(p))
          return true;
    }
    next = backwards ? lowest - 1 : b + 1;
    return true;
  }
  // One cursor per index list that can hold matches: an item with tags
  // scans its rarest tag, an item with types only scans each type.
  using iter = std::vector<std::uint64_t>::const_iterator;
  struct cursor {
    iter lo, hi; // the positions in [a, b]: [lo, hi)
  };
  std::vector<cursor> cursors;
  auto add = [&](const positions& ps) {
    auto lo_it = std::lower_bound(ps.first(), ps.v.end(), a);
    auto hi_it = std::upper_bound(lo_it, ps.v.end(), b);
    if (lo_it != hi_it)
      cursors.push_back({lo_it, hi_it});
  };
  for (auto& item : q.items) {
    if (!item.tags.empty()) {
      const positions* rarest = nullptr;
      for (auto& t : item.tags) {
        auto i = by_tag_.find(t);
        if (i == by_tag_.end()) {
          rarest = nullptr;
          break;
        }
        if (!rarest || i->second.size() < rarest->size())
          rarest = &i->second;
      }
      if (rarest)
        add(*rarest);
    } else {
      for (auto& t : item.types) {
        auto i = by_type_.find(t);
        if (i != by_type_.end())
          add(i->second);
      }
    }
  }
  // Merge the cursors in the read's direction, each position once.
  std::uint64_t last_emitted = 0;
  bool any = false;
  while (!cursors.empty()) {
    std::size_t best = 0;
    for (std::size_t k = 1; k < cursors.size(); ++k) {
      auto pk = backwards ? *(cursors[k].hi - 1) : *cursors[k].lo;
      auto pb = backwards ? *(cursors[best].hi - 1) : *cursors[best].lo;
      if (backwards ? pk > pb : pk < pb)
        best = k;
    }
    auto& c = cursors[best];
    std::uint64_t p;
    if (backwards)
      p = *--c.hi;
    else
      p = *c.lo++;
    if (c.lo == c.hi) {
      cursors[best] = cursors.back();
      cursors.pop_back();
    }
    if (any && p == last_emitted)
      continue;
    any = true;
    last_emitted = p;
    if (!emit(p))
      return true;
  }
  next = backwards ? lowest - 1 : b + 1;
  return true;
}

} // namespace dcbd
