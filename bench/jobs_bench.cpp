// The job benchmarks (`./dev bench jobs`, bench/run_jobs_bench.sh):
//
//   noop         NOOP_JOBS (100,000) no-op jobs enqueued through pg_jobs in
//                batches of ENQUEUE_BATCH (1,000), then in-process workers
//                of one kind (NOOP_CONCURRENCY, 500; a comma list runs each)
//                burn them down. jobs/s = jobs / (add_worker -> the
//                service's stats().completed reaches them, polled every
//                millisecond); the enqueue is not timed in it.
//   enqueue      ENQUEUE_JOBS (200,000) jobs through pg_jobs::enqueue in
//                batches of ENQUEUE_BATCH from one thread; then one job per
//                call from ENQUEUE_THREADS (16) threads for ENQUEUE_SECONDS
//                (5) on a pool of as many connections.
//   scaling      10 ms jobs (the handler sleeps) with SCALING_WORKERS (1, 2,
//                4, 8, 32) workers, SCALING_SECONDS (3) each after 0.5 s of
//                warm-up; efficiency = jobs/s / (workers x 100).
//   trigger      a trigger on type Ordered; TRIGGER_EVENTS (20,000) events
//                appended through engine.append, TRIGGER_PER_APPEND (100) per
//                append, one append after the other; events->jobs/s = events
//                / (first append -> the trigger's jobs reach them, from the
//                service's stats().trigger_jobs). Then a second trigger
//                created from position 0 catches up over the same log
//                (`trigger_catchup`).
//   latency      LATENCY_WORKERS (4) idle workers (one cannot keep up with a
//                job every 5 ms: it waits for its outcome's flush and the
//                next fetch); LATENCY_JOBS (200) single jobs enqueued one
//                at a time through job_service::enqueue_blocking,
//                LATENCY_SPACING_MS (5) apart; enqueue call -> handler start
//                (wall clock, the enqueue's commit included), and
//                attempted_at - created_at (the database's clock).
//   append-jobs  conditional appends of one event, each with one job in
//                append_request::jobs, from APPEND_THREADS (8) threads for
//                APPEND_SECONDS (5), against the same appends without jobs;
//                first a probe checks that the append's job is written at
//                all (`honoured=0` and nothing else when not).
//
// Each workload runs on a fresh engine and job service (default
// jobs_config) in a fresh schema bench_jobs_<workload>, dropped after, and
// prints `summary <name> key=value ...` lines that the script turns into the
// table.
#include "actors/engine.hpp"
#include "actors/jobs.hpp"
#include "actors/types.hpp"
#include "store/pg_jobs.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <pqxx/pqxx>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

std::string dsn() {
  for (const char* name : {"DCBD_TEST_PG_DSN", "DCB_POSTGRES_DSN"}) {
    const char* env = std::getenv(name);
    if (env != nullptr && *env != '\0')
      return env;
  }
  throw std::runtime_error("set DCBD_TEST_PG_DSN");
}

double number_env(const char* name, double fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atof(v) : fallback;
}

std::size_t size_env(const char* name, std::size_t fallback) {
  return static_cast<std::size_t>(
    number_env(name, static_cast<double>(fallback)));
}

// A comma-separated list of counts ("1,2,4").
std::vector<std::size_t> list_env(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  std::istringstream in{v && *v ? v : fallback};
  std::vector<std::size_t> out;
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty())
      out.push_back(static_cast<std::size_t>(std::stoul(item)));
  if (out.empty())
    throw std::runtime_error(std::string{name} + ": no counts");
  return out;
}

double secs_since(steady::time_point t0, steady::time_point t1) {
  return std::chrono::duration<double>(t1 - t0).count();
}

double ms_between(steady::time_point t0, steady::time_point t1) {
  return std::chrono::duration<double, std::milli>(t1 - t0).count();
}

// CPU seconds (user + system) of this process so far.
double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto s = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return s(ru.ru_utime) + s(ru.ru_stime);
}

std::string query_value(const std::string& sql) {
  pqxx::connection conn{dsn()};
  pqxx::work tx{conn};
  auto v = tx.exec1(sql)[0];
  return v.is_null() ? std::string{} : v.as<std::string>();
}

void drop_schema(const std::string& schema) {
  pqxx::connection conn{dsn()};
  pqxx::work tx{conn};
  tx.exec("SET client_min_messages = warning");
  tx.exec("DROP SCHEMA IF EXISTS " + schema + " CASCADE");
  tx.commit();
}

double percentile(std::vector<double> xs, double p) {
  if (xs.empty())
    return 0;
  std::sort(xs.begin(), xs.end());
  auto i = static_cast<std::size_t>(p * static_cast<double>(xs.size() - 1));
  return xs[i];
}

dcbd::pg_config store_cfg(const std::string& schema) {
  dcbd::pg_config pc;
  pc.dsn = dsn();
  pc.schema = schema;
  pc.pool_size = 4;
  return pc;
}

dcbd::engine_config engine_cfg(const std::string& schema) {
  dcbd::engine_config ec;
  ec.store = store_cfg(schema);
  ec.readers = 2;
  ec.appenders = 2;
  return ec;
}

dcbd::jobs_config jobs_cfg() {
  dcbd::jobs_config c;
  c.node = "bench";
  return c;
}

dcbd::job_request request(std::string kind, std::size_t i) {
  dcbd::job_request j;
  j.kind = std::move(kind);
  j.args = R"({"i":)" + std::to_string(i) + "}";
  return j;
}

// The number in a job's args `{"i": <n>}`.
std::size_t index_of(const dcbd::job& j) {
  auto colon = j.args.find(':');
  if (colon == std::string::npos)
    throw std::runtime_error("job " + std::to_string(j.id) + ": no index");
  return static_cast<std::size_t>(
    std::strtoull(j.args.c_str() + colon + 1, nullptr, 10));
}

// Enqueues `n` jobs of `kind` in batches of `batch`; returns the seconds.
double enqueue_many(dcbd::pg_jobs& store, const std::string& kind,
                    std::size_t n, std::size_t batch) {
  auto t0 = steady::now();
  for (std::size_t done = 0; done < n;) {
    std::vector<dcbd::job_request> jobs;
    auto k = std::min(batch, n - done);
    jobs.reserve(k);
    for (std::size_t i = 0; i < k; ++i)
      jobs.push_back(request(kind, done + i));
    store.enqueue(std::move(jobs));
    done += k;
  }
  return secs_since(t0, steady::now());
}

// Polls `pred` every millisecond until it holds or `limit` passes; the
// time it first held, or nullopt.
template <class Pred>
std::optional<steady::time_point>
wait_for(Pred pred, std::chrono::seconds limit) {
  auto until = steady::now() + limit;
  while (steady::now() < until) {
    if (pred())
      return steady::now();
    std::this_thread::sleep_for(1ms);
  }
  return std::nullopt;
}

// An actor system, an engine and a job service on a fresh schema, dropped
// when it goes away (the service first, then the engine).
class fixture {
public:
  explicit fixture(std::string schema) : schema_(std::move(schema)) {
    drop_schema(schema_);
    dcbd::register_types(cfg_);
    dcbd::tune_scheduler(cfg_);
    cfg_.set("logger.console", caf::atom("none"));
    sys_ = std::make_unique<caf::actor_system>(cfg_);
    eng_ = std::make_unique<dcbd::engine>(*sys_, engine_cfg(schema_));
    svc_ = std::make_unique<dcbd::job_service>(*sys_, *eng_, jobs_cfg());
  }

  ~fixture() {
    svc_.reset();
    eng_.reset();
    sys_.reset();
    try {
      drop_schema(schema_);
    } catch (const std::exception& e) {
      std::cerr << "dcbd_jobs_bench: dropping " << schema_ << ": " << e.what()
                << std::endl;
    }
  }

  fixture(const fixture&) = delete;
  fixture& operator=(const fixture&) = delete;

  dcbd::engine& eng() {
    return *eng_;
  }
  dcbd::job_service& svc() {
    return *svc_;
  }
  const std::string& schema() const {
    return schema_;
  }

  std::string count(const std::string& where) const {
    return query_value("SELECT count(*) FROM " + schema_ + ".jobs WHERE "
                       + where);
  }

private:
  std::string schema_;
  caf::actor_system_config cfg_;
  std::unique_ptr<caf::actor_system> sys_;
  std::unique_ptr<dcbd::engine> eng_;
  std::unique_ptr<dcbd::job_service> svc_;
};

// -- noop ---------------------------------------------------------------------

void noop(std::size_t concurrency) {
  auto n = size_env("NOOP_JOBS", 100'000);
  auto batch = size_env("ENQUEUE_BATCH", 1000);
  fixture f{"bench_jobs_noop"};
  auto& svc = f.svc();
  auto enqueue_s = enqueue_many(svc.store(), "noop", n, batch);
  std::atomic<std::uint64_t> runs{0};
  dcbd::job_worker_spec w;
  w.kind = "noop";
  w.concurrency = concurrency;
  w.handle = [&runs](const dcbd::job&) {
    ++runs;
    return dcbd::job_result::ok();
  };
  auto cpu0 = cpu_seconds();
  auto t0 = steady::now();
  svc.add_worker(std::move(w));
  auto done = wait_for(
    [&] {
      return svc.stats().completed >= n;
    },
    600s);
  auto t1 = done.value_or(steady::now());
  auto cpu = cpu_seconds() - cpu0;
  svc.stop();
  auto st = svc.stats();
  bool correct = done && f.count("state = 'completed'") == std::to_string(n);
  auto secs = secs_since(t0, t1);
  std::printf("summary noop concurrency=%zu jobs=%zu batch=%zu "
              "enqueue_jobs_per_s=%.0f seconds=%.2f jobs_per_s=%.0f runs=%llu "
              "fetched=%llu flushes=%llu jobs_per_flush=%.1f cpu_s=%.2f "
              "cpu_per_wall=%.2f correct=%d\n",
              concurrency, n, batch, static_cast<double>(n) / enqueue_s, secs,
              done ? static_cast<double>(n) / secs : 0.0,
              static_cast<unsigned long long>(runs.load()),
              static_cast<unsigned long long>(st.fetched),
              static_cast<unsigned long long>(st.flushes),
              st.flushes ? static_cast<double>(st.completed)
                             / static_cast<double>(st.flushes)
                         : 0.0,
              cpu, cpu / secs, correct ? 1 : 0);
  std::fflush(stdout);
}

// -- enqueue ------------------------------------------------------------------

void enqueue() {
  auto n = size_env("ENQUEUE_JOBS", 200'000);
  auto batch = size_env("ENQUEUE_BATCH", 1000);
  auto threads = size_env("ENQUEUE_THREADS", 16);
  auto secs = number_env("ENQUEUE_SECONDS", 5);
  std::string schema = "bench_jobs_enqueue";
  drop_schema(schema);
  {
    dcbd::pg_jobs store{store_cfg(schema), threads};
    auto batch_s = enqueue_many(store, "noop", n, batch);
    bool batch_ok = query_value("SELECT count(*) FROM " + schema + ".jobs")
                    == std::to_string(n);
    std::printf("summary enqueue_batch jobs=%zu batch=%zu seconds=%.2f "
                "jobs_per_s=%.0f correct=%d\n",
                n, batch, batch_s, static_cast<double>(n) / batch_s,
                batch_ok ? 1 : 0);
    std::fflush(stdout);

    // One job per call from many threads.
    std::vector<std::vector<double>> call_ms(threads);
    std::atomic<std::size_t> errors{0};
    auto t0 = steady::now();
    auto until = t0
                 + std::chrono::duration_cast<steady::duration>(
                   std::chrono::duration<double>(secs));
    std::vector<std::thread> workers;
    for (std::size_t k = 0; k < threads; ++k)
      workers.emplace_back([&, k] {
        for (std::size_t i = 0; steady::now() < until; ++i) {
          auto c0 = steady::now();
          try {
            store.enqueue({request("single", i)});
          } catch (const std::exception&) {
            ++errors;
            continue;
          }
          call_ms[k].push_back(ms_between(c0, steady::now()));
        }
      });
    for (auto& t : workers)
      t.join();
    auto elapsed = secs_since(t0, steady::now());
    std::vector<double> all;
    for (auto& v : call_ms)
      all.insert(all.end(), v.begin(), v.end());
    std::printf("summary enqueue_single threads=%zu seconds=%.2f jobs=%zu "
                "jobs_per_s=%.0f call_ms_p50=%.2f call_ms_p99=%.2f "
                "errors=%zu\n",
                threads, elapsed, all.size(),
                static_cast<double>(all.size()) / elapsed, percentile(all, 0.5),
                percentile(all, 0.99), errors.load());
    std::fflush(stdout);
  }
  drop_schema(schema);
}

// -- scaling ------------------------------------------------------------------

void scaling() {
  auto secs = number_env("SCALING_SECONDS", 3);
  const double warmup = 0.5;
  auto sleep = std::chrono::milliseconds{
    static_cast<long>(number_env("SCALING_JOB_MS", 10))};
  double per_worker = 1000.0 / static_cast<double>(sleep.count());
  double worst = 1e9;
  for (auto workers : list_env("SCALING_WORKERS", "1,2,4,8,32")) {
    fixture f{"bench_jobs_scaling"};
    auto& svc = f.svc();
    auto ideal = static_cast<double>(workers) * per_worker;
    // Half as many again as the workers could run, so they never run dry.
    auto n = static_cast<std::size_t>(ideal * (secs + warmup) * 1.5) + 100;
    enqueue_many(svc.store(), "sleep", n, 1000);
    dcbd::job_worker_spec w;
    w.kind = "sleep";
    w.concurrency = workers;
    w.handle = [sleep](const dcbd::job&) {
      std::this_thread::sleep_for(sleep);
      return dcbd::job_result::ok();
    };
    svc.add_worker(std::move(w));
    std::this_thread::sleep_for(std::chrono::duration<double>(warmup));
    auto c0 = svc.stats().completed;
    auto t0 = steady::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(secs));
    auto c1 = svc.stats().completed;
    auto elapsed = secs_since(t0, steady::now());
    svc.stop();
    auto rate = static_cast<double>(c1 - c0) / elapsed;
    auto eff = rate / ideal;
    worst = std::min(worst, eff);
    std::printf("summary scaling_w%zu workers=%zu job_ms=%lld seconds=%.2f "
                "jobs=%llu jobs_per_s=%.1f ideal_per_s=%.0f efficiency=%.3f\n",
                workers, workers, static_cast<long long>(sleep.count()),
                elapsed, static_cast<unsigned long long>(c1 - c0), rate, ideal,
                eff);
    std::fflush(stdout);
  }
  std::printf("summary scaling min_efficiency=%.3f\n", worst);
  std::fflush(stdout);
}

// -- trigger ------------------------------------------------------------------

bool create_trigger(dcbd::job_service& svc, const std::string& name,
                    std::optional<std::uint64_t> from) {
  dcbd::job_trigger t;
  t.name = name;
  t.query = dcbd::query{{dcbd::query_item{{"Ordered"}, {}}}};
  t.kind = "on_ordered";
  std::promise<caf::expected<bool>> made;
  svc.create_trigger(t, from, [&made](caf::expected<bool> r) {
    made.set_value(std::move(r));
  });
  auto r = made.get_future().get();
  return r && *r;
}

void trigger() {
  auto n = size_env("TRIGGER_EVENTS", 20'000);
  auto per_append = size_env("TRIGGER_PER_APPEND", 100);
  fixture f{"bench_jobs_trigger"};
  auto& svc = f.svc();
  if (!create_trigger(svc, "live", std::nullopt))
    throw std::runtime_error("trigger: create_trigger failed");
  auto t0 = steady::now();
  for (std::size_t done = 0; done < n;) {
    std::vector<dcbd::event> events;
    auto k = std::min(per_append, n - done);
    for (std::size_t i = 0; i < k; ++i) {
      auto id = std::to_string(done + i);
      events.push_back(dcbd::event{
        "Ordered", {"order:" + id}, R"({"order":")" + id + R"("})", {}});
    }
    auto ack = f.eng().append(std::move(events));
    if (!ack)
      throw std::runtime_error("trigger: append failed: "
                               + to_string(ack.error()));
    done += k;
  }
  auto appended = steady::now();
  auto done = wait_for(
    [&] {
      return svc.stats().trigger_jobs >= n;
    },
    300s);
  auto t1 = done.value_or(steady::now());
  bool correct = done && f.count("trigger_name = 'live'") == std::to_string(n);
  std::printf("summary trigger events=%zu per_append=%zu append_s=%.2f "
              "append_events_per_s=%.0f seconds=%.2f "
              "events_to_jobs_per_s=%.0f after_last_append_ms=%.1f "
              "correct=%d\n",
              n, per_append, secs_since(t0, appended),
              static_cast<double>(n) / secs_since(t0, appended),
              secs_since(t0, t1),
              done ? static_cast<double>(n) / secs_since(t0, t1) : 0.0,
              ms_between(appended, t1), correct ? 1 : 0);
  std::fflush(stdout);

  // A trigger created over the existing log: its catch-up alone.
  auto base = svc.stats().trigger_jobs;
  auto c0 = steady::now();
  if (!create_trigger(svc, "catchup", 0))
    throw std::runtime_error("trigger: create_trigger (catch-up) failed");
  auto caught_up = wait_for(
    [&] {
      return svc.stats().trigger_jobs >= base + n;
    },
    300s);
  auto c1 = caught_up.value_or(steady::now());
  bool catchup_ok = caught_up
                    && f.count("trigger_name = 'catchup'") == std::to_string(n);
  std::printf("summary trigger_catchup events=%zu seconds=%.2f "
              "events_to_jobs_per_s=%.0f correct=%d\n",
              n, secs_since(c0, c1),
              caught_up ? static_cast<double>(n) / secs_since(c0, c1) : 0.0,
              catchup_ok ? 1 : 0);
  std::fflush(stdout);
}

// -- latency ------------------------------------------------------------------

void latency() {
  auto n = size_env("LATENCY_JOBS", 200);
  auto spacing = std::chrono::milliseconds{
    static_cast<long>(number_env("LATENCY_SPACING_MS", 5))};
  auto workers = size_env("LATENCY_WORKERS", 4);
  fixture f{"bench_jobs_latency"};
  auto& svc = f.svc();
  std::vector<steady::time_point> called(n), started(n);
  std::mutex mtx;
  std::atomic<std::size_t> ran{0};
  dcbd::job_worker_spec w;
  w.kind = "ping";
  w.concurrency = workers;
  w.handle = [&](const dcbd::job& j) {
    auto now = steady::now();
    auto i = index_of(j);
    {
      std::lock_guard guard{mtx};
      if (i < started.size())
        started[i] = now;
    }
    ++ran;
    return dcbd::job_result::ok();
  };
  svc.add_worker(std::move(w));
  // Let the dispatcher settle into waiting.
  std::this_thread::sleep_for(300ms);
  std::vector<double> call_ms;
  auto next = steady::now();
  for (std::size_t i = 0; i < n; ++i) {
    std::this_thread::sleep_until(next);
    next += spacing;
    {
      std::lock_guard guard{mtx};
      called[i] = steady::now();
    }
    svc.enqueue_blocking({request("ping", i)});
    std::lock_guard guard{mtx};
    call_ms.push_back(ms_between(called[i], steady::now()));
  }
  auto all = wait_for(
    [&] {
      return ran.load() >= n;
    },
    60s);
  std::vector<double> wall;
  {
    std::lock_guard guard{mtx};
    for (std::size_t i = 0; i < n; ++i)
      if (started[i] != steady::time_point{})
        wall.push_back(ms_between(called[i], started[i]));
  }
  std::vector<double> db;
  {
    pqxx::connection conn{dsn()};
    pqxx::work tx{conn};
    for (auto row : tx.exec(
           "SELECT extract(epoch FROM attempted_at - created_at) * 1000 FROM "
           + f.schema() + ".jobs WHERE attempted_at IS NOT NULL"))
      db.push_back(row[0].as<double>());
  }
  std::printf("summary latency jobs=%zu spacing_ms=%lld workers=%zu "
              "started=%zu "
              "enqueue_to_start_ms_p50=%.2f enqueue_to_start_ms_p99=%.2f "
              "enqueue_to_start_ms_max=%.2f created_to_attempted_ms_p50=%.2f "
              "created_to_attempted_ms_p99=%.2f enqueue_call_ms_p50=%.2f "
              "enqueue_call_ms_p99=%.2f all_ran=%d\n",
              n, static_cast<long long>(spacing.count()), workers, wall.size(),
              percentile(wall, 0.5), percentile(wall, 0.99),
              percentile(wall, 1.0), percentile(db, 0.5), percentile(db, 0.99),
              percentile(call_ms, 0.5), percentile(call_ms, 0.99), all ? 1 : 0);
  std::fflush(stdout);
}

// -- append-jobs --------------------------------------------------------------

// Conditional appends of one event each (a tag of their own, so every
// condition holds) from `threads` threads for `secs`; with one job each
// when `with_job`. Returns appends/s.
double conditional_appends(dcbd::engine& eng, bool with_job,
                           std::size_t threads, double secs,
                           std::atomic<std::size_t>& failed) {
  std::atomic<std::size_t> acked{0};
  auto t0 = steady::now();
  auto until = t0
               + std::chrono::duration_cast<steady::duration>(
                 std::chrono::duration<double>(secs));
  std::vector<std::thread> workers;
  const char* label = with_job ? "j" : "p";
  for (std::size_t k = 0; k < threads; ++k)
    workers.emplace_back([&, k] {
      for (std::size_t i = 0; steady::now() < until; ++i) {
        auto tag = "order:" + std::string{label} + std::to_string(k) + "-"
                   + std::to_string(i);
        dcbd::append_request req;
        req.events.push_back(dcbd::event{"Ordered", {tag}, "{}", {}});
        req.condition = dcbd::append_condition{
          dcbd::query{{dcbd::query_item{{"Ordered"}, {tag}}}}, std::nullopt};
        if (with_job)
          req.jobs.push_back(request("confirm", i));
        if (eng.append(std::move(req)))
          ++acked;
        else
          ++failed;
      }
    });
  for (auto& t : workers)
    t.join();
  return static_cast<double>(acked.load()) / secs_since(t0, steady::now());
}

void append_jobs() {
  auto threads = size_env("APPEND_THREADS", 8);
  auto secs = number_env("APPEND_SECONDS", 5);
  fixture f{"bench_jobs_append"};
  // The probe: does the append write its job?
  dcbd::append_request probe;
  probe.events.push_back(dcbd::event{"Probe", {"probe:1"}, "{}", {}});
  probe.jobs.push_back(request("probe", 0));
  auto ack = f.eng().append(std::move(probe));
  if (!ack)
    throw std::runtime_error("append-jobs: probe append failed: "
                             + to_string(ack.error()));
  if (f.count("kind = 'probe'") != "1") {
    std::printf("summary append_jobs honoured=0\n");
    std::fflush(stdout);
    return;
  }
  std::atomic<std::size_t> failed{0};
  auto plain = conditional_appends(f.eng(), false, threads, secs, failed);
  auto with = conditional_appends(f.eng(), true, threads, secs, failed);
  std::printf("summary append_jobs honoured=1 threads=%zu seconds=%.1f "
              "plain_appends_per_s=%.0f with_job_appends_per_s=%.0f "
              "ratio=%.3f failed=%zu\n",
              threads, secs, plain, with, plain > 0 ? with / plain : 0.0,
              failed.load());
  std::fflush(stdout);
}

} // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (args.empty())
      args = {"noop",    "enqueue", "scaling",
              "trigger", "latency", "append-jobs"};
    for (const auto& w : args) {
      if (w == "noop") {
        for (auto c : list_env("NOOP_CONCURRENCY", "500"))
          noop(c);
      } else if (w == "enqueue") {
        enqueue();
      } else if (w == "scaling") {
        scaling();
      } else if (w == "trigger") {
        trigger();
      } else if (w == "latency") {
        latency();
      } else if (w == "append-jobs") {
        append_jobs();
      } else {
        throw std::runtime_error("unknown workload " + w
                                 + " (noop enqueue scaling trigger latency "
                                   "append-jobs)");
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "dcbd_jobs_bench: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
