#include "store/cached_store.hpp"

#include "store/read_cursor.hpp"
#include "store/validation.hpp"

#include <algorithm>
#include <limits>
#include <utility>

namespace dcbd {

namespace {

thread_local const read_scope* current_scope = nullptr;

// The current thread's route (or `fallback`) and consistency.
std::pair<cache_route, read_consistency> scope_or(cache_route fallback) {
  auto scope = read_scope::current();
  if (!scope)
    return {fallback, read_consistency::linearizable};
  return {scope->route(), scope->consistency()};
}

// `index` if set, else the head the current scope says reads must see.
std::optional<std::uint64_t> must_see_or(std::optional<std::uint64_t> index) {
  if (index)
    return index;
  auto scope = read_scope::current();
  return scope ? scope->must_see() : std::nullopt;
}

} // namespace

// -- read_scope ---------------------------------------------------------------

read_scope::read_scope(cache_route r, read_consistency c,
                       std::optional<std::uint64_t> must_see) noexcept
  : saved_(current_scope)
  , route_(r)
  , consistency_(c)
  , must_see_(must_see) {
  current_scope = this;
}

read_scope::~read_scope() {
  current_scope = saved_;
}

const read_scope* read_scope::current() noexcept {
  return current_scope;
}

// -- the stream ---------------------------------------------------------------

// Walks the read's range in its direction: the part in the cache from
// memory, the part below the cache's low end through a backend stream. The
// cursor is capped at the cache's head when the stream opened, so every
// chunk comes from that one snapshot.
class cached_event_store::stream_impl final : public event_stream {
public:
  stream_impl(cached_event_store& store, query original, query normalized,
              const read_options& options, const stream_options& chunking,
              std::uint64_t head, cache_route route,
              read_consistency consistency)
    : store_(store)
    , original_(std::move(original))
    , query_(std::move(normalized))
    , cursor_(options)
    , chunking_(chunking)
    , head_(head)
    , route_(route)
    , consistency_(consistency) {
    chunking_.chunk_events = std::max<std::size_t>(chunking_.chunk_events, 1);
    cursor_.cap(head_);
  }

  ~stream_impl() override {
    auto outcome = !used_backend_ ? cache_outcome::hit
                   : used_cache_  ? cache_outcome::partial
                                  : cache_outcome::miss;
    store_.cache_->record(route_, outcome);
  }

  // Fills a chunk as the stores do (up to `chunk_events` events and about
  // `chunk_bytes` bytes), from memory and from the backend as the range
  // requires, so chunks do not depend on where the cache begins.
  bool next(std::vector<sequenced_event>& chunk) override {
    chunk.clear();
    std::size_t bytes = 0;
    std::vector<sequenced_event> piece;
    while (!cursor_.done() && chunk.size() < chunking_.chunk_events
           && (chunk.empty() || bytes < chunking_.chunk_bytes)) {
      piece.clear();
      auto room = std::min<std::uint64_t>(
        cursor_.remaining(), chunking_.chunk_events - chunk.size());
      auto room_bytes = chunk.empty() ? chunking_.chunk_bytes
                                      : chunking_.chunk_bytes - bytes;
      std::uint64_t next = 0, snapshot = 0;
      if (store_.cache_->collect(query_, cursor_.lo(), cursor_.hi(),
                                 cursor_.backwards(), room, room_bytes, piece,
                                 next, snapshot)) {
        if (!fits(chunk, piece, room_bytes))
          break;
        used_cache_ = true;
        // Past everything scanned: `next` is the next position to look at.
        if (cursor_.backwards())
          cursor_.passed(next + 1, piece.size());
        else
          cursor_.passed(next - 1, piece.size());
      } else if (!backend_piece(piece, room, room_bytes)) {
        continue;
      } else if (!fits(chunk, piece, room_bytes)) {
        break;
      } else {
        cursor_.passed(piece.back().position, piece.size());
      }
      for (auto& e : piece)
        bytes += e.event.data.size() + e.event.metadata.size();
      if (chunk.empty())
        chunk.swap(piece);
      else
        chunk.insert(chunk.end(), std::make_move_iterator(piece.begin()),
                     std::make_move_iterator(piece.end()));
      if (!chunk.empty() && bytes >= chunking_.chunk_bytes)
        break;
    }
    return !chunk.empty();
  }

  std::uint64_t head() const noexcept override {
    return head_;
  }

private:
  // Reads the next piece of the range that lies below the cache (it may
  // have evicted since the stream opened) from the backend. Returns false
  // when that part turned out empty (the cursor has moved past it); the
  // caller moves the cursor past a piece it takes.
  bool backend_piece(std::vector<sequenced_event>& piece, std::uint64_t room,
                     std::size_t room_bytes) {
    read_options o;
    o.limit = room;
    o.backwards = cursor_.backwards();
    std::uint64_t until = 0;
    if (o.backwards) {
      o.from = cursor_.hi();
    } else {
      o.from = cursor_.lo();
      until = std::min(store_.cache_->lo(), cursor_.hi());
      o.until = until;
    }
    stream_options c;
    c.chunk_events = static_cast<std::size_t>(room);
    c.chunk_bytes = room_bytes;
    // Everything this piece needs is at or below the top of its range,
    // committed long ago: a backend reading from a replica needs no read
    // index for it.
    read_scope scope{route_, consistency_, o.backwards ? cursor_.hi() : until};
    auto s = store_.backend_->stream(original_, o, c);
    s->next(piece);
    used_backend_ = true;
    if (piece.empty()) {
      // Nothing more below the cache: forward, go on from its low end;
      // backwards, the range is exhausted.
      if (o.backwards)
        cursor_.close();
      else
        cursor_.passed(until);
      return false;
    }
    return true;
  }

  // Whether a piece may join a chunk: each piece holds at least one event,
  // but a chunk that has some takes no event past its byte bound (that one
  // starts the next chunk, as in the stores).
  static bool fits(const std::vector<sequenced_event>& chunk,
                   const std::vector<sequenced_event>& piece,
                   std::size_t room_bytes) {
    if (chunk.empty() || piece.empty())
      return true;
    auto& e = piece.front().event;
    return e.data.size() + e.metadata.size() <= room_bytes;
  }

  cached_event_store& store_;
  query original_;
  query query_;
  read_cursor cursor_;
  stream_options chunking_;
  std::uint64_t head_;
  cache_route route_;
  read_consistency consistency_;
  bool used_cache_ = false;
  bool used_backend_ = false;
};

// -- cached_event_store -------------------------------------------------------

cached_event_store::cached_event_store(std::shared_ptr<event_store> backend,
                                       std::shared_ptr<event_cache> cache,
                                       std::shared_ptr<read_index> index,
                                       cached_store_config cfg)
  : event_store(backend->input_limits())
  , backend_(std::move(backend))
  , cache_(std::move(cache))
  , index_(std::move(index))
  , cfg_(std::move(cfg)) {
  if (!cache_->started())
    cache_->start(backend_->head());
}

std::vector<append_result> cached_event_store::append_validated(
  const std::vector<validated_append>& group) {
  return append_prechecked(group, {});
}

std::vector<append_result> cached_event_store::append_prechecked(
  const std::vector<validated_append>& group,
  std::span<const std::uint64_t> checked_through) {
  std::vector<std::uint64_t> clean(group.size(), 0);
  for (std::size_t i = 0; i < group.size(); ++i) {
    if (i < checked_through.size())
      clean[i] = checked_through[i];
    auto& c = group[i].condition();
    if (!c || c->fail_if_events_match.matches_all())
      continue;
    auto check = cache_->check_condition(c->fail_if_events_match,
                                         c->after.value_or(0));
    if (check.result == condition_check::matched)
      clean[i] = condition_fails;
    else if (check.result == condition_check::clean)
      clean[i] = std::max(clean[i], check.through);
  }
  auto results = backend_->append_prechecked(group, clean);
  // The accepted events, as the backend stored them, in position order.
  std::vector<sequenced_event> accepted;
  for (std::size_t i = 0; i < group.size() && i < results.size(); ++i) {
    auto& r = results[i];
    if (!r.ok())
      continue;
    if (r.recorded_at == std::chrono::system_clock::time_point{})
      return results; // unknown commit time: the bus feeds these
    auto& events = group[i].events();
    auto pos = r.last_position - events.size() + 1;
    for (auto& e : events)
      accepted.push_back(sequenced_event{pos++, r.recorded_at, e});
  }
  if (accepted.empty())
    return results;
  std::sort(accepted.begin(), accepted.end(), [](auto& a, auto& b) {
    return a.position < b.position;
  });
  cache_->extend(accepted);
  return results;
}

std::unique_ptr<event_stream>
cached_event_store::open(const query& q, const read_options& options,
                         const stream_options& chunking, cache_route route,
                         read_consistency consistency,
                         std::optional<std::uint64_t>& index_out) {
  auto normalized = validate_read(q, options, input_limits());
  if (!cache_->started())
    return nullptr;
  // Worth it when the cache holds where the scan starts (backwards), or
  // the end of the range (forward: the part below the cache's low end is
  // read from the backend first). A forward read past the cache's head
  // wants what the cache does not have yet.
  auto range = range_of(options);
  auto lo = cache_->lo();
  auto hi = cache_->hi();
  auto useful = options.backwards
                  ? std::min(range.hi, hi) > lo
                  : range.lo <= hi && std::min(range.hi, hi) > lo;
  if (!useful)
    return nullptr;
  if (consistency == read_consistency::linearizable) {
    auto index = index_->get();
    if (!index)
      return nullptr;
    index_out = index;
    if (!await_cache(*cache_, *index,
                     std::chrono::steady_clock::now() + cfg_.wait,
                     cfg_.on_behind))
      return nullptr;
  }
  return std::make_unique<stream_impl>(*this, q, std::move(normalized), options,
                                       chunking, cache_->hi(), route,
                                       consistency);
}

read_result cached_event_store::read(const query& q,
                                     const read_options& options) {
  auto [route, consistency] = scope_or(cache_route::read);
  if (consistency == read_consistency::database)
    return backend_->read(q, options);
  stream_options whole;
  whole.chunk_events = std::numeric_limits<std::size_t>::max();
  whole.chunk_bytes = std::numeric_limits<std::size_t>::max();
  std::optional<std::uint64_t> index;
  auto s = open(q, options, whole, route, consistency, index);
  if (!s) {
    cache_->record(route, cache_outcome::miss);
    // The read index taken, if any, is what the backend's answer must see.
    read_scope scope{route, consistency, must_see_or(index)};
    return backend_->read(q, options);
  }
  read_result out;
  std::vector<sequenced_event> chunk;
  while (s->next(chunk)) {
    if (out.events.empty())
      out.events.swap(chunk);
    else
      out.events.insert(out.events.end(),
                        std::make_move_iterator(chunk.begin()),
                        std::make_move_iterator(chunk.end()));
  }
  out.head = s->head();
  return out;
}

std::unique_ptr<event_stream>
cached_event_store::stream(const query& q, const read_options& options,
                           const stream_options& chunking) {
  auto [route, consistency] = scope_or(cache_route::stream);
  if (consistency == read_consistency::database)
    return backend_->stream(q, options, chunking);
  std::optional<std::uint64_t> index;
  if (auto s = open(q, options, chunking, route, consistency, index))
    return s;
  cache_->record(route, cache_outcome::miss);
  read_scope scope{route, consistency, must_see_or(index)};
  return backend_->stream(q, options, chunking);
}

std::uint64_t cached_event_store::head() {
  return backend_->head();
}

std::uint64_t cached_event_store::reconnects() const noexcept {
  return backend_->reconnects();
}

bool await_cache(event_cache& cache, std::uint64_t index,
                 std::chrono::steady_clock::time_point until,
                 const std::function<void(std::uint64_t)>& on_behind) {
  if (cache.hi() >= index)
    return true;
  if (on_behind)
    on_behind(index);
  auto reached = cache.wait_for(index, until);
  cache.record_wait(!reached);
  return reached;
}

bool cache_may_answer(const event_cache& cache, const read_options& options,
                      const query& q) {
  read_cursor cursor{options};
  return cache.covers(q, cursor.lo());
}

std::optional<cache_answer>
visit_from_cache(event_cache& cache, const query& q,
                 const read_options& options, std::uint64_t index,
                 std::size_t max_events, const limits& lim,
                 const std::function<void(const sequenced_event&)>& sink) {
  if (!cache.started())
    return std::nullopt;
  auto head = cache.hi();
  if (head < index)
    return std::nullopt;
  auto normalized = validate_read(q, options, lim);
  read_cursor cursor{options};
  cursor.cap(head);
  cache_answer out;
  out.head = head;
  if (!cursor.done()) {
    // One more than allowed tells "too many" from "exactly enough"; the
    // read's own limit may stop it earlier, and then it is complete.
    auto room = std::min<std::uint64_t>(cursor.remaining(),
                                        std::uint64_t{max_events} + 1);
    std::uint64_t next = 0;
    std::uint64_t snapshot = 0;
    auto count = [&out, &sink](const sequenced_event& e) {
      ++out.events;
      sink(e);
    };
    if (!cache.visit(normalized, cursor.lo(), cursor.hi(), cursor.backwards(),
                     room, std::numeric_limits<std::size_t>::max(), count, next,
                     snapshot))
      return std::nullopt;
    if (out.events > max_events)
      return std::nullopt;
    // A backward scan that ran into the cache's low end (it evicted since
    // the caller checked) before the range's did not see it all.
    if (cursor.backwards() && out.events < room && next >= cursor.lo())
      return std::nullopt;
  }
  cache.record(cache_route::read, cache_outcome::hit);
  return out;
}

std::optional<decision>
project_from_cache(event_cache& cache, const std::vector<projector>& projectors,
                   std::uint64_t index, const limits& lim,
                   const stream_options& chunking, std::uint64_t max_events) {
  if (!cache.started())
    return std::nullopt;
  auto head = cache.hi();
  if (head < index)
    return std::nullopt;
  if (projectors.empty()) // as `project`: nothing read
    return decision_fold{projectors}.finish({}, 0);
  auto q = union_query(projectors);
  auto normalized = validate_read(q, read_options{}, lim);
  if (!cache.covers(normalized, 1))
    return std::nullopt;
  decision_fold fold{projectors};
  read_cursor cursor{read_options{}};
  cursor.cap(head);
  auto room = std::max<std::size_t>(chunking.chunk_events, 1);
  std::vector<sequenced_event> piece;
  std::uint64_t applied = 0;
  while (!cursor.done()) {
    piece.clear();
    std::uint64_t next = 0;
    std::uint64_t snapshot = 0;
    if (!cache.collect(normalized, cursor.lo(), cursor.hi(), false,
                       std::min<std::uint64_t>(cursor.remaining(), room),
                       chunking.chunk_bytes, piece, next, snapshot))
      return std::nullopt; // evicted past where this piece starts
    if (piece.size() > max_events - applied)
      return std::nullopt; // more than the caller takes on
    applied += piece.size();
    for (auto& e : piece)
      fold.apply(e);
    cursor.passed(next - 1, piece.size());
  }
  cache.record(cache_route::project, cache_outcome::hit);
  return fold.finish(std::move(q), head);
}

std::shared_ptr<read_index>
make_read_index(std::shared_ptr<event_store> store) {
  return std::make_shared<read_index>([store] {
    return store->head();
  });
}

} // namespace dcbd
