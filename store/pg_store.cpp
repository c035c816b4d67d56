#include "store/pg_store.hpp"

#include "store/matching.hpp"
#include "store/pg_internal.hpp"
#include "store/validation.hpp"

#include <pqxx/pqxx>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>
#include <unordered_set>

namespace dcbd {

// -- helpers -----------------------------------------------------------------

namespace pg {

void check_schema_name(const std::string& name) {
  auto ok = !name.empty() && name.size() <= 63
            && (std::islower(static_cast<unsigned char>(name[0]))
                || name[0] == '_');
  for (char c : name)
    ok = ok
         && (std::islower(static_cast<unsigned char>(c))
             || std::isdigit(static_cast<unsigned char>(c)) || c == '_');
  if (!ok)
    throw store_error{errc::invalid_argument,
                      "schema: '" + name
                        + "' is not a lower-case identifier of 1-63 "
                          "characters ([a-z_][a-z0-9_]*)"};
}

std::string quoted(const std::string& schema) {
  check_schema_name(schema);
  return '"' + schema + '"';
}

void append_array_element(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    if (c == '"' || c == '\\')
      out += '\\';
    out += c;
  }
  out += '"';
}

std::string text_array(const std::vector<std::string>& xs) {
  std::string out = "{";
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (i > 0)
      out += ',';
    append_array_element(out, xs[i]);
  }
  out += '}';
  return out;
}

bool is_unavailable(const pqxx::sql_error& e) {
  const auto& state = e.sqlstate();
  // 08: connection exception; 57P: operator intervention (shutdown,
  // terminated backend); 53: insufficient resources (too many connections).
  return state.rfind("08", 0) == 0 || state.rfind("57P", 0) == 0
         || state.rfind("53", 0) == 0;
}

} // namespace pg

namespace {

constexpr auto max_pos = std::numeric_limits<std::int64_t>::max();

// Incrementally builds a PostgreSQL array literal.
class array_builder {
public:
  void add(std::int64_t x) {
    sep();
    out_ += std::to_string(x);
  }

  void add(std::string_view s) {
    sep();
    pg::append_array_element(out_, s);
  }

  std::string str() const {
    return out_ + '}';
  }

private:
  void sep() {
    if (out_.size() > 1)
      out_ += ',';
  }

  std::string out_ = "{";
};

} // namespace

// The flat arrays `append_group` (the SQL function) takes.
struct pg::group_arrays {
  array_builder req_kind, req_after, req_nev;
  array_builder ev_req, ev_idx, ev_type, ev_tag_off, ev_tag_cnt, tags;
  array_builder ev_data_off, ev_data_len, ev_meta_off, ev_meta_len;
  std::string data, meta;
  array_builder it_req, it_type_off, it_type_cnt, it_types;
  array_builder it_tag_off, it_tag_cnt, it_tags;
  array_builder dep_req, dep_on, dep_off;
  // Per request: 1-based index of its last event among all events.
  array_builder req_last_event;
  // Whether any request has a condition.
  bool conditional = false;
};

namespace {

enum condition_kind : std::int16_t { unconditional = 0, items = 1, all = 2 };

condition_kind kind_of(const append_request& req) {
  if (!req.condition)
    return unconditional;
  return req.condition->fail_if_events_match.matches_all() ? all : items;
}

// The events of the requests of a group seen so far, indexed by tag and
// type, so that finding which of them a condition matches looks only at
// events that share a tag or type with it (not at the whole group).
class group_index {
public:
  // Adds the events of request `r` (0-based, in group order).
  void add(std::size_t r, const std::vector<event>& events) {
    for (std::size_t k = 0; k < events.size(); ++k) {
      const auto& e = events[k];
      event_ref ref{r, k, &e};
      by_type_[e.type].push_back(ref);
      for (const auto& t : e.tags)
        by_tag_[t].push_back(ref);
    }
  }

  // Returns, for each earlier request with an event matching `q`, the
  // request and the index of its last such event, ordered by request.
  std::vector<std::pair<std::size_t, std::size_t>>
  last_matches(const query& q) const {
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

private:
  struct event_ref {
    std::size_t req;
    std::size_t idx;
    const event* e;
  };
  using refs = std::vector<event_ref>;

  // Every event an item can match is in the list of its rarest tag, or
  // (for a type-only item) in the lists of its types.
  std::vector<const refs*> candidates(const query_item& item) const {
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

  std::unordered_map<std::string_view, refs> by_type_;
  std::unordered_map<std::string_view, refs> by_tag_;
};

// Fills the arrays for the requests `reqs[idx[0..]]`, all validated.
pg::group_arrays flatten(const std::vector<append_request>& reqs,
                         const std::vector<std::size_t>& idx) {
  pg::group_arrays a;
  group_index earlier;
  std::int64_t n_events = 0, n_tags = 0, n_types = 0, n_itags = 0;
  for (std::size_t r = 0; r < idx.size(); ++r) {
    const auto& req = reqs[idx[r]];
    auto kind = kind_of(req);
    auto req_no = static_cast<std::int64_t>(r + 1);
    a.req_kind.add(kind);
    a.req_after.add(req.condition ? static_cast<std::int64_t>(
                      req.condition->after.value_or(0))
                                  : 0);
    a.req_nev.add(static_cast<std::int64_t>(req.events.size()));
    n_events += static_cast<std::int64_t>(req.events.size());
    a.req_last_event.add(n_events);
    a.conditional = a.conditional || kind != unconditional;
    for (std::size_t i = 0; i < req.events.size(); ++i) {
      const auto& e = req.events[i];
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
      for (const auto& item : req.condition->fail_if_events_match.items) {
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
          static_cast<std::int64_t>(reqs[idx[j]].events.size() - 1));
      }
    } else if (kind == items) {
      for (auto [j, k] :
           earlier.last_matches(req.condition->fail_if_events_match)) {
        a.dep_req.add(req_no);
        a.dep_on.add(static_cast<std::int64_t>(j + 1));
        a.dep_off.add(static_cast<std::int64_t>(k));
      }
    }
    earlier.add(r, req.events);
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

std::size_t payload_bytes(const append_request& req) {
  std::size_t n = 0;
  for (const auto& e : req.events)
    n += e.data.size() + e.metadata.size();
  return n;
}

// The SQL function takes one bytea per payload kind; keep each well below
// PostgreSQL's 1 GB value limit by splitting very large groups.
constexpr std::size_t max_group_payload = std::size_t{256} << 20;

// A group without conditions needs no check, so it is one plain statement
// instead of a function call: the UPDATE takes the head lock (waiting for
// the current holder and then reading its committed head) and reserves the
// positions; the INSERT fills them; the outcome row and the notification
// commit with them. Same invariants as `append_group`, less overhead.
std::string unconditional_sql(const std::string& schema) {
  auto s = pg::quoted(schema);
  return "WITH h AS (UPDATE " + s
         + ".head SET position = position + "
           "cardinality($3::text[]) RETURNING position - "
           "cardinality($3::text[])"
           " AS base), "
           "ins AS (INSERT INTO "
         + s
         + ".events (position, type, tags, data, metadata) "
           "SELECT h.base + e.ord, e.type, "
           "($6::text[])[e.toff : e.toff + e.tcnt - 1], "
           "substring($9::bytea FROM e.doff FOR e.dlen), "
           "substring($12::bytea FROM e.moff FOR e.mlen) "
           "FROM h, unnest($3::text[], $4::int[], $5::int[], $7::int[], "
           "$8::int[], $10::int[], $11::int[]) WITH ORDINALITY "
           "AS e(type, toff, tcnt, doff, dlen, moff, mlen, ord)), "
           "res AS (SELECT array_agg(h.base + r.last ORDER BY r.k) AS results "
           "FROM h, unnest($2::bigint[]) WITH ORDINALITY AS r(last, k)), "
           "o AS (INSERT INTO "
         + s
         + ".append_outcomes (token, results) SELECT $1::bigint, results "
           "FROM res), "
           "prune AS (DELETE FROM "
         + s
         + ".append_outcomes WHERE $1::bigint % 1024 = 0 AND token < "
           "$1::bigint - (600000000::bigint << 12)) "
           "SELECT res.results, pg_notify($13::text, (h.base + "
           "cardinality($3::text[]))::text) FROM res, h";
}

// A group's outcome token: microseconds since 2024 in the high bits (so
// outcome rows arrive in key order) and 12 random bits. Two groups that draw
// the same token are told apart by the primary key: the second statement
// fails as a whole and is retried with a new token.
std::int64_t group_token() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  constexpr auto epoch_2024 = std::int64_t{1'704'067'200'000'000};
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(
              std::chrono::system_clock::now().time_since_epoch())
              .count();
  return ((us - epoch_2024) << 12) | static_cast<std::int64_t>(rng() & 0xFFF);
}

} // namespace

// -- connection pool ---------------------------------------------------------

namespace {

// A pooled connection and the statements prepared on it.
struct pool_slot {
  std::unique_ptr<pqxx::connection> conn;
  std::unordered_set<std::string> prepared;
};

} // namespace

// Borrows a connection; returns it to the pool unless it broke.
class pg_event_store::pool_lease {
public:
  pool_lease(pool& owner, std::unique_ptr<pool_slot> s)
    : owner_(owner)
    , slot_(std::move(s)) {
    // nop
  }

  pool_lease(const pool_lease&) = delete;
  pool_lease& operator=(const pool_lease&) = delete;

  ~pool_lease();

  pqxx::connection& conn() {
    return *slot_->conn;
  }

  // Returns `name` after preparing it as `sql` on this connection, the
  // first time only.
  const std::string& statement(const std::string& name,
                               const std::string& sql) {
    auto [i, added] = slot_->prepared.insert(name);
    if (added)
      slot_->conn->prepare(name, sql);
    return *i; // set nodes are stable
  }

  void mark_broken() {
    broken_ = true;
  }

private:
  pool& owner_;
  std::unique_ptr<pool_slot> slot_;
  bool broken_ = false;
};

class pg_event_store::pool {
public:
  using slot = pool_slot;
  using lease = pool_lease;

  explicit pool(const pg_config& cfg) : cfg_(cfg) {
    // nop
  }

  // Runs `f(lease&)`, marking the connection broken on connection errors
  // and translating exceptions into `store_error`.
  template <class F>
  auto with_connection(F&& f) {
    return pg::guarded([&] {
      lease l{*this, acquire()};
      try {
        return f(l);
      } catch (const pqxx::broken_connection&) {
        l.mark_broken();
        throw;
      } catch (const pqxx::sql_error& e) {
        if (pg::is_unavailable(e) || !l.conn().is_open())
          l.mark_broken();
        throw;
      }
    });
  }

  // Runs a read as an unnamed statement, which PostgreSQL plans with the
  // actual parameter values. (A named prepared statement switches to a
  // generic plan after five runs, and for tag reads the generic plan walks
  // the whole primary key instead of using the tag index.)
  pqxx::result query(const std::string& sql,
                     const std::vector<std::string>& params) {
    return with_connection([&](lease& l) {
      pqxx::nontransaction tx{l.conn()};
      return tx.exec_params(sql, pqxx::prepare::make_dynamic_params(params));
    });
  }

  std::unique_ptr<slot> acquire() {
    {
      std::unique_lock guard{mtx_};
      cv_.wait(guard, [this] {
        return !idle_.empty() || open_ < cap();
      });
      if (!idle_.empty()) {
        auto s = std::move(idle_.back());
        idle_.pop_back();
        return s;
      }
      ++open_;
    }
    try {
      return connect();
    } catch (...) {
      std::lock_guard guard{mtx_};
      --open_;
      cv_.notify_one();
      throw;
    }
  }

  std::uint64_t reconnects() const noexcept {
    auto n = opened_.load();
    return n > 0 ? n - 1 : 0;
  }

private:
  std::size_t cap() const noexcept {
    return std::max<std::size_t>(cfg_.pool_size, 1);
  }

public:
  void give_back(std::unique_ptr<slot> s, bool broken) {
    std::lock_guard guard{mtx_};
    if (broken || !s->conn->is_open())
      --open_;
    else
      idle_.push_back(std::move(s));
    cv_.notify_one();
  }

private:
  // Opens a connection, retrying with exponential backoff until
  // `connect_timeout` has passed.
  std::unique_ptr<slot> connect() {
    auto deadline = std::chrono::steady_clock::now() + cfg_.connect_timeout;
    auto backoff = std::chrono::milliseconds{10};
    for (;;) {
      try {
        auto s = std::make_unique<slot>();
        s->conn = std::make_unique<pqxx::connection>(cfg_.dsn);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        // A lost connection is replaced by the pool, never silently
        // re-opened by libpqxx under a statement.
        s->conn->inhibit_reactivation(true);
#pragma GCC diagnostic pop
        // Store statements are short; JIT compilation only adds latency.
        pqxx::nontransaction{*s->conn}.exec("SET jit = off");
        opened_.fetch_add(1);
        return s;
      } catch (const pqxx::broken_connection& e) {
        if (std::chrono::steady_clock::now() + backoff > deadline)
          throw store_error{errc::unavailable,
                            std::string{"cannot connect to PostgreSQL: "}
                              + e.what()};
        std::this_thread::sleep_for(backoff);
        backoff = std::min(backoff * 2, std::chrono::milliseconds{1000});
      }
    }
  }

  const pg_config& cfg_;
  std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<slot>> idle_;
  std::size_t open_ = 0;
  std::atomic<std::uint64_t> opened_{0};
};

pg_event_store::pool_lease::~pool_lease() {
  owner_.give_back(std::move(slot_), broken_);
}

// -- reads -------------------------------------------------------------------

namespace {

// One page of a read: the SQL and its parameters. Rows are
// (head, position, type, tags, data, metadata, recorded_at_us); a page with
// no events is one row with a NULL position, so the head always comes back
// from the same snapshot as the events. Every event visible in that snapshot
// is at or below its head (an append commits its events and the new head
// together), so the page needs no head bound; constant bounds also let the
// planner pick the tag index instead of walking the primary key.
struct page_query {
  std::string sql;
  std::vector<std::string> params;
};

// Events in [lo, hi] matching `q`, in the read's direction, at
// most `limit`, and with `max_bytes` set: the longest prefix of at most that
// many payload bytes (at least one event).
page_query make_page(const std::string& schema, const query& q, bool backwards,
                     std::uint64_t lo, std::uint64_t hi, std::uint64_t limit,
                     std::optional<std::size_t> max_bytes) {
  page_query p;
  auto s = pg::quoted(schema);
  auto param = [&p](std::string v) {
    p.params.push_back(std::move(v));
    return "$" + std::to_string(p.params.size());
  };
  auto clamp = [](std::uint64_t v) {
    return std::to_string(std::min<std::uint64_t>(v, max_pos));
  };
  const char* dir = backwards ? " DESC" : "";
  std::string where = "x.position >= " + param(clamp(lo))
                      + "::bigint AND x.position <= " + param(clamp(hi))
                      + "::bigint";
  if (!q.matches_all()) {
    where += " AND (";
    for (std::size_t k = 0; k < q.items.size(); ++k) {
      const auto& item = q.items[k];
      if (k > 0)
        where += " OR ";
      where += '(';
      if (!item.types.empty())
        where += "x.type = ANY (" + param(pg::text_array(item.types))
                 + "::text[])";
      if (!item.types.empty() && !item.tags.empty())
        where += " AND ";
      if (!item.tags.empty())
        where += "x.tags @> " + param(pg::text_array(item.tags)) + "::text[]";
      where += ')';
    }
    where += ')';
  }
  std::string inner = "SELECT x.position, x.type, x.tags, x.data, x.metadata, "
                      "(extract(epoch FROM x.recorded_at) * 1000000)::bigint "
                      "AS us FROM "
                      + s + ".events x WHERE " + where + " ORDER BY x.position"
                      + dir + " LIMIT " + param(clamp(limit)) + "::bigint";
  if (max_bytes) {
    inner = "SELECT y.*, sum(octet_length(y.data) + octet_length(y.metadata))"
            " OVER (ORDER BY y.position"
            + std::string{dir} + ") AS cum, row_number() OVER (ORDER BY "
            + "y.position" + dir + ") AS rn FROM (" + inner + ") y";
  }
  p.sql = "SELECT h.position, e.position, e.type, e.tags, e.data, "
          "e.metadata, e.us FROM "
          + s + ".head h LEFT JOIN LATERAL (" + inner + ") e ON true";
  if (max_bytes)
    p.sql += " WHERE e.rn IS NULL OR e.rn = 1 OR e.cum <= "
             + param(std::to_string(std::min<std::size_t>(*max_bytes, max_pos)))
             + "::bigint";
  p.sql += " ORDER BY e.position" + std::string{dir};
  return p;
}

// Parses PostgreSQL's text output of a one-dimensional text[] without
// NULLs. (libpqxx 6.4's array_parser mistakes a leading ' for a quote.)
// Elements come double-quoted with backslash escapes when they contain
// special characters, and verbatim otherwise.
std::vector<std::string> parse_text_array(std::string_view s) {
  std::vector<std::string> out;
  if (s.size() < 2 || s.front() != '{' || s.back() != '}')
    throw store_error{errc::internal, "unexpected text[]: " + std::string{s}};
  std::size_t i = 1, end = s.size() - 1;
  while (i < end) {
    std::string elem;
    if (s[i] == '"') {
      for (++i; i < end && s[i] != '"'; ++i) {
        if (s[i] == '\\')
          ++i;
        elem += s[i];
      }
      ++i; // closing quote
    } else {
      auto stop = s.find(',', i);
      stop = stop == std::string_view::npos ? end : std::min(stop, end);
      elem.assign(s.substr(i, stop - i));
      i = stop;
    }
    out.push_back(std::move(elem));
    ++i; // the comma
  }
  return out;
}

// Appends the events of `rows` to `out`; returns the head.
std::uint64_t collect(const pqxx::result& rows,
                      std::vector<sequenced_event>& out) {
  std::uint64_t head = 0;
  out.reserve(out.size() + rows.size());
  for (const auto& row : rows) {
    head = row[0].as<std::uint64_t>();
    if (row[1].is_null())
      continue;
    sequenced_event se;
    se.position = row[1].as<std::uint64_t>();
    se.event.type = row[2].c_str();
    se.event.tags = parse_text_array({row[3].c_str(), row[3].size()});
    se.event.data = pqxx::binarystring{row[4]}.str();
    se.event.metadata = pqxx::binarystring{row[5]}.str();
    se.recorded_at = std::chrono::system_clock::time_point{
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
        std::chrono::microseconds{row[6].as<std::int64_t>()})};
    out.push_back(std::move(se));
  }
  return head;
}

} // namespace

// Keyset pagination over the snapshot capped at the head of the first page:
// positions are gap-free and in commit order, so every event at or below
// that head is committed and immutable, and later pages need no open
// transaction. Each page borrows a pooled connection only while it runs.
class pg_event_store::stream_impl final : public event_stream {
public:
  stream_impl(pg_event_store& store, query q, const read_options& opts,
              const stream_options& chunking)
    : store_(store)
    , query_(std::move(q))
    , backwards_(opts.backwards)
    , remaining_(opts.limit.value_or(std::numeric_limits<uint64_t>::max()))
    , chunking_(chunking) {
    chunking_.chunk_events = std::max<std::size_t>(chunking_.chunk_events, 1);
    auto range = range_of(opts);
    lo_ = range.lo;
    hi_ = range.hi;
    // The first page fixes the head of the snapshot, so run it now.
    fetch(pending_);
    has_pending_ = true;
  }

  bool next(std::vector<sequenced_event>& chunk) override {
    chunk.clear();
    if (has_pending_) {
      has_pending_ = false;
      chunk.swap(pending_);
    } else {
      fetch(chunk);
    }
    return !chunk.empty();
  }

  std::uint64_t head() const noexcept override {
    return head_;
  }

private:
  void fetch(std::vector<sequenced_event>& out) {
    // The first page always runs: it fixes the head of the snapshot.
    if (started_ && (done_ || remaining_ == 0 || lo_ > hi_)) {
      done_ = true;
      return;
    }
    auto n = std::min<std::uint64_t>(remaining_, chunking_.chunk_events);
    auto page = make_page(store_.cfg_.schema, query_, backwards_, lo_, hi_, n,
                          chunking_.chunk_bytes);
    auto rows = store_.pool_->query(page.sql, page.params);
    auto head = collect(rows, out);
    if (!started_) {
      started_ = true;
      head_ = head;
      hi_ = std::min(hi_, head_);
    }
    remaining_ -= out.size();
    if (out.empty()) {
      done_ = true;
      return;
    }
    auto last = out.back().position;
    if (backwards_)
      hi_ = last - 1; // lo_ >= 1, so last == 1 ends the stream
    else
      lo_ = last + 1;
  }

  pg_event_store& store_;
  query query_;
  bool backwards_;
  std::uint64_t remaining_;
  stream_options chunking_;
  std::uint64_t lo_ = 1;
  std::uint64_t hi_ = std::numeric_limits<std::uint64_t>::max();
  std::uint64_t head_ = 0;
  bool started_ = false;
  bool done_ = false;
  bool has_pending_ = false;
  std::vector<sequenced_event> pending_;
};

// -- pg_event_store ----------------------------------------------------------

pg_event_store::pg_event_store(pg_config cfg) : cfg_(std::move(cfg)) {
  install_schema(cfg_);
  auto s = pg::quoted(cfg_.schema);
  sql_.append_unconditional = unconditional_sql(cfg_.schema);
  sql_.append_group = "SELECT " + s
                      + ".append_group($1, $2, $3, $4, $5, $6, $7, $8, $9, "
                        "$10, $11, $12, $13, $14, $15, $16, $17, $18, $19, "
                        "$20, $21, $22, $23, $24, $25, $26)";
  sql_.head = "SELECT position FROM " + s + ".head";
  sql_.channel = notify_channel(cfg_.schema);
  pool_ = std::make_unique<pool>(cfg_);
}

pg_event_store::~pg_event_store() = default;

std::vector<append_result>
pg_event_store::append_group(std::vector<append_request> requests) {
  std::vector<append_result> results(requests.size());
  std::vector<std::size_t> valid;
  valid.reserve(requests.size());
  for (std::size_t i = 0; i < requests.size(); ++i) {
    try {
      validate(requests[i], cfg_.limits);
      valid.push_back(i);
    } catch (const store_error& e) {
      results[i].code = e.code();
      results[i].message = e.what();
    }
  }
  // Normally one transaction; very large groups are split by payload size,
  // which keeps the serial-order semantics (later parts see earlier ones in
  // the database).
  std::size_t begin = 0;
  while (begin < valid.size()) {
    std::size_t end = begin, bytes = 0;
    do {
      bytes += payload_bytes(requests[valid[end]]);
      ++end;
    } while (end < valid.size()
             && bytes + payload_bytes(requests[valid[end]])
                  <= max_group_payload);
    std::vector<std::size_t> part(valid.begin() + begin, valid.begin() + end);
    commit_part(requests, part, results);
    begin = end;
  }
  return results;
}

// Sends the flattened group `a` on `l` in one statement; returns the last
// position per request (0: condition failed). `sent` is set before anything
// goes on the wire, `backend` to the connection's server process.
std::vector<std::int64_t>
pg_event_store::run_group(pool_lease& l, const pg::group_arrays& a,
                          std::int64_t token, int& backend, bool& sent) {
  backend = l.conn().backendpid();
  pqxx::nontransaction tx{l.conn()};
  pqxx::binarystring data{a.data.data(), a.data.size()};
  pqxx::binarystring meta{a.meta.data(), a.meta.size()};
  sent = true;
  if (!a.conditional) {
    auto row = tx.exec_prepared1(
      l.statement("append_unconditional", sql_.append_unconditional), token,
      a.req_last_event.str(), a.ev_type.str(), a.ev_tag_off.str(),
      a.ev_tag_cnt.str(), a.tags.str(), a.ev_data_off.str(),
      a.ev_data_len.str(), data, a.ev_meta_off.str(), a.ev_meta_len.str(), meta,
      sql_.channel);
    return parse_int_array(row[0].c_str());
  }
  const auto& stmt = l.statement("append_group", sql_.append_group);
  auto row = tx.exec_prepared1(
    stmt, token, a.req_kind.str(), a.req_after.str(), a.req_nev.str(),
    a.ev_req.str(), a.ev_idx.str(), a.ev_type.str(), a.ev_tag_off.str(),
    a.ev_tag_cnt.str(), a.tags.str(), a.ev_data_off.str(), a.ev_data_len.str(),
    data, a.ev_meta_off.str(), a.ev_meta_len.str(), meta, a.it_req.str(),
    a.it_type_off.str(), a.it_type_cnt.str(), a.it_types.str(),
    a.it_tag_off.str(), a.it_tag_cnt.str(), a.it_tags.str(), a.dep_req.str(),
    a.dep_on.str(), a.dep_off.str());
  return parse_int_array(row[0].c_str());
}

void pg_event_store::commit_part(const std::vector<append_request>& requests,
                                 const std::vector<std::size_t>& part,
                                 std::vector<append_result>& results) {
  auto a = flatten(requests, part);
  std::int64_t token = 0;
  int backend = 0;
  bool sent = false;
  std::vector<std::int64_t> last;
  try {
    last = pool_->with_connection([&](pool::lease& l) {
      for (int attempt = 1;; ++attempt) {
        token = group_token();
        try {
          return run_group(l, a, token, backend, sent);
        } catch (const pqxx::unique_violation&) {
          // Only the outcome token can collide (positions are reserved
          // under the lock); the statement failed whole, so retry.
          if (attempt == 3)
            throw;
        }
      }
    });
  } catch (const store_error& e) {
    std::string message = e.what();
    if (e.code() == errc::unavailable && sent) {
      if (!resolve_in_doubt(token, backend, last))
        message += " (the connection broke after the group was sent, and "
                   "whether it committed could not be established)";
    }
    if (last.empty()) {
      for (auto i : part) {
        results[i].code = e.code();
        results[i].message = message;
      }
      return;
    }
  }
  if (last.size() != part.size())
    throw store_error{errc::internal,
                      "append_group returned " + std::to_string(last.size())
                        + " results for " + std::to_string(part.size())};
  for (std::size_t k = 0; k < part.size(); ++k) {
    auto& res = results[part[k]];
    if (last[k] > 0) {
      res.last_position = static_cast<std::uint64_t>(last[k]);
    } else {
      const auto& cond = requests[part[k]].condition;
      res.code = errc::append_condition_failed;
      res.message = "an event matching the append condition exists after "
                    "position "
                    + std::to_string(cond && cond->after ? *cond->after : 0);
    }
  }
}

// The connection broke after the group was sent: the commit may or may not
// have happened. Make sure the old backend is gone (so it cannot commit
// later), then look for the group's outcome row, retrying with backoff for
// up to `connect_timeout`. Returns whether the outcome is known; if it is,
// `committed` holds the group's results, or stays empty if it did not
// commit (and now never will).
bool pg_event_store::resolve_in_doubt(std::int64_t token, int backend,
                                      std::vector<std::int64_t>& committed) {
  auto deadline = std::chrono::steady_clock::now() + cfg_.connect_timeout;
  for (auto backoff = std::chrono::milliseconds{10};;
       backoff = std::min(backoff * 2, std::chrono::milliseconds{500})) {
    try {
      auto known = pool_->with_connection([&](pool::lease& l) {
        pqxx::nontransaction tx{l.conn()};
        tx.exec_params("SELECT pg_terminate_backend($1)", backend);
        auto gone = tx.exec_params1(
          "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $1", backend);
        if (!gone[0].as<bool>())
          return false; // still exiting: look again after the backoff
        auto r = tx.exec_params("SELECT results FROM " + pg::quoted(cfg_.schema)
                                  + ".append_outcomes WHERE token = $1",
                                token);
        committed.clear();
        if (!r.empty())
          committed = parse_int_array(r[0][0].c_str());
        return true;
      });
      if (known)
        return true;
    } catch (const store_error&) {
      // Unreachable right now; try again until the deadline.
    }
    if (std::chrono::steady_clock::now() + backoff > deadline)
      return false;
    std::this_thread::sleep_for(backoff);
  }
}

read_result pg_event_store::read(const query& q, const read_options& options) {
  auto range = range_of(options);
  auto page = make_page(
    cfg_.schema, validate_read(q, options, cfg_.limits), options.backwards,
    range.lo, range.hi,
    options.limit.value_or(std::numeric_limits<std::uint64_t>::max()), {});
  read_result out;
  auto rows = pool_->query(page.sql, page.params);
  out.head = collect(rows, out.events);
  return out;
}

std::unique_ptr<event_stream>
pg_event_store::stream(const query& q, const read_options& options,
                       const stream_options& chunking) {
  return std::make_unique<stream_impl>(
    *this, validate_read(q, options, cfg_.limits), options, chunking);
}

std::uint64_t pg_event_store::head() {
  return pool_->with_connection([&](pool::lease& l) {
    pqxx::nontransaction tx{l.conn()};
    auto row = tx.exec_prepared1(l.statement("head", sql_.head));
    return row[0].as<std::uint64_t>();
  });
}

std::uint64_t pg_event_store::reconnects() const noexcept {
  return pool_->reconnects();
}

} // namespace dcbd
