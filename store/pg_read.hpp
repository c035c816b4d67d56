// Paged reads on PostgreSQL: the SQL of one page of a read, the parsing
// of its rows, and reads and keyset-paginated streams over a connection
// pool. Shared by the store (on the primary) and the read replica (on a
// standby).
#pragma once

#include "store/event_store.hpp"
#include "store/model.hpp"

#include <pqxx/result>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

// libpq's result (PGresult).
struct pg_result;

namespace dcbd {
class pg_pool;
} // namespace dcbd

namespace dcbd::pg {

/// One page of a read: the SQL and its parameters. Rows are (head,
/// position, type, tags, data, metadata, recorded_at_us); a page with no
/// events is one row with a NULL position, so the head always comes back
/// from the same snapshot as the events. Every event visible in that
/// snapshot is at or below its head (an append commits its events and the
/// new head together), so the page needs no head bound; constant bounds also
/// let the planner pick the tag index instead of walking the primary key.
struct page_query {
  std::string sql;
  std::vector<std::string> params;
};

/// Events in [lo, hi] matching `q`, in the read's direction, at most
/// `limit`, and with `max_bytes` set: the longest prefix of at most that
/// many payload bytes (at least one event).
page_query make_page(const std::string& schema, const query& q, bool backwards,
                     std::uint64_t lo, std::uint64_t hi, std::uint64_t limit,
                     std::optional<std::size_t> max_bytes);

/// Parses PostgreSQL's text output of a one-dimensional text[] without
/// NULLs. (libpqxx 6.4's array_parser mistakes a leading ' for a quote.)
std::vector<std::string> parse_text_array(std::string_view s);

/// Appends the events of a page's `rows` to `out`; returns the head.
/// Throws store_error (internal) on rows that are no page.
std::uint64_t collect(const pqxx::result& rows,
                      std::vector<sequenced_event>& out);

/// The same for a page's result straight from libpq (text format), as an
/// asynchronous connection gets it (runtime/pg_async.hpp).
std::uint64_t collect(const pg_result* rows, std::vector<sequenced_event>& out);

/// Decodes a bytea in PostgreSQL's text output (hex, or the old escape
/// format).
std::string decode_bytea(std::string_view text);

/// Reads the events matching `normalized` (a validated query) with
/// `options` from `pool`, in one statement, with the head of its snapshot.
read_result read(pg_pool& pool, const std::string& schema,
                 const query& normalized, const read_options& options);

/// A stream of keyset pages from `pool` over the snapshot capped at the
/// head of its first page, which runs at once (so `head()` is known when
/// this returns). `pool` must outlive the stream.
std::unique_ptr<event_stream>
open_stream(pg_pool& pool, std::string schema, query normalized,
            const read_options& options, const stream_options& chunking);

} // namespace dcbd::pg
