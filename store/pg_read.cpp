#include "store/pg_read.hpp"

#include "store/error.hpp"
#include "store/pg_internal.hpp"
#include "store/pg_pool.hpp"
#include "store/read_cursor.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <limits>
#include <new>

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

namespace {

// One field of a row as text: PostgreSQL's text output, or null.
struct field {
  const char* text;
  std::size_t size;
  bool null;

  std::string_view view() const noexcept {
    return {text, size};
  }
};

template <class Int>
Int integer(const field& f) {
  Int v{};
  auto [end, ec] = std::from_chars(f.text, f.text + f.size, v);
  if (f.null || ec != std::errc{} || end != f.text + f.size)
    throw store_error{errc::internal,
                      "unexpected integer in a page: " + std::string{f.view()}};
  return v;
}

// Appends the events of `n` rows to `out`, `get(row, column)` giving their
// fields; returns the head.
template <class Get>
std::uint64_t collect_rows(std::size_t n, std::size_t columns, Get get,
                           std::vector<sequenced_event>& out) {
  if (n > 0 && columns != 7)
    throw store_error{errc::internal, "a page has 7 columns"};
  std::uint64_t head = 0;
  out.reserve(out.size() + n);
  for (std::size_t i = 0; i < n; ++i) {
    head = integer<std::uint64_t>(get(i, 0));
    auto pos = get(i, 1);
    if (pos.null)
      continue;
    sequenced_event se;
    se.position = integer<std::uint64_t>(pos);
    se.event.type.assign(get(i, 2).view());
    se.event.tags = parse_text_array(get(i, 3).view());
    se.event.data = decode_bytea(get(i, 4).view());
    se.event.metadata = decode_bytea(get(i, 5).view());
    se.recorded_at = std::chrono::system_clock::time_point{
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
        std::chrono::microseconds{integer<std::int64_t>(get(i, 6))})};
    out.push_back(std::move(se));
  }
  return head;
}

int hex_digit(char c) noexcept {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

} // namespace

std::string decode_bytea(std::string_view text) {
  if (text.size() >= 2 && text[0] == '\\' && text[1] == 'x') {
    if (text.size() % 2 != 0)
      throw store_error{errc::internal, "odd hex bytea"};
    std::string out;
    out.resize((text.size() - 2) / 2);
    for (std::size_t i = 0; i < out.size(); ++i) {
      auto hi = hex_digit(text[2 + 2 * i]);
      auto lo = hex_digit(text[3 + 2 * i]);
      if (hi < 0 || lo < 0)
        throw store_error{errc::internal, "bad hex bytea"};
      out[i] = static_cast<char>((hi << 4) | lo);
    }
    return out;
  }
  // The escape format (bytea_output = escape): libpq decodes it.
  std::string z{text};
  std::size_t len = 0;
  auto* raw = PQunescapeBytea(reinterpret_cast<const unsigned char*>(z.c_str()),
                              &len);
  if (!raw)
    throw std::bad_alloc{};
  std::string out{reinterpret_cast<const char*>(raw), len};
  PQfreemem(raw);
  return out;
}

std::uint64_t collect(const pqxx::result& rows,
                      std::vector<sequenced_event>& out) {
  return collect_rows(
    rows.size(), static_cast<std::size_t>(rows.columns()),
    [&rows](std::size_t i, std::size_t c) {
      auto f = rows[static_cast<pqxx::result::size_type>(i)]
                   [static_cast<pqxx::row::size_type>(c)];
      return field{f.c_str(), f.size(), f.is_null()};
    },
    out);
}

std::uint64_t collect(const pg_result* rows,
                      std::vector<sequenced_event>& out) {
  auto* r = const_cast<PGresult*>(rows);
  return collect_rows(
    static_cast<std::size_t>(PQntuples(r)),
    static_cast<std::size_t>(PQnfields(r)),
    [r](std::size_t i, std::size_t c) {
      auto row = static_cast<int>(i);
      auto col = static_cast<int>(c);
      return field{PQgetvalue(r, row, col),
                   static_cast<std::size_t>(PQgetlength(r, row, col)),
                   PQgetisnull(r, row, col) != 0};
    },
    out);
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
