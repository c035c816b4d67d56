// Paged reads on PostgreSQL: the SQL of one page of a read and the parsing
// of its rows. Shared by the store's reads and streams.
#pragma once

#include "store/model.hpp"

#include <pqxx/result>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

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
std::uint64_t collect(const pqxx::result& rows,
                      std::vector<sequenced_event>& out);

} // namespace dcbd::pg
