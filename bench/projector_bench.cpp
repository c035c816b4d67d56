// The projector benchmarks (`./dev bench projectors`,
// bench/run_projectors_bench.sh):
//
//   catchup    CATCHUP_EVENTS (1,000,000) StudentSubscribed events (data
//              {"student":"s<i>","course":"c<i % 1000>"}, with 1,000
//              CourseDefined first and a CourseRenamed after every 100th)
//              in a fresh schema, through pg_event_store
//              (CATCHUP_SETUP_BATCH events per append, 1,000); then an
//              exactly_once projector (batch_max 500) catches up from 0 on
//              a fresh engine, once doing one upsert per event (`per_event`, a
//              prepared statement: the shape of the pgbench baseline the script
//              runs) and once one statement per batch (`per_batch`, as
//              examples/courses does). Every course must end with its count.
//   lag        a caught-up projector while 4 threads append one event each
//              at LAG_RATE (5,000) events/s for LAG_SECONDS (10); a sampler
//              reads projector_host::snapshot() every millisecond. Lag in
//              events: log head - projector position per sample; lag in ms:
//              for each event, its append acknowledgement -> the first
//              sample whose position covers it.
//   takeover   two `owner-node` processes of this binary (an engine and a
//              projector host running `course_seats`) on one schema; each
//              round SIGKILLs the owner and times the kill -> the row in
//              <schema>.projectors names the other node under a higher
//              epoch (polled every 2 ms), then restarts the killed node.
//              `takeover-courses <binary>` does the same with dcbd-courses.
//
// Each prints `summary <name> key=value ...` lines that the script turns
// into the table. Schemas bench_projectors* are dropped before and after.
#include "actors/engine.hpp"
#include "actors/projector.hpp"
#include "actors/types.hpp"
#include "store/pg_store.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using json = nlohmann::json;

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

double secs_since(steady::time_point t0, steady::time_point t1) {
  return std::chrono::duration<double>(t1 - t0).count();
}

double ms_between(steady::time_point t0, steady::time_point t1) {
  return std::chrono::duration<double, std::milli>(t1 - t0).count();
}

void exec_sql(const std::string& sql) {
  pqxx::connection conn{dsn()};
  pqxx::work tx{conn};
  tx.exec(sql);
  tx.commit();
}

void drop_schema(const std::string& schema) {
  exec_sql("DROP SCHEMA IF EXISTS " + schema + " CASCADE");
}

dcbd::pg_config store_cfg(const std::string& schema) {
  dcbd::pg_config pc;
  pc.dsn = dsn();
  pc.schema = schema;
  pc.pool_size = 1;
  return pc;
}

dcbd::engine_config engine_cfg(const std::string& schema) {
  dcbd::engine_config ec;
  ec.store = store_cfg(schema);
  ec.readers = 4;
  ec.appenders = 2;
  return ec;
}

struct system_holder {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;

  system_holder() {
    dcbd::register_types(cfg);
    dcbd::tune_scheduler(cfg);
    cfg.set("logger.console", caf::atom("none"));
    sys = std::make_unique<caf::actor_system>(cfg);
  }
};

double percentile(std::vector<double> xs, double p) {
  if (xs.empty())
    return 0;
  std::sort(xs.begin(), xs.end());
  auto i = static_cast<std::size_t>(p * static_cast<double>(xs.size() - 1));
  return xs[i];
}

// -- the dataset and the projectors -------------------------------------------

constexpr std::size_t courses = 1000;

dcbd::event subscribed(std::size_t i) {
  auto student = "s" + std::to_string(i);
  auto course = "c" + std::to_string(i % courses);
  return dcbd::event{"StudentSubscribed",
                     {"course:" + course, "student:" + student},
                     R"({"student":")" + student + R"(","course":")" + course
                       + R"("})",
                     {}};
}

// The course a StudentSubscribed event names (as examples/courses parses
// it); throws when it names none.
std::string course_of(const dcbd::sequenced_event& e) {
  auto data = json::parse(e.event.data, nullptr, false);
  if (!data.is_object() || !data.contains("course")
      || !data["course"].is_string())
    throw std::invalid_argument("event " + std::to_string(e.position)
                                + ": no course");
  return data["course"].get<std::string>();
}

std::string create_table(const std::string& table) {
  return "CREATE TABLE IF NOT EXISTS " + table
         + " (course text PRIMARY KEY, subscribed bigint NOT NULL)";
}

enum class variant { per_event, per_batch };

const char* name_of(variant v) {
  return v == variant::per_event ? "per_event" : "per_batch";
}

// An exactly_once `course_seats` projector on `table`. per_event: one
// prepared upsert per event (the statement of the pgbench baseline);
// per_batch: the batch's counts in one statement (examples/courses).
// `batches` counts the handler's calls.
dcbd::projector_spec
seats_spec(std::string name, const std::string& table, variant v,
           std::shared_ptr<std::atomic<std::uint64_t>> batches) {
  dcbd::projector_spec spec;
  spec.name = std::move(name);
  spec.query = dcbd::query{{dcbd::query_item{{"StudentSubscribed"}, {}}}};
  spec.mode = dcbd::projector_delivery::exactly_once;
  spec.batch_max = 500;
  // PROJECTOR_LINGER_MS: how long a short batch waits for more (the spec's
  // default unless set).
  if (std::getenv("PROJECTOR_LINGER_MS"))
    spec.linger = std::chrono::milliseconds{
      static_cast<long>(number_env("PROJECTOR_LINGER_MS", 20))};
  spec.on_start = [table](pqxx::work& tx) {
    tx.exec(create_table(table));
  };
  spec.on_reset = [table](pqxx::work& tx) {
    tx.exec(create_table(table));
    tx.exec("TRUNCATE " + table);
  };
  if (v == variant::per_event) {
    auto upsert = "INSERT INTO " + table
                  + " (course, subscribed) VALUES ($1, 1) ON CONFLICT "
                    "(course) DO UPDATE SET subscribed = "
                  + table + ".subscribed + 1";
    auto statement = "bench_upsert_" + spec.name;
    spec.handle = [upsert, statement, batches](pqxx::work& tx,
                                               const dcbd::event_batch& events,
                                               const dcbd::projector_context&) {
      ++*batches;
      // Idempotent for the same definition; the server prepares it on the
      // first use on each connection.
      tx.conn().prepare(statement, upsert);
      for (auto& e : events)
        tx.exec_prepared(statement, course_of(e));
    };
  } else {
    spec.handle = [table, batches](pqxx::work& tx,
                                   const dcbd::event_batch& events,
                                   const dcbd::projector_context&) {
      ++*batches;
      std::map<std::string, long> added;
      for (auto& e : events)
        ++added[course_of(e)];
      std::string names, counts;
      for (auto& [course, n] : added) {
        names += (names.empty() ? "" : ",") + tx.quote(course);
        counts += (counts.empty() ? "" : ",") + std::to_string(n);
      }
      tx.exec("INSERT INTO " + table
              + " (course, subscribed) SELECT * FROM unnest(ARRAY[" + names
              + "]::text[], ARRAY[" + counts
              + "]::bigint[]) ON CONFLICT (course) DO UPDATE SET subscribed = "
              + table + ".subscribed + excluded.subscribed");
    };
  }
  return spec;
}

std::optional<dcbd::projector_status> local(const dcbd::projector_host& h,
                                            const std::string& name) {
  for (auto& s : h.snapshot())
    if (s.name == name)
      return s;
  return std::nullopt;
}

// Waits until `name` runs here and has applied everything up to `head`.
bool wait_caught_up(const dcbd::projector_host& h, const std::string& name,
                    std::uint64_t head, std::chrono::seconds limit) {
  auto until = steady::now() + limit;
  while (steady::now() < until) {
    auto s = local(h, name);
    if (s && s->state == dcbd::projector_state::running && s->position >= head)
      return true;
    std::this_thread::sleep_for(1ms);
  }
  return false;
}

// Whether `table` holds the counts of subscribed(0), ..., subscribed(n - 1):
// min(n, 1000) courses, n subscriptions, each course n / 1000 or one more.
bool counts_ok(const std::string& table, std::size_t n) {
  pqxx::connection conn{dsn()};
  pqxx::nontransaction tx{conn};
  auto r = tx.exec("SELECT count(*), coalesce(sum(subscribed), 0), "
                   "coalesce(min(subscribed), 0), coalesce(max(subscribed), 0) "
                   "FROM "
                   + table);
  auto rows = r[0][0].as<std::uint64_t>();
  auto sum = r[0][1].as<std::uint64_t>();
  auto lo = r[0][2].as<std::uint64_t>();
  auto hi = r[0][3].as<std::uint64_t>();
  auto want_rows = std::min(n, courses);
  return rows == want_rows && sum == n && lo == n / courses
         && hi == (n + courses - 1) / courses;
}

// -- catch-up
// ------------------------------------------------------------------

constexpr const char* catchup_schema = "bench_projectors";

void catchup() {
  auto n = static_cast<std::size_t>(number_env("CATCHUP_EVENTS", 1'000'000));
  std::string schema = catchup_schema;
  drop_schema(schema);
  auto setup_batch
    = static_cast<std::size_t>(number_env("CATCHUP_SETUP_BATCH", 1000));
  auto t0 = steady::now();
  std::uint64_t head = 0;
  {
    dcbd::pg_event_store store{store_cfg(schema)};
    std::vector<dcbd::event> evs;
    for (std::size_t c = 0; c < courses; ++c)
      evs.push_back(dcbd::event{"CourseDefined",
                                {"course:c" + std::to_string(c)},
                                R"({"capacity":100})",
                                {}});
    head = store.append(std::move(evs));
    evs.clear();
    for (std::size_t i = 0; i < n; ++i) {
      evs.push_back(subscribed(i));
      if (i % 100 == 99)
        evs.push_back(dcbd::event{"CourseRenamed",
                                  {"course:c" + std::to_string(i % courses)},
                                  R"({"name":"x"})",
                                  {}});
      if (evs.size() >= setup_batch || i + 1 == n) {
        head = store.append(std::move(evs));
        evs.clear();
      }
    }
  }
  std::printf("summary catchup_setup events=%zu log=%llu seconds=%.1f\n", n,
              static_cast<unsigned long long>(head),
              secs_since(t0, steady::now()));
  std::fflush(stdout);
  // Caught up: the last StudentSubscribed is applied.
  std::uint64_t last = 0;
  {
    pqxx::connection conn{dsn()};
    pqxx::nontransaction tx{conn};
    last = tx.exec("SELECT max(position) FROM " + schema
                   + ".events WHERE type = 'StudentSubscribed'")[0][0]
             .as<std::uint64_t>();
  }
  for (auto v : {variant::per_event, variant::per_batch}) {
    std::string name = std::string{"seats_"} + name_of(v);
    auto table = schema + "." + name;
    exec_sql(create_table(table));
    auto batches = std::make_shared<std::atomic<std::uint64_t>>(0);
    system_holder h;
    dcbd::engine eng{*h.sys, engine_cfg(schema)};
    dcbd::projector_host host{*h.sys, eng, {.node = "bench"}};
    auto added = steady::now();
    host.add(seats_spec(name, table, v, batches));
    // From the moment the instance runs (the lock and the row are taken)
    // to the moment it has applied the whole log.
    std::optional<steady::time_point> started;
    std::uint64_t at_start = 0;
    bool done = false;
    auto until = steady::now() + 30min;
    while (steady::now() < until) {
      auto s = local(host, name);
      if (s && s->state == dcbd::projector_state::running) {
        if (!started) {
          started = steady::now();
          at_start = s->position;
        }
        if (s->position >= last) {
          done = true;
          break;
        }
      }
      std::this_thread::sleep_for(1ms);
    }
    auto t1 = steady::now();
    host.stop();
    auto secs = started ? secs_since(*started, t1) : 0.0;
    bool ok = done && counts_ok(table, n);
    std::printf("summary catchup_%s events=%zu log=%llu seconds=%.2f "
                "events_per_s=%.0f batches=%llu events_per_batch=%.1f "
                "from_add_seconds=%.2f started_at=%llu correct=%d\n",
                name_of(v), n, static_cast<unsigned long long>(head), secs,
                secs > 0 ? static_cast<double>(n) / secs : 0.0,
                static_cast<unsigned long long>(batches->load()),
                batches->load() ? static_cast<double>(n)
                                    / static_cast<double>(batches->load())
                                : 0.0,
                secs_since(added, t1),
                static_cast<unsigned long long>(at_start), ok ? 1 : 0);
    std::fflush(stdout);
  }
}

// -- lag
// -----------------------------------------------------------------------

struct sample {
  steady::time_point at;
  std::uint64_t position = 0;
  std::uint64_t head = 0;
};

struct append_record {
  steady::time_point called;
  steady::time_point acked;
  std::uint64_t position = 0;
};

void fetch_max(std::atomic<std::uint64_t>& x, std::uint64_t v) {
  auto cur = x.load();
  while (cur < v && !x.compare_exchange_weak(cur, v)) {
    // cur reloaded
  }
}

void lag(variant v) {
  auto rate = number_env("LAG_RATE", 5000);
  auto secs = number_env("LAG_SECONDS", 10);
  auto threads = static_cast<std::size_t>(number_env("LAG_THREADS", 4));
  const double warmup = 1.0;
  std::string schema = "bench_projectors_lag";
  drop_schema(schema);
  system_holder h;
  dcbd::engine eng{*h.sys, engine_cfg(schema)};
  std::string name = "seats";
  auto table = schema + ".seats";
  std::vector<dcbd::event> first;
  for (std::size_t i = 0; i < 1000; ++i)
    first.push_back(subscribed(i));
  auto ack = eng.append(std::move(first));
  if (!ack)
    throw std::runtime_error("lag: set-up append failed: "
                             + to_string(ack.error()));
  auto batches = std::make_shared<std::atomic<std::uint64_t>>(0);
  dcbd::projector_host host{*h.sys, eng, {.node = "bench"}};
  host.add(seats_spec(name, table, v, batches));
  if (!wait_caught_up(host, name, ack->last_position, 60s))
    throw std::runtime_error("lag: the projector did not catch up");

  // The sampler.
  std::atomic<std::uint64_t> max_acked{ack->last_position};
  std::vector<sample> samples;
  std::vector<std::uint64_t> lag_events; // in the measured window
  samples.reserve(static_cast<std::size_t>((secs + warmup + 60) * 1000));
  std::atomic<bool> sampling{true};
  std::atomic<bool> measuring{false};
  std::thread sampler{[&] {
    while (sampling) {
      if (auto s = local(host, name)) {
        auto now = steady::now();
        auto head = std::max(s->head, max_acked.load());
        samples.push_back(sample{now, s->position, head});
        if (measuring)
          lag_events.push_back(head - std::min(head, s->position));
      }
      std::this_thread::sleep_for(1ms);
    }
  }};

  // The appenders: thread k sends events k, k + threads, ... at their
  // scheduled times, asynchronously.
  auto total = static_cast<std::size_t>(rate * (secs + warmup));
  std::vector<append_record> records(total);
  std::atomic<std::size_t> acked{0};
  std::atomic<std::size_t> failed{0};
  auto start = steady::now() + 50ms;
  auto period = std::chrono::duration<double>(1.0 / rate);
  std::vector<std::thread> appenders;
  for (std::size_t k = 0; k < threads; ++k)
    appenders.emplace_back([&, k] {
      for (std::size_t i = k; i < total; i += threads) {
        std::this_thread::sleep_until(
          start + std::chrono::duration_cast<steady::duration>(period * i));
        records[i].called = steady::now();
        eng.append({subscribed(1000 + i)}, std::nullopt,
                   [&, i](caf::expected<dcbd::append_ack> r) {
                     records[i].acked = steady::now();
                     if (r) {
                       records[i].position = r->last_position;
                       fetch_max(max_acked, r->last_position);
                     } else {
                       ++failed;
                     }
                     ++acked;
                   });
      }
    });
  std::this_thread::sleep_until(start
                                + std::chrono::duration_cast<steady::duration>(
                                  std::chrono::duration<double>(warmup)));
  measuring = true;
  for (auto& t : appenders)
    t.join();
  measuring = false;
  auto sent_secs = secs_since(start, steady::now());
  auto until = steady::now() + 60s;
  while (acked < total && steady::now() < until)
    std::this_thread::sleep_for(1ms);
  bool caught_up = wait_caught_up(host, name, max_acked.load(), 60s);
  std::this_thread::sleep_for(5ms);
  sampling = false;
  sampler.join();
  host.stop();

  // ack -> the first sample covering the event (0 when a sample before the
  // ack already did), and call -> that sample.
  std::vector<double> from_ack, from_call;
  auto measured_from = start
                       + std::chrono::duration_cast<steady::duration>(
                         std::chrono::duration<double>(warmup));
  for (std::size_t i = 0; i < total; ++i) {
    auto& r = records[i];
    if (r.position == 0 || r.called < measured_from)
      continue;
    auto it = std::partition_point(samples.begin(), samples.end(),
                                   [&](const sample& s) {
                                     return s.position < r.position;
                                   });
    if (it == samples.end())
      continue;
    from_ack.push_back(std::max(0.0, ms_between(r.acked, it->at)));
    from_call.push_back(ms_between(r.called, it->at));
  }
  std::vector<double> ev(lag_events.begin(), lag_events.end());
  std::printf(
    "summary lag_%s rate=%.0f achieved_rate=%.0f seconds=%.1f events=%zu "
    "failed=%zu caught_up=%d correct=%d samples=%zu "
    "lag_events_p50=%.0f lag_events_p99=%.0f lag_events_max=%.0f "
    "lag_ms_p50=%.2f lag_ms_p99=%.2f lag_ms_max=%.2f "
    "call_to_applied_ms_p50=%.2f call_to_applied_ms_p99=%.2f "
    "events_per_batch=%.1f\n",
    name_of(v), rate, static_cast<double>(total) / sent_secs, secs,
    from_ack.size(), failed.load(), caught_up ? 1 : 0,
    counts_ok(table, 1000 + total - failed.load()) ? 1 : 0, ev.size(),
    percentile(ev, 0.5), percentile(ev, 0.99), percentile(ev, 1.0),
    percentile(from_ack, 0.5), percentile(from_ack, 0.99),
    percentile(from_ack, 1.0), percentile(from_call, 0.5),
    percentile(from_call, 0.99),
    batches->load()
      ? static_cast<double>(1000 + total) / static_cast<double>(batches->load())
      : 0.0);
  std::fflush(stdout);
}

// -- takeover
// ------------------------------------------------------------------

// One node process: an engine and a projector host with `course_seats`
// (per batch, as examples/courses) on `schema`, until SIGTERM or SIGINT.
int owner_node(const std::string& schema, const std::string& node) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr); // every thread inherits it
  system_holder h;
  dcbd::engine eng{*h.sys, engine_cfg(schema)};
  dcbd::projector_host host{*h.sys, eng, {.node = node}};
  host.add(seats_spec("course_seats", schema + ".course_seats",
                      variant::per_batch,
                      std::make_shared<std::atomic<std::uint64_t>>(0)));
  int sig = 0;
  sigwait(&signals, &sig);
  host.stop();
  return 0;
}

// Starts node processes: this binary's `owner-node`, or dcbd-courses.
class launcher {
public:
  launcher(std::string schema, std::string courses_bin)
    : schema_(std::move(schema))
    , courses_bin_(std::move(courses_bin)) {
    // nop
  }

  pid_t start(const std::string& node) const {
    std::vector<std::string> args;
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e)
      env.emplace_back(*e);
    if (courses_bin_.empty()) {
      args = {self_exe(), "owner-node", schema_, node};
    } else {
      args = {courses_bin_};
      env.push_back("DCB_POSTGRES_DSN=" + dsn());
      env.push_back("DCB_SCHEMA=" + schema_);
      env.push_back("DCB_HTTP_ADDR=127.0.0.1:0");
      env.push_back("DCB_METRICS_ADDR=127.0.0.1:0");
      env.push_back("DCB_NODE_NAME=" + node);
    }
    std::vector<char*> argv, envp;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env)
      envp.push_back(e.data());
    envp.push_back(nullptr);
    // The node's stdout is noise here; its stderr stays.
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    pid_t pid = 0;
    auto rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(),
                          envp.data());
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0)
      throw std::runtime_error("cannot start " + args[0] + ": "
                               + std::strerror(rc));
    return pid;
  }

private:
  static std::string self_exe() {
    char buf[4096] = {};
    auto n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0)
      throw std::runtime_error("readlink /proc/self/exe failed");
    return std::string(buf, static_cast<std::size_t>(n));
  }

  std::string schema_;
  std::string courses_bin_;
};

bool alive(pid_t pid) {
  return pid > 0 && ::waitpid(pid, nullptr, WNOHANG) == 0;
}

void stop_process(pid_t& pid) {
  if (pid <= 0)
    return;
  ::kill(pid, SIGTERM);
  for (int i = 0; i < 1000; ++i) {
    if (::waitpid(pid, nullptr, WNOHANG) == pid) {
      pid = 0;
      return;
    }
    std::this_thread::sleep_for(10ms);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  pid = 0;
}

struct owner_row {
  std::string owner;
  std::uint64_t epoch = 0;
};

class row_watch {
public:
  explicit row_watch(std::string schema) : schema_(std::move(schema)) {
    // nop
  }

  std::optional<owner_row> row() {
    pqxx::nontransaction tx{conn_};
    auto r = tx.exec("SELECT owner, epoch FROM " + schema_
                     + ".projectors WHERE name = 'course_seats'");
    if (r.empty() || r[0][0].is_null())
      return std::nullopt;
    return owner_row{r[0][0].as<std::string>(), r[0][1].as<std::uint64_t>()};
  }

  /// Whether `node`'s lock session is connected (its application_name).
  bool session_of(const std::string& node) {
    pqxx::nontransaction tx{conn_};
    auto r = tx.exec_params("SELECT count(*) FROM pg_stat_activity WHERE "
                            "application_name = $1",
                            "dcbd:" + node);
    return r[0][0].as<int>() > 0;
  }

private:
  std::string schema_;
  pqxx::connection conn_{dsn()};
};

void takeover(const std::string& courses_bin) {
  auto rounds = static_cast<std::size_t>(number_env("TAKEOVER_ROUNDS", 10));
  bool courses = !courses_bin.empty();
  std::string label = courses ? "takeover_courses" : "takeover";
  std::string schema = courses ? "bench_projectors_courses"
                               : "bench_projectors_takeover";
  drop_schema(schema);
  {
    // The schema and some events for the projector.
    dcbd::pg_event_store store{store_cfg(schema)};
    std::vector<dcbd::event> evs;
    for (std::size_t i = 0; i < 10'000; ++i)
      evs.push_back(subscribed(i));
    store.append(std::move(evs));
  }
  launcher launch{schema, courses_bin};
  const std::vector<std::string> nodes{"bench-a", "bench-b"};
  std::vector<pid_t> pids{launch.start(nodes[0]), launch.start(nodes[1])};
  row_watch watch{schema};
  std::vector<double> ms;
  std::size_t timeouts = 0;
  auto index_of = [&](const std::string& node) -> int {
    for (std::size_t i = 0; i < nodes.size(); ++i)
      if (nodes[i] == node)
        return static_cast<int>(i);
    return -1;
  };
  try {
    for (std::size_t round = 0; round < rounds; ++round) {
      // A live owner.
      std::optional<owner_row> row;
      int owner = -1;
      auto until = steady::now() + 60s;
      while (steady::now() < until) {
        row = watch.row();
        owner = row ? index_of(row->owner) : -1;
        if (owner >= 0 && alive(pids[static_cast<std::size_t>(owner)]))
          break;
        owner = -1;
        std::this_thread::sleep_for(10ms);
      }
      if (owner < 0)
        throw std::runtime_error(label + ": no live owner");
      // The other node standing by: its lock session is connected (named
      // "dcbd:<node>"). A node that names its session otherwise gets 5 s.
      auto standby = nodes[static_cast<std::size_t>(1 - owner)];
      until = steady::now() + (courses ? 5s : 60s);
      while (!watch.session_of(standby) && steady::now() < until)
        std::this_thread::sleep_for(10ms);
      if (!watch.session_of(standby) && !courses)
        throw std::runtime_error(label + ": " + standby + " did not connect");
      // Let the standby settle into its polling.
      std::this_thread::sleep_for(500ms);
      auto victim = static_cast<std::size_t>(owner);
      auto& heir = nodes[1 - victim];
      auto t0 = steady::now();
      ::kill(pids[victim], SIGKILL);
      bool moved = false;
      auto limit = steady::now() + 30s;
      while (steady::now() < limit) {
        auto now = watch.row();
        if (now && now->epoch > row->epoch && now->owner == heir) {
          moved = true;
          break;
        }
        std::this_thread::sleep_for(2ms);
      }
      auto t1 = steady::now();
      ::waitpid(pids[victim], nullptr, 0);
      if (moved)
        ms.push_back(ms_between(t0, t1));
      else
        ++timeouts;
      std::fprintf(stderr, "%s round %zu: killed %s, %s after %.0f ms\n",
                   label.c_str(), round + 1, nodes[victim].c_str(),
                   moved ? ("taken over by " + heir).c_str() : "NOT taken over",
                   ms_between(t0, t1));
      pids[victim] = launch.start(nodes[victim]);
    }
  } catch (...) {
    for (auto& p : pids)
      stop_process(p);
    drop_schema(schema);
    throw;
  }
  for (auto& p : pids)
    stop_process(p);
  std::printf("summary %s rounds=%zu taken_over=%zu timeouts=%zu p50_ms=%.0f "
              "max_ms=%.0f min_ms=%.0f\n",
              label.c_str(), rounds, ms.size(), timeouts, percentile(ms, 0.5),
              percentile(ms, 1.0), percentile(ms, 0.0));
  std::fflush(stdout);
  drop_schema(schema);
}

} // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (!args.empty() && args[0] == "owner-node") {
      if (args.size() != 3) {
        std::cerr << "usage: dcbd_projector_bench owner-node <schema> <node>"
                  << std::endl;
        return 2;
      }
      return owner_node(args[1], args[2]);
    }
    if (args.empty())
      args = {"catchup", "lag", "takeover"};
    for (std::size_t i = 0; i < args.size(); ++i) {
      auto& w = args[i];
      if (w == "catchup") {
        catchup();
      } else if (w == "lag") {
        lag(variant::per_event);
        lag(variant::per_batch);
      } else if (w == "takeover") {
        takeover({});
      } else if (w == "takeover-courses") {
        if (i + 1 == args.size())
          throw std::runtime_error("takeover-courses needs the binary");
        takeover(args[++i]);
      } else {
        throw std::runtime_error("unknown workload " + w);
      }
    }
    for (auto s : {"bench_projectors", "bench_projectors_lag"})
      drop_schema(s);
  } catch (const std::exception& e) {
    std::cerr << "dcbd_projector_bench: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
