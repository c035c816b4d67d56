#include "runtime/pg_head_reader.hpp"

#include <libpq-fe.h>

#include <charconv>
#include <cstring>
#include <utility>

namespace dcbd::http {

namespace {

using callback = std::function<void(std::optional<std::uint64_t>)>;

// The head in a result of one row and one column, if that is what it is.
std::optional<std::uint64_t> head_of(const pg_result_ptr& r) {
  if (!r || PQresultStatus(r.get()) != PGRES_TUPLES_OK
      || PQntuples(r.get()) != 1 || PQnfields(r.get()) != 1
      || PQgetisnull(r.get(), 0, 0))
    return std::nullopt;
  const char* text = PQgetvalue(r.get(), 0, 0);
  auto len = std::strlen(text);
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(text, text + len, v);
  if (ec != std::errc{} || end != text + len)
    return std::nullopt;
  return v;
}

} // namespace

pg_head_reader::pg_head_reader(boost::asio::io_context& io, config cfg)
  : sql_(std::move(cfg.sql)) {
  pg_connection::config c;
  c.dsn = std::move(cfg.dsn);
  c.timeout = cfg.timeout;
  c.retry = cfg.retry;
  // Parsed once per connection (it has no parameters to plan for).
  c.max_prepared = 1;
  conn_ = pg_connection::make(io, std::move(c));
}

pg_head_reader::~pg_head_reader() = default;

std::shared_ptr<pg_head_reader>
pg_head_reader::make(boost::asio::io_context& io, config cfg) {
  return std::shared_ptr<pg_head_reader>{
    new pg_head_reader(io, std::move(cfg))};
}

void pg_head_reader::fetch(callback done) {
  conn_->exec(sql_, {}, [done = std::move(done)](pg_result_ptr r) {
    done(head_of(r));
  });
}

std::shared_ptr<read_index_leader> pg_head_reader::leader() {
  auto l = std::make_shared<read_index_leader>();
  // On the connection's strand, like the answers of `fetch`.
  l->post = [c = conn_](std::function<void()> f) {
    c->post(std::move(f));
  };
  l->fetch = [w = weak_from_this()](callback done) {
    if (auto s = w.lock())
      return s->fetch(std::move(done));
    done(std::nullopt);
  };
  return l;
}

void pg_head_reader::close() {
  conn_->close();
}

} // namespace dcbd::http
