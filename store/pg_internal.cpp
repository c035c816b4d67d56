#include "store/pg_internal.hpp"

#include <cctype>

namespace dcbd::pg {

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

std::string job_start_sql(std::string_view run_at_us,
                          std::string_view delay_ms) {
  // GREATEST ignores NULLs: without run_at it is now() + delay, with a
  // delay of 0 it is run_at; with neither, the COALESCE makes it now().
  std::string delay{delay_ms};
  std::string run_at{run_at_us};
  return "coalesce(greatest(timestamptz 'epoch' + " + run_at
         + " * interval '1 microsecond', now() + nullif(" + delay
         + ", 0) * interval '1 millisecond'), now())";
}

} // namespace dcbd::pg
