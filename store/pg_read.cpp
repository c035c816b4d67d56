#include "store/pg_read.hpp"

#include "store/error.hpp"
#include "store/pg_internal.hpp"
#include "store/pg_pool.hpp"
#include "store/read_cursor.hpp"

#include <pqxx/binarystring>

#include <algorithm>
#include <chrono>
#include <limits>

namespace dcbd::pg {

namespace {

constexpr auto max_pos = std::numeric_limits<std::int64_t>::max();

// Keyset pagination over the snapshot capped at the head of the first page:
// positions are gap-free and in commit order, so every event at or below
// that head is committed and immutable, and later pages need no open
// transaction. Each page borrows a pooled connection only while it runs.
class page_stream final : public event_stream {
public:
  page_stream(pg_pool& pool, std::string schema, query q,
              const read_options& opts, const stream_options& chunking)
    : pool_(pool)
    , schema_(std::move(schema))
    , query_(std::move(q))
    , cursor_(opts)
    , chunking_(chunking) {
    chunking_.chunk_events = std::max<std::size_t>(chunking_.chunk_events, 1);
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
    if (started_ && cursor_.done())
      return;
    auto n = std::min<std::uint64_t>(cursor_.remaining(),
                                     chunking_.chunk_events);
    auto page = make_page(schema_, query_, cursor_.backwards(), cursor_.lo(),
                          cursor_.hi(), n, chunking_.chunk_bytes);
    auto rows = pool_.query(page.sql, page.params);
    auto head = collect(rows, out);
    if (!started_) {
      started_ = true;
      head_ = head;
      cursor_.cap(head_);
    }
    if (out.empty())
      cursor_.close();
    else
      cursor_.passed(out.back().position, out.size());
  }

  pg_pool& pool_;
  std::string schema_;
  query query_;
  read_cursor cursor_;
  stream_options chunking_;
  std::uint64_t head_ = 0;
  bool started_ = false;
  bool has_pending_ = false;
  std::vector<sequenced_event> pending_;
};

} // namespace

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

read_result read(pg_pool& pool, const std::string& schema,
                 const query& normalized, const read_options& options) {
  auto range = range_of(options);
  auto page = make_page(
    schema, normalized, options.backwards, range.lo, range.hi,
    options.limit.value_or(std::numeric_limits<std::uint64_t>::max()), {});
  read_result out;
  auto rows = pool.query(page.sql, page.params);
  out.head = collect(rows, out.events);
  return out;
}

std::unique_ptr<event_stream>
open_stream(pg_pool& pool, std::string schema, query normalized,
            const read_options& options, const stream_options& chunking) {
  return std::make_unique<page_stream>(
    pool, std::move(schema), std::move(normalized), options, chunking);
}

} // namespace dcbd::pg
