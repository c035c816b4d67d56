// Internal helpers of the PostgreSQL store. Not part of the public API.
#pragma once

#include "store/error.hpp"

#include <pqxx/except>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dcbd::pg {

/// Throws `invalid_argument` unless `name` is a plain lower-case identifier.
void check_schema_name(const std::string& name);

/// Returns `schema` as a quoted identifier; validates it first.
std::string quoted(const std::string& schema);

/// Appends `s` to `out` as a double-quoted element of an array literal.
void append_array_element(std::string& out, std::string_view s);

/// Builds a text[] literal, e.g. {"a","b\"c"}.
std::string text_array(const std::vector<std::string>& xs);

/// The SQL expression of when a new job may run first (API.md §7): the
/// later of `run_at_us` (microseconds since the Unix epoch, NULL when the
/// job has none) and now() plus `delay_ms` (milliseconds). Both are lower
/// bounds, so a job that gives both waits for both; a delay of 0 bounds
/// nothing, so a run_at in the past is kept as given (due at once, and
/// ordered by it). Every insert of jobs uses it, so /v1/jobs and the jobs
/// of an append schedule alike.
std::string job_start_sql(std::string_view run_at_us,
                          std::string_view delay_ms);

/// Returns whether a database error means the server or the connection is
/// gone (as opposed to a bug or bad SQL).
bool is_unavailable(const pqxx::sql_error& e);

/// Runs `f`, translating libpqxx exceptions into `store_error`.
template <class F>
auto guarded(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const store_error&) {
    throw;
  } catch (const pqxx::broken_connection& e) {
    throw store_error{errc::unavailable,
                      std::string{"database unavailable: "} + e.what()};
  } catch (const pqxx::sql_error& e) {
    if (is_unavailable(e))
      throw store_error{errc::unavailable,
                        std::string{"database unavailable: "} + e.what()};
    throw store_error{errc::internal,
                      std::string{"database error: "} + e.what()};
  } catch (const std::exception& e) {
    throw store_error{errc::internal,
                      std::string{"database error: "} + e.what()};
  }
}

} // namespace dcbd::pg
