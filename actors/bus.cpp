// The event bus and its subscription sinks (actors/bus_protocol.hpp).
//
// The bus keeps `head`: it has applied every event at or below it, in
// order, to every subscriber that was live for it. Each subscriber keeps:
//   scanned  every match at or below it is queued or sent (while live: the
//            feed skips events at or below it, which a read already found)
//   prev     the position of the last match queued (the next event's prev)
//   queue    matches and control items not yet sent (bounded in events)
// and is either live (takes matches from the feed; effectively scanned =
// max(scanned, head)) or catching up: from `recent` (the last events the
// bus applied, in memory) when they still hold scanned + 1, else with pages
// of `read(q, from = scanned + 1)` through the readers, each read only when
// its queue has room. Catching up to `head` makes it live. A live subscriber
// whose queue is full when a match arrives falls behind: scanned = that
// position - 1, and it reads again once its queue drains. Positions only grow,
// so nothing is sent twice; every position is either scanned by a read or seen
// live, so nothing is missed.
#include "actors/bus_protocol.hpp"
#include "actors/inspect.hpp"
#include "store/matching.hpp"
#include "store/validation.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <algorithm>
#include <deque>
#include <iostream>
#include <limits>
#include <map>
#include <unordered_map>
#include <utility>

namespace dcbd {

const char* to_string(bus_item_kind k) noexcept {
  switch (k) {
    case bus_item_kind::event:
      return "event";
    case bus_item_kind::checkpoint:
      return "checkpoint";
    case bus_item_kind::caught_up:
      return "caught_up";
    case bus_item_kind::heartbeat:
      return "heartbeat";
  }
  return "event";
}

namespace {

using steady = std::chrono::steady_clock;

constexpr std::uint64_t max_position
  = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());

// -- subscribers --------------------------------------------------------------

struct subscriber {
  std::uint64_t id = 0;
  subscription_sink_actor sink;
  query q;
  std::string key;
  std::uint64_t after = 0;
  std::chrono::milliseconds heartbeat{0};
  // Accepted: `prev` is known and the first batch went out.
  bool started = false;
  bool live = false;
  std::uint64_t scanned = 0;
  std::uint64_t prev = 0;
  // caught_up goes out when scanned reaches target (set once the bus knows
  // its head).
  bool target_set = false;
  std::uint64_t target = 0;
  bool caught_up = false;
  // The first read (see `read_prev`) goes to the database: a snapshot read
  // came back with a head below `after`.
  bool prev_direct = false;
  // A read is queued or in flight; after a failed one, not before retry_at.
  bool reading = false;
  steady::time_point retry_at{};
  std::chrono::milliseconds backoff{0};
  std::deque<bus_item> queue;
  std::size_t queued_events = 0;
  // Payload bytes of the queued events (see `size_of`).
  std::size_t queued_bytes = 0;
  std::uint64_t credit = 0;
  // Highest position sent (event, checkpoint or caught_up).
  std::uint64_t reported = 0;
  steady::time_point last_heartbeat{};
  steady::time_point last_checkpoint{};
  // In the current handler's list of subscribers to pump.
  bool touched = false;
};

// Subscribers with the same (normalized) query share one match per event.
struct query_group {
  query q;
  std::vector<subscriber*> members;
};

// A canonical text of a normalized query, for grouping.
std::string key_of(const query& q) {
  std::string k;
  auto put = [&k](const std::string& s) {
    k += std::to_string(s.size());
    k += ':';
    k += s;
  };
  for (auto& item : q.items) {
    k += 'T';
    for (auto& t : item.types)
      put(t);
    k += 'G';
    for (auto& t : item.tags)
      put(t);
    k += '|';
  }
  return k;
}

// About the memory an event takes.
std::size_t size_of(const sequenced_event& e) {
  auto n = e.event.type.size() + e.event.data.size() + e.event.metadata.size();
  for (auto& t : e.event.tags)
    n += t.size();
  return n + sizeof(sequenced_event);
}

struct bus_state {
  bus_state() = default;

  bus_config cfg;
  reader_actor readers;
  // The log: applied through `head` once `ready`.
  bool ready = false;
  bool head_asked = false;
  std::uint64_t head = 0;
  // The last events applied, positions (head - recent.size(), head].
  std::deque<std::shared_ptr<const sequenced_event>> recent;
  std::size_t recent_bytes = 0;
  // Announced by the store past a gap, by first position.
  struct parked {
    bus_feed source;
    std::vector<sequenced_event> events;
  };
  std::map<std::uint64_t, parked> pending;
  bool feeding = false;
  bool feed_again = false;
  // Within a `feed_grace`: the head to reach before it ends (else read).
  bool grace_running = false;
  std::uint64_t grace_until_head = 0;
  // Woken while a local group was in flight: the next local announcement
  // (or the grace's end) decides whether to read.
  bool awaiting_local = false;
  // Announcements of the local store actor received (see `store_groups`).
  std::uint64_t local_announced = 0;
  // Warming the cache: a read in flight, and the low end where a page
  // brought nothing new.
  bool warming = false;
  std::uint64_t warm_stuck_at = max_position;
  steady::time_point last_poll{};
  // Subscribers.
  std::unordered_map<std::uint64_t, std::unique_ptr<subscriber>> subs;
  std::unordered_map<std::string, query_group> groups;
  std::deque<std::uint64_t> read_queue;
  std::size_t reads_in_flight = 0;
  std::vector<subscriber*> touched;
  bus_stats stats;
  static inline const char* name = "dcbd.bus";
};

using bus_pointer = bus_actor::stateful_pointer<bus_state>;

// Everything matching at or below this has been queued or sent.
std::uint64_t effective_scanned(const bus_state& st, const subscriber& s) {
  return s.live ? std::max(s.scanned, st.head) : s.scanned;
}

void touch(bus_state& st, subscriber& s) {
  if (!s.touched) {
    s.touched = true;
    st.touched.push_back(&s);
  }
}

void update_gauges(bus_state& st) {
  st.stats.subscriptions = st.subs.size();
  if (st.cfg.metrics)
    st.cfg.metrics->subscriptions(st.subs.size());
}

// Sends what the subscriber may take: control items always, events while
// credit lasts.
void flush(bus_pointer self, subscriber& s) {
  auto& st = self->state;
  if (!s.started || s.queue.empty())
    return;
  bus_batch b;
  b.id = s.id;
  std::size_t events = 0;
  while (!s.queue.empty() && b.items.size() < st.cfg.batch_events) {
    auto& front = s.queue.front();
    if (front.kind == bus_item_kind::event) {
      if (s.credit == 0)
        break;
      --s.credit;
      --s.queued_events;
      s.queued_bytes -= std::min(s.queued_bytes, size_of(*front.event));
      ++events;
    }
    s.reported = std::max(s.reported, front.position);
    b.items.push_back(std::move(front));
    s.queue.pop_front();
  }
  if (b.items.empty())
    return;
  st.stats.delivered += events;
  if (st.cfg.metrics && events > 0)
    st.cfg.metrics->delivered(events);
  self->send(s.sink, bus_batch_atom::value, std::move(b));
}

void send_alone(bus_pointer self, subscriber& s, bus_item item) {
  s.reported = std::max(s.reported, item.position);
  bus_batch b;
  b.id = s.id;
  b.items.push_back(std::move(item));
  self->send(s.sink, bus_batch_atom::value, std::move(b));
}

void end_subscription(bus_pointer self, std::uint64_t id, errc code,
                      std::string message, bool tell_sink = true) {
  auto& st = self->state;
  auto i = st.subs.find(id);
  if (i == st.subs.end())
    return;
  auto& s = *i->second;
  if (tell_sink)
    self->send(s.sink, bus_end_atom::value,
               bus_end{id, code, std::move(message), s.reported});
  auto g = st.groups.find(s.key);
  if (g != st.groups.end()) {
    auto& m = g->second.members;
    m.erase(std::remove(m.begin(), m.end(), &s), m.end());
    if (m.empty())
      st.groups.erase(g);
  }
  if (s.touched)
    st.touched.erase(std::remove(st.touched.begin(), st.touched.end(), &s),
                     st.touched.end());
  st.subs.erase(i);
  update_gauges(st);
}

void start_reads(bus_pointer self);
void request_feed(bus_pointer self);
void feed_soon(bus_pointer self, std::uint64_t wanted);

// Whether `recent` still holds the next position the subscriber needs.
bool covered(const bus_state& st, const subscriber& s) {
  return !st.recent.empty() && st.recent.front()->position <= s.scanned + 1
         && s.scanned < st.head;
}

// Whether the subscriber's queue is full (in events or in bytes).
bool full(const bus_state& st, const subscriber& s) {
  return s.queued_events >= st.cfg.queue_events
         || s.queued_bytes >= st.cfg.queue_bytes;
}

// Queues event item `item` for `s`.
void enqueue(subscriber& s, bus_item item) {
  s.queued_bytes += size_of(*item.event);
  ++s.queued_events;
  s.queue.push_back(std::move(item));
}

// Catches a subscriber up from `recent`, as far as its queue has room.
void replay(bus_state& st, subscriber& s) {
  if (!covered(st, s))
    return;
  auto i
    = static_cast<std::size_t>(s.scanned + 1 - st.recent.front()->position);
  for (; i < st.recent.size() && !full(st, s); ++i) {
    auto& e = st.recent[i];
    if (matches(s.q, e->event)) {
      bus_item item;
      item.kind = bus_item_kind::event;
      item.position = e->position;
      item.prev = s.prev;
      item.head = st.head;
      item.event = e;
      // Late, but still live for a subscriber that was caught up (it fell
      // behind); a new one's history is no delivery latency.
      item.live = s.caught_up;
      s.prev = e->position;
      enqueue(s, std::move(item));
      ++st.stats.replayed;
    }
    s.scanned = e->position;
  }
}

// Moves a subscriber along: accepted, reading, live, caught up, flushed.
void pump(bus_pointer self, subscriber& s) {
  auto& st = self->state;
  auto now = steady::now();
  if (!s.started) {
    if (!s.reading && now >= s.retry_at) {
      s.reading = true;
      st.read_queue.push_back(s.id);
      start_reads(self);
    }
    return;
  }
  if (st.ready && !s.target_set) {
    s.target_set = true;
    s.target = std::max(s.after, st.head);
  }
  if (st.ready && !s.live && !s.reading && s.scanned < st.head)
    replay(st, s);
  if (st.ready && !s.live && !s.reading) {
    if (s.scanned >= st.head) {
      s.live = true;
    } else if (!covered(st, s)) {
      auto room = st.cfg.queue_events
                  - std::min(st.cfg.queue_events, s.queued_events);
      if (room >= std::max<std::size_t>(st.cfg.queue_events / 2, 1)
          && s.queued_bytes < st.cfg.queue_bytes / 2 && now >= s.retry_at) {
        s.reading = true;
        st.read_queue.push_back(s.id);
        start_reads(self);
      }
    }
  }
  if (s.target_set && !s.caught_up && !s.reading
      && effective_scanned(st, s) >= s.target) {
    s.caught_up = true;
    bus_item item;
    item.kind = bus_item_kind::caught_up;
    item.position = effective_scanned(st, s);
    // A catch-up read may have seen a head the bus has not heard of yet.
    item.head = std::max(st.head, item.position);
    s.queue.push_back(std::move(item));
  }
  flush(self, s);
}

void pump_touched(bus_pointer self) {
  auto& st = self->state;
  // pump may touch nothing new, but keep the loop robust to it.
  auto list = std::move(st.touched);
  st.touched.clear();
  for (auto* s : list)
    s->touched = false;
  for (auto* s : list)
    pump(self, *s);
}

// A subscriber's read failed: retry later with backoff.
void read_failed(bus_pointer self, std::uint64_t id, const caf::error& err) {
  auto& st = self->state;
  --st.reads_in_flight;
  auto i = st.subs.find(id);
  if (i == st.subs.end())
    return start_reads(self);
  auto& s = *i->second;
  s.reading = false;
  using namespace std::chrono_literals;
  s.backoff = std::clamp<std::chrono::milliseconds>(s.backoff * 2, 100ms, 5s);
  s.retry_at = steady::now() + s.backoff;
  std::cerr << "dcbd bus: read for subscription " << s.id
            << " failed (retrying in " << s.backoff.count()
            << " ms): " << message_of(err) << std::endl;
  start_reads(self);
}

// The first read of a subscription: the last match at or below `after`,
// which is the first event's prev. A snapshot read may be served at a head
// behind the database's (the event cache's, which lags the commits it has not
// been fed yet: those of other processes, and the node's own between the
// commit and `extend`), so a head below `after` from it proves nothing: only
// a read from the database may refuse `after` as past the head of the log.
void read_prev(bus_pointer self, subscriber& s) {
  read_options o;
  o.from = s.after;
  o.limit = 1;
  o.backwards = true;
  auto id = s.id;
  auto direct = s.prev_direct;
  auto on_result = [self, id, direct](read_result& r) {
    auto& st = self->state;
    --st.reads_in_flight;
    auto i = st.subs.find(id);
    if (i != st.subs.end()) {
      auto& s = *i->second;
      if (s.after > r.head && !direct) {
        // Behind the database: ask it (still reading, first in line).
        s.prev_direct = true;
        st.read_queue.push_front(id);
      } else if (s.after > r.head) {
        s.reading = false;
        end_subscription(self, id, errc::invalid_argument,
                         "after (" + std::to_string(s.after)
                           + ") is past the head of the log ("
                           + std::to_string(r.head) + ")");
      } else {
        s.reading = false;
        s.prev = r.events.empty() ? 0 : r.events.front().position;
        s.started = true;
        s.backoff = {};
        s.last_heartbeat = s.last_checkpoint = steady::now();
        // The first batch says "accepted", with or without items.
        self->send(s.sink, bus_batch_atom::value, bus_batch{id, {}});
        pump(self, s);
      }
    }
    start_reads(self);
  };
  auto on_error = [self, id](caf::error& err) {
    read_failed(self, id, err);
  };
  auto& st = self->state;
  if (direct)
    self
      ->request(st.readers, st.cfg.read_timeout, read_atom::value, s.q, o,
                direct_atom::value)
      .then(std::move(on_result), std::move(on_error));
  else
    self
      ->request(st.readers, st.cfg.read_timeout, read_atom::value, s.q, o,
                snapshot_atom::value)
      .then(std::move(on_result), std::move(on_error));
}

// One page of a subscriber's catch-up.
void read_page(bus_pointer self, subscriber& s) {
  auto& st = self->state;
  auto room = st.cfg.queue_events
              - std::min(st.cfg.queue_events, s.queued_events);
  std::uint64_t limit = std::clamp<std::size_t>(room, 1, st.cfg.feed_page);
  read_options o;
  o.from = s.scanned + 1;
  o.limit = limit;
  auto id = s.id;
  ++st.stats.catch_up_reads;
  self
    ->request(st.readers, st.cfg.read_timeout, read_atom::value, s.q, o,
              snapshot_atom::value)
    .then(
      [self, id, limit](read_result& r) {
        auto& st = self->state;
        --st.reads_in_flight;
        auto i = st.subs.find(id);
        if (i != st.subs.end()) {
          auto& s = *i->second;
          s.reading = false;
          s.backoff = {};
          for (auto& e : r.events) {
            if (e.position <= s.scanned)
              continue;
            bus_item item;
            item.kind = bus_item_kind::event;
            item.position = e.position;
            item.prev = s.prev;
            item.head = std::max(r.head, st.head);
            // As in `replay`: late deliveries to a subscriber that fell
            // behind count in the delivery latency.
            item.live = s.caught_up;
            s.prev = e.position;
            s.scanned = e.position;
            item.event = std::make_shared<const sequenced_event>(std::move(e));
            enqueue(s, std::move(item));
          }
          if (r.events.size() < limit)
            s.scanned = std::max(s.scanned, r.head);
          pump(self, s);
        }
        start_reads(self);
      },
      [self, id](caf::error& err) {
        read_failed(self, id, err);
      });
}

void start_reads(bus_pointer self) {
  auto& st = self->state;
  while (st.reads_in_flight < st.cfg.max_reads && !st.read_queue.empty()) {
    auto id = st.read_queue.front();
    st.read_queue.pop_front();
    auto i = st.subs.find(id);
    if (i == st.subs.end() || !i->second->reading)
      continue;
    ++st.reads_in_flight;
    if (!i->second->started)
      read_prev(self, *i->second);
    else
      read_page(self, *i->second);
  }
}

// -- the feed -----------------------------------------------------------------

// Hands event `e` (at head + 1) to every live subscriber whose query
// matches; one match per query group.
void fan_out(bus_pointer self, sequenced_event&& e) {
  auto& st = self->state;
  auto shared = std::make_shared<const sequenced_event>(std::move(e));
  auto pos = shared->position;
  for (auto& [key, g] : st.groups) {
    if (!matches(g.q, shared->event))
      continue;
    for (auto* s : g.members) {
      if (!s->live || pos <= s->scanned)
        continue;
      if (full(st, *s)) {
        // Full: back to reading from here, once the queue drains.
        s->live = false;
        s->scanned = pos - 1;
        ++st.stats.fell_behind;
        if (st.cfg.metrics)
          st.cfg.metrics->fell_behind();
        touch(st, *s);
        continue;
      }
      bus_item item;
      item.kind = bus_item_kind::event;
      item.position = pos;
      item.prev = s->prev;
      item.head = pos;
      item.event = shared;
      item.live = true;
      s->prev = pos;
      enqueue(*s, std::move(item));
      touch(st, *s);
    }
  }
  if (st.cfg.recent_events == 0)
    return;
  st.recent_bytes += size_of(*shared);
  st.recent.push_back(std::move(shared));
  while (!st.recent.empty()
         && (st.recent.size() > st.cfg.recent_events
             || st.recent_bytes > st.cfg.recent_bytes)) {
    st.recent_bytes -= size_of(*st.recent.front());
    st.recent.pop_front();
  }
}

// Keeps `events` (from `first` on, past a gap) until the gap is filled; of
// two announcements from the same position the longer one stays.
void park(bus_state& st, std::uint64_t first, bus_feed from,
          std::vector<sequenced_event>&& events) {
  auto& slot = st.pending[first];
  if (slot.events.size() < events.size())
    slot = bus_state::parked{from, std::move(events)};
}

// Applies events in position order; what lies past a gap waits in
// `pending` while the gap is read. `source` is where they came from.
void apply(bus_pointer self, std::vector<sequenced_event>&& events,
           bus_feed source) {
  auto& st = self->state;
  auto old_head = st.head;
  // What the cache lacks of what gets applied (the node's own commits are
  // in it already).
  std::vector<sequenced_event> for_cache;
  auto cache_hi = st.cfg.cache ? st.cfg.cache->hi() : max_position;
  std::size_t fed[3] = {0, 0, 0};
  auto run = [&](std::vector<sequenced_event>& evs, bus_feed from) {
    for (std::size_t i = 0; i < evs.size(); ++i) {
      auto pos = evs[i].position;
      if (pos <= st.head)
        continue;
      if (pos != st.head + 1) {
        // A gap: keep the rest for later.
        std::vector<sequenced_event> rest(
          std::make_move_iterator(evs.begin() + static_cast<long>(i)),
          std::make_move_iterator(evs.end()));
        park(st, pos, from, std::move(rest));
        return;
      }
      if (pos > cache_hi)
        for_cache.push_back(evs[i]);
      fan_out(self, std::move(evs[i]));
      st.head = pos;
      ++fed[static_cast<int>(from)];
    }
  };
  if (!events.empty())
    run(events, source);
  // The announcement a wake-up waited for: if the head still falls short of
  // what the NOTIFY said, the rest is another process's (see `wake_atom`).
  auto read_now = false;
  if (source == bus_feed::store && st.awaiting_local) {
    st.awaiting_local = false;
    read_now = st.head < st.grace_until_head;
  }
  while (!st.pending.empty() && st.pending.begin()->first <= st.head + 1) {
    auto p = std::move(st.pending.begin()->second);
    st.pending.erase(st.pending.begin());
    run(p.events, p.source);
  }
  st.stats.fed_by_reads += fed[static_cast<int>(bus_feed::read)];
  st.stats.fed_by_peers += fed[static_cast<int>(bus_feed::peer)];
  if (st.cfg.metrics)
    for (auto from : {bus_feed::store, bus_feed::peer, bus_feed::read})
      if (fed[static_cast<int>(from)] > 0)
        st.cfg.metrics->fed(from, fed[static_cast<int>(from)]);
  if (!for_cache.empty())
    st.cfg.cache->extend(for_cache, true);
  if (!st.pending.empty())
    feed_soon(self, st.pending.begin()->first - 1);
  else if (read_now && st.head < st.grace_until_head)
    request_feed(self);
  if (st.head != old_head) {
    st.stats.head = st.head;
    if (st.cfg.metrics)
      st.cfg.metrics->head(st.head);
  }
  pump_touched(self);
}

// The log reaches at least `wanted`: read past the head now, or, with a
// `feed_grace`, once it ran out while the head is still below `wanted` (or
// a gap is still open).
void feed_soon(bus_pointer self, std::uint64_t wanted) {
  auto& st = self->state;
  if (st.cfg.feed_grace.count() <= 0)
    return request_feed(self);
  st.grace_until_head = std::max(st.grace_until_head, wanted);
  if (st.grace_running)
    return;
  st.grace_running = true;
  self->delayed_send(self, st.cfg.feed_grace, feed_due_atom::value);
}

// A group of the local store actor is sent and not yet announced.
bool local_commit_pending(const bus_state& st) {
  auto& g = st.cfg.local_groups;
  if (!g)
    return false;
  auto unannounced = g->unannounced.load(std::memory_order_acquire);
  auto sent = g->sent.load(std::memory_order_acquire);
  return sent > unannounced + st.local_announced;
}

// Woken with `wanted` while a local group is in flight: the NOTIFY is most
// likely that group's, whose announcement brings the events without a read.
// The store starts a group only after it announced the one before, so the
// next local announcement the bus takes is the one of the group in flight
// (or of one before the NOTIFY): past it, what is still missing is read.
void await_local(bus_pointer self, std::uint64_t wanted) {
  auto& st = self->state;
  ++st.stats.local_waits;
  st.awaiting_local = true;
  st.grace_until_head = std::max(st.grace_until_head, wanted);
  if (st.grace_running)
    return;
  st.grace_running = true;
  self->delayed_send(self, st.cfg.local_grace, feed_due_atom::value);
}

// Reads the log past `head` (commits of other processes, or a gap).
void request_feed(bus_pointer self) {
  auto& st = self->state;
  if (!st.ready)
    return;
  if (st.feeding) {
    st.feed_again = true;
    return;
  }
  st.feeding = true;
  st.feed_again = false;
  ++st.stats.feed_reads;
  read_options o;
  o.from = st.head + 1;
  o.limit = st.cfg.feed_page;
  auto page = st.cfg.feed_page;
  self
    ->request(st.readers, st.cfg.read_timeout, read_atom::value, query::all(),
              o, direct_atom::value)
    .then(
      [self, page](read_result& r) {
        auto& st = self->state;
        st.feeding = false;
        auto full = r.events.size() >= page;
        apply(self, std::move(r.events), bus_feed::read);
        if (full || st.feed_again)
          request_feed(self);
      },
      [self](caf::error& err) {
        auto& st = self->state;
        st.feeding = false;
        // The next poll tries again.
        std::cerr << "dcbd bus: reading past the head failed: "
                  << message_of(err) << std::endl;
      });
}

// Fills the cache below its low end from the database after a start, a
// page at a time, until it is full, then its summary of older events (see
// store/event_cache.hpp) down to position 1.
void warm(bus_pointer self) {
  auto& st = self->state;
  auto& cache = st.cfg.cache;
  if (!cache || st.warming || !cache->wants_older())
    return;
  auto lo = cache->warm_from();
  if (lo == st.warm_stuck_at)
    return;
  st.warming = true;
  read_options o;
  o.from = lo;
  o.backwards = true;
  o.limit = st.cfg.feed_page;
  self
    ->request(st.readers, st.cfg.read_timeout, read_atom::value, query::all(),
              o, direct_atom::value)
    .then(
      [self, lo](read_result& r) {
        auto& st = self->state;
        st.warming = false;
        if (st.cfg.cache->prepend(r.events) == 0)
          st.warm_stuck_at = lo; // the cache moved: see the tick
        warm(self);
      },
      [self](caf::error& err) {
        self->state.warming = false;
        std::cerr << "dcbd bus: warming the event cache failed (retrying): "
                  << message_of(err) << std::endl;
      });
}

void ask_head(bus_pointer self) {
  auto& st = self->state;
  if (st.ready || st.head_asked)
    return;
  st.head_asked = true;
  self->request(st.readers, st.cfg.read_timeout, head_atom::value)
    .then(
      [self](std::uint64_t h) {
        auto& st = self->state;
        st.head_asked = false;
        if (st.ready)
          return;
        st.ready = true;
        st.head = h;
        st.stats.head = h;
        if (st.cfg.metrics)
          st.cfg.metrics->head(h);
        // Whatever was announced before is below the head or past it.
        apply(self, {}, bus_feed::store);
        for (auto& [id, s] : st.subs)
          touch(st, *s);
        pump_touched(self);
        // This read is the first poll.
        st.last_poll = steady::now();
        request_feed(self);
      },
      [self](caf::error& err) {
        self->state.head_asked = false;
        std::cerr << "dcbd bus: reading the head failed (retrying): "
                  << message_of(err) << std::endl;
      });
}

// The bus's clock: the head at start, polls, retries, checkpoints and
// heartbeats.
void on_tick(bus_pointer self) {
  auto& st = self->state;
  auto now = steady::now();
  ask_head(self);
  if (st.ready)
    warm(self);
  if (st.ready && now - st.last_poll >= st.cfg.poll) {
    st.last_poll = now;
    request_feed(self);
  }
  for (auto& [id, sp] : st.subs) {
    auto& s = *sp;
    pump(self, s);
    if (!s.started)
      continue;
    auto scanned = effective_scanned(st, s);
    // Up to a tick early, so that two checkpoints are never more than
    // checkpoint_interval apart while the log moves (API.md §5: at least
    // every second).
    if (s.queue.empty() && scanned > s.reported
        && now - s.last_checkpoint + st.cfg.tick
             >= st.cfg.checkpoint_interval) {
      s.last_checkpoint = now;
      bus_item item;
      item.kind = bus_item_kind::checkpoint;
      item.position = scanned;
      item.head = std::max(st.head, scanned);
      send_alone(self, s, std::move(item));
    } else if (st.ready && s.heartbeat.count() > 0
               && now - s.last_heartbeat >= s.heartbeat) {
      // Only once the bus knows the head: a heartbeat says `head=<h>`,
      // and 0 would be a lie while the first ask is still out (or the
      // database is down at start). The first tick after it comes sends
      // the overdue heartbeat.
      s.last_heartbeat = now;
      bus_item item;
      item.kind = bus_item_kind::heartbeat;
      item.head = st.head;
      send_alone(self, s, std::move(item));
    }
  }
}

bus_actor::behavior_type bus_impl(bus_pointer self, store_actor store,
                                  reader_actor readers, bus_config cfg) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.cfg.queue_events = std::max<std::size_t>(st.cfg.queue_events, 2);
  st.cfg.batch_events = std::max<std::size_t>(st.cfg.batch_events, 1);
  st.cfg.max_reads = std::max<std::size_t>(st.cfg.max_reads, 1);
  st.cfg.feed_page = std::max<std::size_t>(st.cfg.feed_page, 1);
  st.readers = std::move(readers);
  self->send(store, listen_atom::value, caf::actor_cast<caf::actor>(self));
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    std::vector<std::uint64_t> gone;
    for (auto& [id, s] : st.subs)
      if (s->sink.address() == dm.source)
        gone.push_back(id);
    for (auto id : gone)
      end_subscription(self, id, errc::none, "the sink exited", false);
  });
  self->set_exit_handler([self](caf::exit_msg& em) {
    auto& st = self->state;
    std::vector<std::uint64_t> ids;
    for (auto& [id, s] : st.subs)
      ids.push_back(id);
    for (auto id : ids)
      end_subscription(self, id, errc::unavailable, "the node is stopping");
    self->quit(std::move(em.reason));
  });
  ask_head(self);
  self->send(self, tick_atom::value);
  return {
    [self](subscribe_atom, subscribe_request& req, const caf::actor& sink) {
      auto& st = self->state;
      if (!sink)
        return;
      auto refuse = [&](std::string why) {
        self->send(
          caf::actor_cast<subscription_sink_actor>(sink), bus_end_atom::value,
          bus_end{req.id, errc::invalid_argument, std::move(why), req.after});
      };
      if (st.subs.count(req.id) > 0)
        return refuse("subscription id " + std::to_string(req.id)
                      + " is taken");
      if (req.after > max_position)
        return refuse("after must be at most " + std::to_string(max_position));
      try {
        validate(req.q, st.cfg.limits, "query");
      } catch (const std::exception& e) {
        return refuse(e.what());
      }
      auto s = std::make_unique<subscriber>();
      s->id = req.id;
      s->sink = caf::actor_cast<subscription_sink_actor>(sink);
      s->q = std::move(req.q);
      s->key = key_of(s->q);
      s->after = req.after;
      s->scanned = req.after;
      s->reported = req.after;
      s->credit = req.credit;
      s->heartbeat = req.heartbeat;
      if (req.after == 0) {
        s->started = true;
        s->last_heartbeat = s->last_checkpoint = steady::now();
        self->send(s->sink, bus_batch_atom::value, bus_batch{req.id, {}});
      }
      self->monitor(sink);
      auto& g = st.groups[s->key];
      if (g.members.empty())
        g.q = s->q;
      g.members.push_back(s.get());
      auto& ref = *s;
      st.subs.emplace(req.id, std::move(s));
      update_gauges(st);
      pump(self, ref);
    },
    [self](credit_atom, std::uint64_t id, std::uint32_t n) {
      auto& st = self->state;
      auto i = st.subs.find(id);
      if (i == st.subs.end())
        return;
      i->second->credit += n;
      pump(self, *i->second);
    },
    [self](cancel_atom, std::uint64_t id) {
      end_subscription(self, id, errc::none, "cancelled");
    },
    [self](committed_atom, committed_events& ce) {
      auto& st = self->state;
      if (ce.events.empty())
        return;
      // The local store actor, or a peer's (a cluster).
      auto sender = self->current_sender();
      auto from = sender && sender->node() != self->node() ? bus_feed::peer
                                                           : bus_feed::store;
      if (from == bus_feed::store)
        ++st.local_announced;
      if (!st.ready) {
        auto first = ce.events.front().position;
        park(st, first, from, std::move(ce.events));
        return;
      }
      apply(self, std::move(ce.events), from);
    },
    [self](wake_atom, std::uint64_t hint) {
      auto& st = self->state;
      if (hint != 0 && hint <= st.head)
        return;
      if (hint == 0)
        return request_feed(self);
      if (st.cfg.feed_grace.count() <= 0 && local_commit_pending(st))
        return await_local(self, hint);
      feed_soon(self, hint);
    },
    [self](feed_due_atom) {
      auto& st = self->state;
      st.grace_running = false;
      st.awaiting_local = false;
      if (st.head < st.grace_until_head || !st.pending.empty())
        request_feed(self);
    },
    [self](bus_stats_atom) {
      auto& st = self->state;
      st.stats.head = st.head;
      st.stats.subscriptions = st.subs.size();
      return st.stats;
    },
    [self](tick_atom) {
      on_tick(self);
      self->delayed_send(self, self->state.cfg.tick, tick_atom::value);
    },
  };
}

// -- subscription sink --------------------------------------------------------

struct sink_state {
  sink_state() = default;
  bool ended = false;
  static inline const char* name = "dcbd.subscription";
};

} // namespace

bus_actor spawn_bus(caf::actor_system& sys, store_actor store,
                    reader_actor readers, bus_config cfg) {
  return sys.spawn(bus_impl, std::move(store), std::move(readers),
                   std::move(cfg));
}

caf::actor
spawn_subscription_sink(caf::actor_system& sys, bus_actor bus,
                        subscribe_request req, paced_items_handler on_items,
                        subscription_end_handler on_end,
                        std::shared_ptr<bus_metrics> metrics, bool ack_grants) {
  if (req.id == 0)
    req.id = fresh_stream_id();
  auto impl = [bus, id = req.id, on_items = std::move(on_items),
               on_end = std::move(on_end), metrics = std::move(metrics),
               ack_grants](caf::stateful_actor<sink_state>* self) mutable {
    auto finish = [self, on_end](const bus_end& e) {
      if (self->state.ended)
        return;
      self->state.ended = true;
      try {
        on_end(e);
      } catch (const std::exception& ex) {
        std::cerr << "dcbd subscription: end handler threw: " << ex.what()
                  << std::endl;
      }
      self->quit();
    };
    self->monitor(bus);
    self->set_down_handler([finish, id](caf::down_msg&) {
      finish(bus_end{id, errc::unavailable, "the bus stopped", 0});
    });
    return caf::behavior{
      [self, bus, id, on_items, metrics, ack_grants](bus_batch_atom,
                                                     bus_batch& b) {
        std::uint32_t events = 0;
        std::vector<std::chrono::system_clock::time_point> committed;
        for (auto& item : b.items) {
          if (item.kind != bus_item_kind::event)
            continue;
          ++events;
          if (metrics && item.live && item.event)
            committed.push_back(item.event->recorded_at);
        }
        auto acked = std::make_shared<std::atomic<bool>>(false);
        auto ack = [bus, id, events, acked, metrics, ack_grants,
                    committed = std::move(committed)](bool more) {
          if (acked->exchange(true))
            return;
          if (metrics && more) {
            auto now = std::chrono::system_clock::now();
            for (auto t : committed)
              metrics->commit_to_delivery(
                std::max(now - t, std::chrono::system_clock::duration{0}));
          }
          if (!more)
            caf::anon_send(bus, cancel_atom::value, id);
          else if (events > 0 && ack_grants)
            caf::anon_send(bus, credit_atom::value, id, events);
        };
        try {
          on_items(b.items, ack);
        } catch (const std::exception& e) {
          std::cerr << "dcbd subscription: handler threw: " << e.what()
                    << std::endl;
          ack(false);
        }
      },
      [finish](bus_end_atom, bus_end& e) {
        finish(e);
      },
    };
  };
  auto sink = sys.spawn(std::move(impl));
  // Subscribe from the caller's thread, before `spawn` returns: a credit or
  // a cancel the caller sends next must not overtake it (the sink's own
  // start runs later, on a scheduler thread).
  caf::anon_send(bus, subscribe_atom::value, std::move(req), sink);
  return sink;
}

} // namespace dcbd
