// The harness of the actor benchmarks (actors_bench.cpp): the dataset, the
// shared actor system and engine, rounds of concurrent calls driven by one
// actor, and the reporter that prints a `summary` line per benchmark. See
// actors_bench.cpp for the workloads.
#pragma once

#include "actors/engine.hpp"
#include "actors/types.hpp"
#include "store/decision.hpp"
#include "store/error.hpp"
#include "store/model.hpp"
#include "store/pg_store.hpp"

#include <benchmark/benchmark.h>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>
#include <pqxx/pqxx>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace dcbd::bench {

using clock_type = std::chrono::steady_clock;

// -- dataset --------------------------------------------------------------

inline constexpr const char* schema_name = "bench_actors";
inline constexpr std::size_t n_courses = 1'000;
inline constexpr std::size_t n_students = 10'000;
inline constexpr std::size_t background_events = 10'000;
inline constexpr std::size_t load_batch = 1'000;
inline constexpr std::size_t query_events = 34;
inline constexpr std::int64_t project_subscribed = 34;
inline constexpr std::int64_t project_unsubscribed = 33;
inline constexpr std::int64_t project_capacity = 33;
inline constexpr std::size_t project_events
  = project_subscribed + project_unsubscribed + project_capacity;
inline constexpr std::size_t callers_per_boundary = 10;
inline constexpr std::uint64_t dataset_seed = 20'240'601;
// How long one round may take before the benchmark gives up.
inline constexpr auto round_timeout = std::chrono::seconds(120);
// The timeout of each request (the engine's default call timeout).
inline constexpr auto request_timeout = std::chrono::milliseconds(30'000);

inline const std::string subscribed = "StudentSubscribedToCourse";
inline const std::string unsubscribed = "StudentUnsubscribedFromCourse";
inline const std::string capacity_changed = "CourseCapacityChanged";
inline const std::string query_tag = "student:query";
inline const std::string project_tag = "course:project";

inline std::string dsn() {
  for (const char* name : {"DCBD_TEST_PG_DSN", "DCB_POSTGRES_DSN"}) {
    const char* env = std::getenv(name);
    if (env != nullptr && *env != '\0')
      return env;
  }
  return "host=127.0.0.1 port=55432 user=postgres dbname=postgres";
}

inline std::string course_tag(std::uint64_t i) {
  return "course:" + std::to_string(i);
}

inline std::string student_tag(std::uint64_t j) {
  return "student:" + std::to_string(j);
}

// About 60 bytes of JSON, like the pgbench baseline's rows. Tags in sorted
// order ("course:" < "student:").
inline dcbd::event subscription(std::string course, std::string student) {
  auto data = R"({"studentId":")" + student + R"(","courseId":")" + course
              + R"("})";
  return dcbd::event{
    subscribed, {std::move(course), std::move(student)}, std::move(data), {}};
}

inline dcbd::query_item item(std::vector<std::string> types,
                             std::vector<std::string> tags) {
  return dcbd::query_item{std::move(types), std::move(tags)};
}

// Ids that no event carries yet (the dataset uses small ones).
inline std::uint64_t fresh_id() {
  static std::atomic<std::uint64_t> next{1'000'000};
  return next.fetch_add(1, std::memory_order_relaxed);
}

// `n` subscriptions of fresh students to random courses.
inline std::vector<dcbd::event> fresh_subscriptions(std::size_t n,
                                                    std::mt19937_64& rng) {
  std::vector<dcbd::event> out;
  out.reserve(n);
  for (std::size_t k = 0; k < n; ++k)
    out.push_back(
      subscription(course_tag(rng() % n_courses), student_tag(fresh_id())));
  return out;
}

inline dcbd::query read_query() {
  return dcbd::query{{item({subscribed}, {query_tag})}};
}

// The project workload's model: one counter per event type.
inline std::vector<dcbd::projector> counting_projectors() {
  std::vector<dcbd::projector> ps;
  for (const auto& type : {subscribed, unsubscribed, capacity_changed})
    ps.push_back(dcbd::make_projector<std::int64_t>(
      "count:" + type, dcbd::query{{item({type}, {project_tag})}},
      std::int64_t{0}, [](std::int64_t& n, const dcbd::sequenced_event&) {
        ++n;
      }));
  return ps;
}

// Empty if the projected states are right, else what is wrong.
inline std::string check_counts(const dcbd::decision_states& states) {
  std::int64_t want[] = {project_subscribed, project_unsubscribed,
                         project_capacity};
  const std::string* types[] = {&subscribed, &unsubscribed, &capacity_changed};
  for (std::size_t k = 0; k < 3; ++k) {
    auto got = states.get<std::int64_t>("count:" + *types[k]);
    if (got != want[k])
      return "projector count:" + *types[k] + " counted " + std::to_string(got)
             + ", expected " + std::to_string(want[k]);
  }
  return {};
}

// -- the shared actor system and engine -----------------------------------

struct bench_env {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::unique_ptr<dcbd::engine> eng;
  // The same schema without actors, for the Direct* benchmarks.
  std::unique_ptr<dcbd::pg_event_store> direct;
  // The head right after loading.
  std::uint64_t loaded = 0;

  ~bench_env() {
    direct.reset();
    eng.reset(); // before the actor system
    sys.reset();
  }
};

inline std::unique_ptr<bench_env> the_env;
inline std::string env_error;
// Command-line arguments left over by Google Benchmark, for CAF (e.g.
// --scheduler.policy=sharing); they override the settings below.
inline std::vector<std::string> caf_args;
inline bool env_tried = false;

template <class T>
T value_or_throw(caf::expected<T> x, const char* what) {
  if (!x)
    throw std::runtime_error{std::string{what} + ": "
                             + dcbd::message_of(x.error())};
  return std::move(*x);
}

inline void load(bench_env& env) {
  auto started = clock_type::now();
  auto& eng = *env.eng;
  std::mt19937_64 rng{dataset_seed};
  std::vector<dcbd::event> batch;
  for (std::size_t k = 0; k < background_events; ++k) {
    batch.push_back(subscription(course_tag(rng() % n_courses),
                                 student_tag(rng() % n_students)));
    if (batch.size() == load_batch || k + 1 == background_events) {
      value_or_throw(eng.append(std::move(batch)), "loading");
      batch.clear();
    }
  }
  for (std::size_t k = 0; k < query_events; ++k)
    batch.push_back(subscription(course_tag(k), query_tag));
  value_or_throw(eng.append(std::move(batch)), "loading the query boundary");
  batch.clear();
  // Interleaved, so each projector sees events spread over the boundary.
  std::int64_t left[] = {project_subscribed, project_unsubscribed,
                         project_capacity};
  for (std::size_t k = 0; batch.size() < project_events; ++k) {
    auto type = k % 3;
    if (left[type] == 0)
      continue;
    --left[type];
    if (type == 0)
      batch.push_back(subscription(project_tag, student_tag(k)));
    else
      batch.push_back(
        dcbd::event{type == 1 ? unsubscribed : capacity_changed,
                    {project_tag},
                    R"({"courseId":"project","n":)" + std::to_string(k) + "}",
                    {}});
  }
  value_or_throw(eng.append(std::move(batch)), "loading the project boundary");
  env.loaded = value_or_throw(eng.head(), "head");
  auto expected = background_events + query_events + project_events;
  if (env.loaded != expected)
    throw std::runtime_error{"loaded " + std::to_string(env.loaded)
                             + " events, expected " + std::to_string(expected)};
  {
    pqxx::connection conn{dsn()};
    pqxx::nontransaction tx{conn};
    tx.exec(std::string{"VACUUM ANALYZE "} + schema_name + ".events");
  }
  auto secs
    = std::chrono::duration<double>(clock_type::now() - started).count();
  std::fprintf(stderr,
               "actors_bench: dataset loaded into schema %s: %llu events in "
               "%.1f s\n",
               schema_name, static_cast<unsigned long long>(env.loaded), secs);
}

inline std::unique_ptr<bench_env> make_env() {
  {
    pqxx::connection conn{dsn()};
    pqxx::nontransaction tx{conn};
    tx.exec("SET client_min_messages = warning");
    tx.exec(std::string{"DROP SCHEMA IF EXISTS "} + schema_name + " CASCADE");
  }
  auto env = std::make_unique<bench_env>();
  dcbd::register_types(env->cfg);
  dcbd::tune_scheduler(env->cfg);
  env->cfg.set("scheduler.max-threads", 2);
  env->cfg.set("logger.console", caf::atom("none"));
  if (auto err = env->cfg.parse(caf_args))
    throw std::runtime_error{"CAF options: " + caf::to_string(err)};
  env->sys = std::make_unique<caf::actor_system>(env->cfg);
  dcbd::engine_config ec;
  ec.store.dsn = dsn();
  ec.store.schema = schema_name;
  ec.readers = 4;
  env->eng = std::make_unique<dcbd::engine>(*env->sys, ec);
  auto pc = ec.store;
  pc.pool_size = 1;
  env->direct = std::make_unique<dcbd::pg_event_store>(pc);
  load(*env);
  return env;
}

// The environment, made by the first caller; nullptr (and the benchmark
// skipped) if that failed.
inline bench_env* get_env(benchmark::State& state) {
  if (!env_tried) {
    env_tried = true;
    try {
      the_env = make_env();
    } catch (const std::exception& e) {
      env_error = e.what();
      the_env.reset();
      std::fprintf(stderr, "actors_bench: cannot set up: %s\n",
                   env_error.c_str());
    }
  }
  if (!the_env)
    state.SkipWithError(("setup: " + env_error).c_str());
  return the_env.get();
}

// -- rounds of concurrent calls -------------------------------------------

enum class outcome { ok, conflict, failed };

// Shared by a driver actor and the benchmark thread. The driver updates the
// tallies during a round; the benchmark thread reads them only between
// rounds (after `finished_round` says the round is over, under `mu`).
struct round_sync {
  explicit round_sync(std::size_t n) : callers(n) {
    // nop
  }

  const std::size_t callers;
  // Calls of the current round still waiting for a reply (set by the
  // driver when no call is out; then under `mu`, as the tallies).
  std::size_t pending = 0;
  std::mutex mu;
  std::condition_variable cv;
  std::uint64_t finished_round = 0;
  // Tallies since the last reset.
  std::uint64_t ok = 0;
  std::uint64_t conflicts = 0;
  std::uint64_t failed = 0;
  std::uint64_t events = 0;
  std::string first_error;
  std::vector<double> latencies_us;
  // The known head: the store head when the benchmark started, raised by
  // every ack; at the start of a round it covers every earlier round.
  std::uint64_t head = 0;

  void reset() {
    ok = conflicts = failed = events = 0;
    first_error.clear();
    latencies_us.clear();
  }
};

// Completes one call: a reply handler calls it exactly once, from any
// thread (the engine's `*_unbounded` calls answer on the store actor's).
struct call_done {
  std::shared_ptr<round_sync> sync;
  std::uint64_t round;
  clock_type::time_point started;

  void operator()(outcome o, std::uint64_t events,
                  const std::string& error = {},
                  std::uint64_t last_position = 0) const {
    auto& s = *sync;
    std::lock_guard<std::mutex> guard{s.mu};
    s.head = std::max(s.head, last_position);
    s.latencies_us.push_back(
      std::chrono::duration<double, std::micro>(clock_type::now() - started)
        .count());
    switch (o) {
      case outcome::ok:
        ++s.ok;
        s.events += events;
        break;
      case outcome::conflict:
        ++s.conflicts;
        break;
      case outcome::failed:
        if (s.failed++ == 0)
          s.first_error = error;
        break;
    }
    if (--s.pending == 0) {
      s.finished_round = round;
      s.cv.notify_one();
    }
  }
};

// Makes call `caller` of round `round`: sends one request from `self` and
// calls `done` from its reply handlers.
using job_fn
  = std::function<void(caf::event_based_actor* self, std::uint64_t round,
                       std::size_t caller, const call_done& done)>;

using go_atom = caf::atom_constant<caf::atom("benchGo")>;

inline caf::behavior driver_impl(caf::event_based_actor* self,
                                 std::shared_ptr<round_sync> sync, job_fn job) {
  return {
    [self, sync, job](go_atom, std::uint64_t round) {
      sync->pending = sync->callers;
      for (std::size_t c = 0; c < sync->callers; ++c)
        job(self, round, c, call_done{sync, round, clock_type::now()});
    },
  };
}

// A driver actor plus the benchmark thread's side of it.
class driver {
public:
  driver(caf::actor_system& sys, std::size_t callers, job_fn job)
    : sync_(std::make_shared<round_sync>(callers)) {
    actor_ = sys.spawn(driver_impl, sync_, std::move(job));
  }

  ~driver() {
    caf::anon_send_exit(actor_, caf::exit_reason::user_shutdown);
  }

  driver(const driver&) = delete;
  driver& operator=(const driver&) = delete;

  // Runs one round; false if it did not finish within `round_timeout`.
  bool run_round() {
    auto r = ++round_;
    caf::anon_send(actor_, go_atom::value, r);
    std::unique_lock<std::mutex> lock{sync_->mu};
    return sync_->cv.wait_for(lock, round_timeout, [&] {
      return sync_->finished_round >= r;
    });
  }

  // Only between rounds.
  round_sync& tallies() {
    return *sync_;
  }

private:
  std::shared_ptr<round_sync> sync_;
  caf::actor actor_;
  std::uint64_t round_ = 0;
};

inline double percentile(std::vector<double> xs, double p) {
  if (xs.empty())
    return 0;
  auto k = static_cast<std::size_t>(p * static_cast<double>(xs.size() - 1));
  std::nth_element(xs.begin(), xs.begin() + static_cast<std::ptrdiff_t>(k),
                   xs.end());
  return xs[k];
}

// Requests per group commit between two store stats.
inline double requests_per_group(const dcbd::store_stats& a,
                                 const dcbd::store_stats& b) {
  auto groups = b.groups - a.groups;
  auto requests = (b.appended - a.appended) + (b.conflicts - a.conflicts);
  return groups == 0
           ? 0.0
           : static_cast<double>(requests) / static_cast<double>(groups);
}

// Checks the tallies of `rounds` rounds; empty if they are as expected.
using check_fn
  = std::function<std::string(const round_sync& t, std::uint64_t rounds)>;

// Expects every call to succeed.
inline std::string all_ok(const round_sync& t, std::uint64_t rounds) {
  if (t.failed > 0)
    return std::to_string(t.failed) + " calls failed, first: " + t.first_error;
  if (t.ok != rounds * t.callers)
    return std::to_string(t.conflicts) + " of "
           + std::to_string(rounds * t.callers) + " calls conflicted";
  return {};
}

// Runs rounds of `callers` concurrent calls made by `job`: one checked
// warm-up round, then the timed rounds; sets the counters.
// `appends`: report reqs/group, ok/s and conflicts/s.
inline void run_rounds(benchmark::State& state, std::size_t callers, job_fn job,
                       const check_fn& check = all_ok, bool appends = false) {
  auto* env = get_env(state);
  if (env == nullptr)
    return;
  try {
    driver d{*env->sys, callers, std::move(job)};
    d.tallies().head = value_or_throw(env->eng->head(), "head");
    if (!d.run_round()) {
      state.SkipWithError("the warm-up round timed out");
      return;
    }
    if (auto err = check(d.tallies(), 1); !err.empty()) {
      state.SkipWithError(("warm-up round: " + err).c_str());
      return;
    }
    d.tallies().reset();
    auto stats0 = value_or_throw(env->eng->stats(), "stats");
    std::vector<double> rounds_us;
    std::uint64_t rounds = 0;
    for (auto _ : state) {
      auto t0 = clock_type::now();
      if (!d.run_round()) {
        state.SkipWithError("a round timed out");
        return; // the driver may still write its tallies
      }
      rounds_us.push_back(
        std::chrono::duration<double, std::micro>(clock_type::now() - t0)
          .count());
      ++rounds;
    }
    auto stats1 = value_or_throw(env->eng->stats(), "stats");
    auto& t = d.tallies();
    if (auto err = check(t, rounds); !err.empty()) {
      state.SkipWithError(err.c_str());
      return;
    }
    using benchmark::Counter;
    state.counters["calls/s"] = Counter(static_cast<double>(rounds * callers),
                                        Counter::kIsRate);
    state.counters["events/s"] = Counter(static_cast<double>(t.events),
                                         Counter::kIsRate);
    state.counters["p50_us"] = percentile(t.latencies_us, 0.5);
    state.counters["p99_us"] = percentile(t.latencies_us, 0.99);
    state.counters["round_p50_us"] = percentile(rounds_us, 0.5);
    if (appends) {
      state.counters["reqs/group"] = requests_per_group(stats0, stats1);
      state.counters["ok/s"] = Counter(static_cast<double>(t.ok),
                                       Counter::kIsRate);
      state.counters["conflicts/s"] = Counter(static_cast<double>(t.conflicts),
                                              Counter::kIsRate);
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// Reply handlers for appends: a conflict is an outcome, anything else that
// is not an ack a failure.
inline void send_append(caf::event_based_actor* self,
                        const dcbd::appender_actor& to,
                        dcbd::append_request req, const call_done& done) {
  auto n = req.events.size();
  self->request(to, request_timeout, dcbd::append_atom::value, std::move(req))
    .then(
      [done, n](const dcbd::append_ack& ack) {
        if (ack.last_position - ack.first_position + 1 != n)
          done(outcome::failed, 0, "an ack for the wrong number of events");
        else
          done(outcome::ok, n, {}, ack.last_position);
      },
      [done](caf::error& err) {
        if (dcbd::code_of(err) == dcbd::errc::append_condition_failed)
          done(outcome::conflict, 0);
        else
          done(outcome::failed, 0, dcbd::message_of(err));
      });
}

// -- reporting ------------------------------------------------------------

// The console reporter plus one `summary` line per benchmark at the end:
// the median of the repetitions when there are several, else the run.
class summary_reporter : public benchmark::ConsoleReporter {
public:
  using ConsoleReporter::ConsoleReporter;

  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& r : runs) {
      if (r.error_occurred)
        continue;
      bool median = r.run_type == Run::RT_Aggregate
                    && r.aggregate_name == "median";
      if (r.run_type == Run::RT_Aggregate && !median)
        continue;
      auto name = r.run_name.str();
      auto& slot = rows_[name];
      if (median || !slot.median)
        slot = row{r, median};
    }
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    auto& out = GetOutputStream();
    out << "\n";
    for (const auto& [name, row] : rows_) {
      const auto& r = row.run;
      auto counter = [&](const char* key) -> std::string {
        auto i = r.counters.find(key);
        if (i == r.counters.end())
          return {};
        char buf[64];
        std::snprintf(buf, sizeof buf, " %s=%.1f", key, i->second.value);
        return buf;
      };
      char buf[64];
      // kMillisecond: the adjusted real time is ms per round.
      std::snprintf(buf, sizeof buf, " ms_per_round=%.3f",
                    r.GetAdjustedRealTime());
      out << "summary " << name << buf << counter("calls/s")
          << counter("events/s") << counter("ok/s") << counter("conflicts/s")
          << counter("p50_us") << counter("p99_us") << counter("round_p50_us")
          << counter("reqs/group") << (row.median ? " (median)" : "") << "\n";
    }
  }

private:
  struct row {
    Run run;
    bool median = false;
  };
  std::map<std::string, row> rows_;
};

} // namespace dcbd::bench
