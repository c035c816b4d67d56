#include "store/pg_cluster.hpp"

#include "store/error.hpp"
#include "store/pg_internal.hpp"
#include "store/pg_pool.hpp"

#include <pqxx/pqxx>

#include <utility>

namespace dcbd {

struct pg_cluster_registry::impl {
  explicit impl(pg_config c)
    : table(pg::quoted(c.schema) + ".cluster_members")
    , pool([&] {
      c.pool_size = 1;
      return c;
    }()) {
    // nop
  }

  // The cluster agent waits for these: never for long.
  template <class F>
  auto with(F&& f) {
    return pool.with_brief_transaction(std::forward<F>(f));
  }

  std::string table;
  pg_pool pool;
};

pg_cluster_registry::pg_cluster_registry(pg_config cfg)
  : impl_(std::make_unique<impl>(std::move(cfg))) {
  // nop
}

pg_cluster_registry::~pg_cluster_registry() = default;

void pg_cluster_registry::join(const member_row& self) {
  impl_->with([&](pqxx::work& tx) {
    tx.exec_params("INSERT INTO " + impl_->table
                     + " (name, addr, http, incarnation) VALUES ($1, $2, $3, "
                       "$4) ON CONFLICT (name) DO UPDATE SET addr = "
                       "excluded.addr, http = excluded.http, incarnation = "
                       "excluded.incarnation, started_at = now(), last_seen = "
                       "now()",
                   self.name, self.addr, self.http, self.incarnation);
    return 0;
  });
}

bool pg_cluster_registry::touch(const std::string& name,
                                const std::string& incarnation) {
  return impl_->with([&](pqxx::work& tx) {
    auto r = tx.exec_params("UPDATE " + impl_->table
                              + " SET last_seen = now() WHERE name = $1 AND "
                                "incarnation = $2",
                            name, incarnation);
    return r.affected_rows() == 1;
  });
}

void pg_cluster_registry::leave(const std::string& name,
                                const std::string& incarnation) {
  impl_->with([&](pqxx::work& tx) {
    tx.exec_params("DELETE FROM " + impl_->table
                     + " WHERE name = $1 AND incarnation = $2",
                   name, incarnation);
    return 0;
  });
}

std::vector<member_row>
pg_cluster_registry::rows(std::chrono::milliseconds max_age) {
  return impl_->with([&](pqxx::work& tx) {
    auto r = tx.exec_params(
      "SELECT name, addr, http, incarnation, extract(epoch FROM now() - "
      "last_seen)::float8 FROM "
        + impl_->table
        + " WHERE last_seen > now() - make_interval(secs => $1) ORDER BY name",
      static_cast<double>(max_age.count()) / 1000.0);
    std::vector<member_row> out;
    for (const auto& row : r)
      out.push_back({row[0].as<std::string>(), row[1].as<std::string>(),
                     row[2].as<std::string>(), row[3].as<std::string>(),
                     row[4].as<double>()});
    return out;
  });
}

} // namespace dcbd
