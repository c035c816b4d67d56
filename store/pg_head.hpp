// The head of a store as one SQL statement, for connections of their own
// (the HTTP read index's asynchronous one, runtime/pg_head_reader.hpp).
#pragma once

#include <string>

namespace dcbd {

/// `SELECT position FROM <schema>.head`: one row, one column, the position
/// of the last committed event (0 when the log is empty). Validates
/// `schema` (throws `store_error(invalid_argument)`).
std::string pg_head_sql(const std::string& schema);

} // namespace dcbd
