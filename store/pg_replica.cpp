#include "store/pg_replica.hpp"

#include "store/cached_store.hpp"
#include "store/pg_internal.hpp"
#include "store/pg_pool.hpp"
#include "store/pg_read.hpp"
#include "store/read_cursor.hpp"
#include "store/validation.hpp"

#include <pqxx/nontransaction>

#include <algorithm>
#include <iostream>
#include <utility>

namespace dcbd {

namespace {

using steady = std::chrono::steady_clock;

bool on_primary(replica_route r) noexcept {
  return r != replica_route::replica_caught_up
         && r != replica_route::replica_waited;
}

// `options` capped at `h`: forward reads end at h at the latest, backward
// reads start there at the latest, so the answer is the log as it was at
// h whatever the standby has replayed past it.
read_options capped(read_options options, std::uint64_t h) {
  if (options.backwards)
    options.from = std::min(options.from.value_or(h), h);
  else
    options.until = std::min(options.until.value_or(h), h);
  return options;
}

} // namespace

const char* served_by(replica_route r) noexcept {
  return on_primary(r) ? "primary" : "replica";
}

const char* reason_of(replica_route r) noexcept {
  switch (r) {
    case replica_route::replica_caught_up:
      return "caught_up";
    case replica_route::replica_waited:
      return "waited";
    case replica_route::primary_lagging:
      return "lagging";
    case replica_route::primary_down:
      return "down";
    case replica_route::primary_failed:
      return "failed";
    case replica_route::primary_no_index:
      return "no_index";
  }
  return "failed";
}

std::uint64_t replica_stats::by_replica() const noexcept {
  return reads[static_cast<std::size_t>(replica_route::replica_caught_up)]
         + reads[static_cast<std::size_t>(replica_route::replica_waited)];
}

std::uint64_t replica_stats::by_primary() const noexcept {
  std::uint64_t n = 0;
  for (auto x : reads)
    n += x;
  return n - by_replica();
}

std::string with_connect_timeout(const std::string& dsn, int seconds) {
  if (dsn.find("connect_timeout") != std::string::npos)
    return dsn;
  auto setting = "connect_timeout=" + std::to_string(seconds);
  if (dsn.rfind("postgresql://", 0) == 0 || dsn.rfind("postgres://", 0) == 0)
    return dsn + (dsn.find('?') == std::string::npos ? '?' : '&') + setting;
  return dsn.empty() ? setting : dsn + ' ' + setting;
}

// -- standby ------------------------------------------------------------------

standby::standby(replica_config cfg, std::string schema)
  : cfg_(std::move(cfg))
  , schema_(std::move(schema)) {
  pg::check_schema_name(schema_);
  cfg_.poll = std::max(cfg_.poll, std::chrono::milliseconds{1});
  cfg_.backoff_min = std::max(cfg_.backoff_min, std::chrono::milliseconds{1});
  cfg_.backoff_max = std::max(cfg_.backoff_max, cfg_.backoff_min);
}

replica_stats standby::stats() const {
  replica_stats s;
  for (std::size_t i = 0; i < replica_routes; ++i)
    s.reads[i] = reads_[i].load(std::memory_order_relaxed);
  std::lock_guard lock{mtx_};
  s.replayed = replayed_;
  s.lag = lag_;
  s.up = !down_;
  s.failures = failures_;
  s.polls = looks_;
  return s;
}

bool standby::usable(bool& probe) {
  probe = false;
  std::lock_guard lock{mtx_};
  if (!down_)
    return true;
  if (probing_ || steady::now() < retry_at_)
    return false;
  probing_ = true;
  probe = true;
  return true;
}

void standby::failed(const std::string& what, bool probe) {
  bool went_down = false;
  std::chrono::milliseconds backoff{0};
  {
    std::lock_guard lock{mtx_};
    ++failures_;
    if (!down_) {
      went_down = true;
      backoff_ = cfg_.backoff_min;
    } else if (probe) {
      backoff_ = std::min(backoff_ * 2, cfg_.backoff_max);
    } else {
      // A read that started before the standby went down: the backoff
      // already runs.
      return;
    }
    down_ = true;
    probing_ = false;
    retry_at_ = steady::now() + backoff_;
    backoff = backoff_;
    prompt_ = false;
  }
  if (went_down) {
    std::cerr << "dcbd replica: the standby failed (" << what
              << "); reads go to the primary, the standby is tried again in "
              << backoff.count() << " ms" << std::endl;
    if (cfg_.metrics)
      cfg_.metrics->up(false);
  }
}

void standby::answered(bool probe) {
  if (!probe)
    return;
  {
    std::lock_guard lock{mtx_};
    probing_ = false;
    if (!down_)
      return;
    down_ = false;
    backoff_ = std::chrono::milliseconds{0};
  }
  std::cerr << "dcbd replica: the standby answers again; reads use it"
            << std::endl;
  if (cfg_.metrics)
    cfg_.metrics->up(true);
}

bool standby::has(std::uint64_t h) const {
  std::lock_guard lock{mtx_};
  return seen_ && replayed_ >= h;
}

void standby::observed(std::optional<std::uint64_t> replayed, std::uint64_t h) {
  std::uint64_t now_replayed = 0;
  std::uint64_t lag = 0;
  {
    std::lock_guard lock{mtx_};
    if (replayed) {
      seen_ = true;
      replayed_ = std::max(replayed_, *replayed);
    }
    lag_ = replayed && *replayed >= h ? 0 : h - (replayed ? *replayed : 0);
    now_replayed = replayed_;
    lag = lag_;
  }
  looked_.notify_all();
  if (cfg_.metrics)
    cfg_.metrics->replay(now_replayed, lag);
}

bool standby::wait_for(
  std::uint64_t h, steady::time_point deadline,
  const std::function<std::optional<std::uint64_t>()>& look, bool& behind) {
  std::unique_lock lock{mtx_};
  // Looks are numbered as they start; one numbered past `entry` started
  // after this call began.
  auto entry = looks_started_;
  for (;;) {
    if (seen_ && replayed_ >= h)
      return true;
    auto now = steady::now();
    bool fresh = looks_ > entry;
    if (fresh)
      behind = true;
    if (looking_) {
      if (now >= deadline) {
        behind = true;
        return false;
      }
      looked_.wait_until(lock, deadline);
      continue;
    }
    if (fresh) {
      if (now >= deadline)
        return false;
      // Looks are a poll interval apart.
      auto next = last_look_ + cfg_.poll;
      if (now < next) {
        looked_.wait_until(lock, std::min(next, deadline));
        continue;
      }
    }
    looking_ = true;
    auto ticket = ++looks_started_;
    lock.unlock();
    std::optional<std::uint64_t> replayed;
    try {
      replayed = look();
    } catch (...) {
      lock.lock();
      looking_ = false;
      looks_ = ticket;
      last_look_ = steady::now();
      lock.unlock();
      looked_.notify_all();
      throw;
    }
    observed(replayed, h);
    lock.lock();
    looking_ = false;
    looks_ = ticket;
    last_look_ = steady::now();
    looked_.notify_all();
  }
}

std::chrono::milliseconds standby::budget() const noexcept {
  return lagging_.load(std::memory_order_relaxed) ? std::chrono::milliseconds{0}
                                                  : cfg_.wait;
}

void standby::served(bool first_look) {
  lagging_.store(false, std::memory_order_relaxed);
  prompt_.store(first_look, std::memory_order_relaxed);
}

void standby::lagged() {
  lagging_.store(true, std::memory_order_relaxed);
  prompt_.store(false, std::memory_order_relaxed);
}

void standby::count(replica_route r) {
  reads_[static_cast<std::size_t>(r)].fetch_add(1, std::memory_order_relaxed);
  if (cfg_.metrics)
    cfg_.metrics->routed(r);
}

// -- the stream ---------------------------------------------------------------

// A stream served by the standby at head h. If the standby fails midway,
// the rest comes from the primary, capped at h: everything at or below h
// is committed and the same there, so the chunks join into one snapshot.
class replica_event_store::stream_impl final : public event_stream {
public:
  stream_impl(replica_event_store& store, query q, const read_options& options,
              const stream_options& chunking, std::uint64_t h,
              std::unique_ptr<event_stream> inner)
    : store_(store)
    , query_(std::move(q))
    , limited_(options.limit.has_value())
    , cursor_(options)
    , chunking_(chunking)
    , head_(h)
    , inner_(std::move(inner)) {
    cursor_.cap(h);
  }

  bool next(std::vector<sequenced_event>& chunk) override {
    chunk.clear();
    bool more = false;
    try {
      more = inner_->next(chunk);
    } catch (const std::exception& e) {
      if (!on_standby_)
        throw;
      store_.standby_->failed(e.what(), false);
      store_.standby_->count(replica_route::primary_failed);
      on_standby_ = false;
      chunk.clear();
      if (cursor_.done())
        return false;
      inner_ = store_.primary_->stream(query_, rest(), chunking_);
      more = inner_->next(chunk);
    }
    if (more)
      cursor_.passed(chunk.back().position, chunk.size());
    return more;
  }

  std::uint64_t head() const noexcept override {
    return head_;
  }

private:
  // What is left of the read, for the primary.
  read_options rest() const {
    read_options o;
    o.backwards = cursor_.backwards();
    if (limited_)
      o.limit = cursor_.remaining();
    if (o.backwards) {
      o.from = cursor_.hi();
    } else {
      o.from = cursor_.lo();
      o.until = cursor_.hi();
    }
    return o;
  }

  replica_event_store& store_;
  query query_;
  bool limited_;
  read_cursor cursor_;
  stream_options chunking_;
  std::uint64_t head_;
  std::unique_ptr<event_stream> inner_;
  bool on_standby_ = true;
};

// -- replica_event_store ------------------------------------------------------

replica_event_store::replica_event_store(std::shared_ptr<event_store> primary,
                                         std::shared_ptr<standby> replica,
                                         std::shared_ptr<read_index> index,
                                         std::size_t connections)
  : event_store(primary->input_limits())
  , primary_(std::move(primary))
  , standby_(std::move(replica))
  , index_(std::move(index)) {
  const auto& rc = standby_->config();
  pg_config pc;
  pc.dsn = with_connect_timeout(rc.dsn, rc.connect_timeout_s);
  pc.schema = standby_->schema();
  pc.pool_size = std::max<std::size_t>(connections, 1);
  // One attempt per read: a standby that does not take a connection is
  // backed off (see `standby::failed`), not retried under the read.
  pc.connect_timeout = std::chrono::milliseconds{0};
  pc.limits = input_limits();
  pool_ = std::make_unique<pg_pool>(std::move(pc));
  head_sql_ = "SELECT position FROM " + pg::quoted(standby_->schema())
              + ".head";
}

replica_event_store::~replica_event_store() = default;

std::vector<append_result> replica_event_store::append_validated(
  const std::vector<validated_append>& group) {
  return primary_->append_validated(group);
}

std::vector<append_result> replica_event_store::append_prechecked(
  const std::vector<validated_append>& group,
  std::span<const std::uint64_t> checked_through) {
  return primary_->append_prechecked(group, checked_through);
}

std::optional<std::uint64_t> replica_event_store::must_see() {
  if (auto scope = read_scope::current(); scope && scope->must_see())
    return scope->must_see();
  return index_->get();
}

std::optional<std::uint64_t> replica_event_store::look() {
  return pool_->with_connection(
    [this](pg_pool::lease& l) -> std::optional<std::uint64_t> {
      try {
        pqxx::nontransaction tx{l.conn()};
        return tx.exec1(head_sql_)[0].as<std::uint64_t>();
      } catch (const pqxx::undefined_table&) {
        // The schema was made on the primary and is not replayed yet.
        return std::nullopt;
      }
    });
}

replica_route replica_event_store::route(
  std::uint64_t h, const std::function<std::uint64_t(std::uint64_t)>& attempt) {
  bool probe = false;
  if (!standby_->usable(probe))
    return replica_route::primary_down;
  try {
    bool behind = false;
    // Known to be there, or it kept up lately: read at once; the read's
    // own snapshot head says whether it had replayed h.
    if (standby_->has(h) || standby_->prompt()) {
      auto r = attempt(h);
      standby_->observed(r, h);
      if (r >= h) {
        standby_->answered(probe);
        standby_->served(true);
        return replica_route::replica_caught_up;
      }
      behind = true;
    }
    auto deadline = steady::now() + standby_->budget();
    auto reached = standby_->wait_for(
      h, deadline,
      [this] {
        return look();
      },
      behind);
    if (!reached) {
      standby_->answered(probe);
      standby_->lagged();
      return replica_route::primary_lagging;
    }
    auto r = attempt(h);
    standby_->observed(r, h);
    standby_->answered(probe);
    if (r < h) {
      // Its head went back: another server behind the same address.
      standby_->lagged();
      return replica_route::primary_lagging;
    }
    standby_->served(!behind);
    return behind ? replica_route::replica_waited
                  : replica_route::replica_caught_up;
  } catch (const std::exception& e) {
    standby_->failed(e.what(), probe);
    return replica_route::primary_failed;
  }
}

read_result replica_event_store::read(const query& q,
                                      const read_options& options) {
  auto normalized = validate_read(q, options, input_limits());
  auto h = must_see();
  if (!h) {
    standby_->count(replica_route::primary_no_index);
    return primary_->read(q, options);
  }
  read_result out;
  auto r = route(*h, [&](std::uint64_t head) {
    out = pg::read(*pool_, standby_->schema(), normalized,
                   capped(options, head));
    return out.head;
  });
  standby_->count(r);
  if (on_primary(r))
    return primary_->read(q, options);
  out.head = *h;
  return out;
}

std::unique_ptr<event_stream>
replica_event_store::stream(const query& q, const read_options& options,
                            const stream_options& chunking) {
  auto normalized = validate_read(q, options, input_limits());
  auto h = must_see();
  if (!h) {
    standby_->count(replica_route::primary_no_index);
    return primary_->stream(q, options, chunking);
  }
  std::unique_ptr<event_stream> s;
  auto r = route(*h, [&](std::uint64_t head) {
    s = pg::open_stream(*pool_, standby_->schema(), normalized,
                        capped(options, head), chunking);
    return s->head();
  });
  standby_->count(r);
  if (on_primary(r))
    return primary_->stream(q, options, chunking);
  return std::make_unique<stream_impl>(*this, q, options, chunking, *h,
                                       std::move(s));
}

std::uint64_t replica_event_store::head() {
  return primary_->head();
}

std::uint64_t replica_event_store::reconnects() const noexcept {
  return primary_->reconnects();
}

} // namespace dcbd
