#include "runtime/database_reads.hpp"

#include "store/event_store.hpp"
#include "store/pg_read.hpp"
#include "store/validation.hpp"

#include <algorithm>
#include <exception>
#include <limits>
#include <utility>

namespace dcbd::http {

database_reads::database_reads(boost::asio::io_context& io, config cfg)
  : cfg_(std::move(cfg)) {
  pg_connection_pool::config pc;
  pc.connection.dsn = cfg_.dsn;
  pc.connection.timeout = cfg_.timeout;
  // Prepared: parsed once per connection. Planned for each read's values
  // all the same: a generic plan of a page walks the primary key instead
  // of the tag index (store/pg_read.hpp), 70 times slower on an evicted
  // tag (bench/run_evicted_bench.sh).
  pc.connection.setup = "SET plan_cache_mode = force_custom_plan";
  pc.connection.max_prepared = 64;
  pc.size = std::max<std::size_t>(cfg_.connections, 1);
  pc.max_waiting = cfg_.max_waiting;
  pool_ = pg_connection_pool::make(io, std::move(pc));
}

database_reads::~database_reads() {
  *live_ = false;
}

void database_reads::read(
  const query& q, const read_options& options, std::size_t max_events,
  std::function<void(std::optional<read_result>)> done) {
  pg::page_query page;
  try {
    auto normalized = validate_read(q, options, cfg_.input_limits);
    auto range = range_of(options);
    // One more than fits: an answer that has it is too long for here.
    auto want = std::min<std::uint64_t>(
      options.limit.value_or(std::numeric_limits<std::uint64_t>::max()),
      std::uint64_t{max_events} + 1);
    page = pg::make_page(cfg_.schema, normalized, options.backwards, range.lo,
                         range.hi, want, {});
  } catch (const std::exception&) {
    return done(std::nullopt); // the reader path reports it
  }
  pool_->exec(std::move(page.sql), std::move(page.params),
              [live = live_, max_events,
               done = std::move(done)](pg_result_ptr rows) {
                if (!*live)
                  return; // destroyed: nobody waits for this any more
                std::optional<read_result> out;
                if (rows) {
                  try {
                    read_result r;
                    r.head = pg::collect(rows.get(), r.events);
                    if (r.events.size() <= max_events)
                      out = std::move(r);
                  } catch (const std::exception&) {
                    // not a page after all: the reader path will say what is
                    // wrong
                  }
                }
                done(std::move(out));
              });
}

void database_reads::close() {
  pool_->close();
}

} // namespace dcbd::http
