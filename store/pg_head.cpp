#include "store/pg_head.hpp"

#include "store/pg_internal.hpp"

namespace dcbd {

std::string pg_head_sql(const std::string& schema) {
  return "SELECT position FROM " + pg::quoted(schema) + ".head";
}

} // namespace dcbd
