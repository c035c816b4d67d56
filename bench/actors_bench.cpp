// Actor benchmarks (`./dev bench actors`): the event store in-process
// through the actors (appenders -> store actor with group commit, readers),
// on go-crablet's "realistic" workload shapes. The raw PostgreSQL baseline
// (bench/pgbench_baseline.sh) is measured in the same run by
// bench/run_actors_bench.sh.
//
// One actor system (2 scheduler threads) and one dcbd::engine (engine_config
// defaults except 4 readers) serve the whole process, on a fresh schema
// `bench_actors`. The dataset, loaded once by the first benchmark:
//   - 10,000 background subscriptions (random course:0..999 and
//     student:0..9,999 tags);
//   - the query boundary: 34 StudentSubscribedToCourse events tagged
//     student:query;
//   - the project boundary: 100 events tagged course:project, 34
//     StudentSubscribedToCourse, 33 StudentUnsubscribedFromCourse and 33
//     CourseCapacityChanged.
// Reads are registered first, so they see the dataset as loaded; appends
// then grow the log.
//
// A round is every caller making one call; callers:N means N calls in flight
// at once. The N callers are one driver actor that sends N requests at once
// (`self->request(...).then(...)`) and tells the benchmark thread when the
// last reply is in. Workloads:
//   Query/callers:N                  (read_atom) the 34-event boundary
//   Project/callers:N                (project_atom) 3 counting projectors
//                                    (one per event type) over the 100-event
//                                    boundary
//   Append/callers:N/events:E        (append_atom) E fresh subscriptions per
//                                    call, unconditional
//   ConditionalAppend/callers:N      one fresh subscription per call, with
//                                    condition {StudentSubscribedToCourse on
//                                    the student's own fresh tag, after = 0}:
//                                    never conflicts, but the check runs
//   ConditionalAppendJobs/callers:N/jobs:J
//                                    ConditionalAppend, each call carrying
//                                    J jobs (queue "bench", small args)
//                                    inserted in the same statement: jobs:0
//                                    against jobs:1 is the cost of enqueueing
//                                    with appends (the jobs are never run;
//                                    the table grows)
//   Execute/callers:N                (execute_atom to the appenders) a
//                                    command: the Project model, then one
//                                    fresh subscription outside its
//                                    boundary under its condition (never
//                                    conflicts: the model stays at 100
//                                    events)
//   ExecuteUnbounded/callers:N       the same commands through
//                                    eng.execute_unbounded from the driver:
//                                    the first round on the driver's thread
//                                    from the cache, the append straight to
//                                    the store actor
//   ConflictingAppend/callers:N      real conflicts: callers:1 appends to a
//                                    boundary that already has an event past
//                                    its stale `after`, so every call fails;
//                                    callers:N>1 share ceil(N/10) fresh
//                                    course boundaries per round (10 callers
//                                    each, `after` = the head known when the
//                                    round starts), so exactly one call per
//                                    boundary wins and the rest conflict
//   Blocking*/...                    the same single-caller calls through the
//                                    engine's blocking API (eng.append,
//                                    eng.read, eng.project, eng.execute):
//                                    reads and projections on the calling
//                                    thread from the cache, appends straight
//                                    to the store actor, commands as
//                                    ExecuteUnbounded
//   Direct*/...                      the same single-caller calls on a
//                                    pg_event_store of the same schema, on
//                                    the benchmark thread, without actors:
//                                    the floor under the numbers above
// Counters: time = ms per round; calls/s and events/s (appended, read or
// projected events); p50_us/p99_us = per-call latency from request to reply
// as the caller sees it (the driver actor; the benchmark thread for
// Blocking* and Direct*); round_p50_us = median round as the benchmark
// thread sees it (adds the hand-off into and out of the actor system);
// ok/s and conflicts/s for appends; reqs/group = mean append requests per
// store group commit. Every benchmark checks its answers (event counts,
// projected counts, expected outcomes) and fails on any mismatch. At the
// end, one `summary` line per benchmark (the median of the repetitions).
//
// usage: dcbd_actors_bench [google-benchmark flags] [CAF options, e.g.
//        --scheduler.policy=sharing]
// env: DCBD_TEST_PG_DSN, else DCB_POSTGRES_DSN (default host=127.0.0.1
//      port=55432 user=postgres dbname=postgres)

#include "bench/actors_harness.hpp"

#include <benchmark/benchmark.h>

namespace {

using namespace dcbd::bench;

// -- reads ----------------------------------------------------------------

void BM_Query(benchmark::State& state) {
  auto callers = static_cast<std::size_t>(state.range(0));
  if (auto* env = get_env(state); env != nullptr) {
    auto readers = env->eng->readers();
    auto q = read_query();
    run_rounds(state, callers,
               [readers, q](caf::event_based_actor* self, std::uint64_t,
                            std::size_t, const call_done& done) {
                 self
                   ->request(readers, request_timeout, dcbd::read_atom::value,
                             q, dcbd::read_options{})
                   .then(
                     [done](const dcbd::read_result& r) {
                       if (r.events.size() != query_events)
                         done(outcome::failed, 0,
                              "the read returned "
                                + std::to_string(r.events.size()) + " events");
                       else
                         done(outcome::ok, r.events.size());
                     },
                     [done](caf::error& err) {
                       done(outcome::failed, 0, dcbd::message_of(err));
                     });
               });
  }
}

void BM_Project(benchmark::State& state) {
  auto callers = static_cast<std::size_t>(state.range(0));
  if (auto* env = get_env(state); env != nullptr) {
    auto readers = env->eng->readers();
    dcbd::decision_model model{
      std::make_shared<const std::vector<dcbd::projector>>(
        counting_projectors())};
    run_rounds(
      state, callers,
      [readers, model](caf::event_based_actor* self, std::uint64_t, std::size_t,
                       const call_done& done) {
        self
          ->request(readers, request_timeout, dcbd::project_atom::value, model)
          .then(
            [done](const dcbd::projection& d) {
              auto err = d.states ? check_counts(*d.states)
                                  : std::string{"no states"};
              if (err.empty() && d.events_read != project_events)
                err = "read " + std::to_string(d.events_read) + " events";
              if (!err.empty())
                done(outcome::failed, 0, err);
              else
                done(outcome::ok, d.events_read);
            },
            [done](caf::error& err) {
              done(outcome::failed, 0, dcbd::message_of(err));
            });
      });
  }
}

// -- appends --------------------------------------------------------------

void BM_Append(benchmark::State& state) {
  auto callers = static_cast<std::size_t>(state.range(0));
  auto n = static_cast<std::size_t>(state.range(1));
  if (auto* env = get_env(state); env != nullptr) {
    auto appenders = env->eng->appenders();
    auto rng = std::make_shared<std::mt19937_64>(4);
    run_rounds(
      state, callers,
      [appenders, n, rng](caf::event_based_actor* self, std::uint64_t,
                          std::size_t, const call_done& done) {
        send_append(self, appenders,
                    dcbd::append_request{fresh_subscriptions(n, *rng),
                                         std::nullopt},
                    done);
      },
      all_ok, true);
  }
}

// The typical DCB call: append if nothing matching the decision model's
// query came after the position it was read at. Each caller's boundary is a
// fresh student, so the condition always holds; `after` = 0 makes the
// database check run on every call.
void BM_ConditionalAppend(benchmark::State& state) {
  auto callers = static_cast<std::size_t>(state.range(0));
  if (auto* env = get_env(state); env != nullptr) {
    auto appenders = env->eng->appenders();
    auto rng = std::make_shared<std::mt19937_64>(5);
    run_rounds(
      state, callers,
      [appenders, rng](caf::event_based_actor* self, std::uint64_t, std::size_t,
                       const call_done& done) {
        auto student = student_tag(fresh_id());
        dcbd::append_condition cond{
          dcbd::query{{item({subscribed}, {student})}}, 0};
        std::vector<dcbd::event> events{
          subscription(course_tag((*rng)() % n_courses), std::move(student))};
        send_append(self, appenders,
                    dcbd::append_request{std::move(events), std::move(cond)},
                    done);
      },
      all_ok, true);
  }
}

// ConditionalAppend with `jobs` jobs per call, enqueued in the statement
// of its events; jobs:0 is the same workload without them, measured by the
// same function so that the two differ in nothing else.
void BM_ConditionalAppendJobs(benchmark::State& state) {
  auto callers = static_cast<std::size_t>(state.range(0));
  auto n_jobs = static_cast<std::size_t>(state.range(1));
  if (auto* env = get_env(state); env != nullptr) {
    auto appenders = env->eng->appenders();
    auto rng = std::make_shared<std::mt19937_64>(7);
    run_rounds(
      state, callers,
      [appenders, rng, n_jobs](caf::event_based_actor* self, std::uint64_t,
                               std::size_t, const call_done& done) {
        auto student = student_tag(fresh_id());
        dcbd::append_condition cond{
          dcbd::query{{item({subscribed}, {student})}}, 0};
        std::vector<dcbd::job_request> jobs(n_jobs);
        for (auto& j : jobs) {
          j.queue = "bench";
          j.kind = "welcome";
          j.args = R"({"student":")" + student + R"("})";
        }
        std::vector<dcbd::event> events{
          subscription(course_tag((*rng)() % n_courses), std::move(student))};
        send_append(self, appenders,
                    dcbd::append_request{std::move(events), std::move(cond),
                                         std::move(jobs)},
                    done);
      },
      all_ok, true);
  }
}

// Real conflicts (see the header comment): callers:1 always conflicts;
// callers:N shares ceil(N/10) fresh boundaries per round, with `after` =
// the known head at the start of the round.
void BM_ConflictingAppend(benchmark::State& state) {
  auto callers = static_cast<std::size_t>(state.range(0));
  auto* env = get_env(state);
  if (env == nullptr)
    return;
  auto appenders = env->eng->appenders();
  auto rng = std::make_shared<std::mt19937_64>(6);
  auto run = fresh_id();   // names this run's boundaries
  std::uint64_t after = 0; // callers:1: the stale `after`
  std::string seeded;      // callers:1: the boundary with an event past it
  std::size_t boundaries = (callers + callers_per_boundary - 1)
                           / callers_per_boundary;
  std::uint64_t winners = boundaries;
  if (callers == 1) {
    try {
      after = value_or_throw(env->eng->head(), "head");
      seeded = "course:conflict-" + std::to_string(run);
      value_or_throw(
        env->eng->append({subscription(seeded, student_tag(fresh_id()))}),
        "seeding the conflict boundary");
    } catch (const std::exception& e) {
      state.SkipWithError(e.what());
      return;
    }
    winners = 0;
  }
  check_fn check = [winners](const round_sync& t, std::uint64_t rounds) {
    if (t.failed > 0)
      return std::to_string(t.failed)
             + " calls failed, first: " + t.first_error;
    if (t.ok != rounds * winners || t.ok + t.conflicts != rounds * t.callers)
      return std::to_string(t.ok) + " of " + std::to_string(rounds * t.callers)
             + " calls succeeded, " + std::to_string(rounds * winners)
             + " should have";
    return std::string{};
  };
  run_rounds(
    state, callers,
    [appenders, rng, run, after, seeded,
     boundaries](caf::event_based_actor* self, std::uint64_t round,
                 std::size_t caller, const call_done& done) {
      auto course = !seeded.empty() ? seeded
                                    : "course:contended-" + std::to_string(run)
                                        + "-" + std::to_string(round) + "-"
                                        + std::to_string(caller % boundaries);
      dcbd::append_condition cond{dcbd::query{{item({subscribed}, {course})}},
                                  seeded.empty() ? done.sync->head : after};
      std::vector<dcbd::event> events{
        subscription(std::move(course), student_tag(fresh_id()))};
      send_append(self, appenders,
                  dcbd::append_request{std::move(events), std::move(cond)},
                  done);
    },
    check, true);
}

// -- one caller on the benchmark thread: the blocking API, the bare store --

// Times `call(env, events)` (which returns an error message or "" and adds
// to `events`) once per iteration after one checked warm-up call.
template <class Call>
void run_blocking(benchmark::State& state, Call call) {
  auto* env = get_env(state);
  if (env == nullptr)
    return;
  try {
    std::uint64_t events = 0;
    if (auto err = call(*env, events); !err.empty()) {
      state.SkipWithError(("warm-up call: " + err).c_str());
      return;
    }
    events = 0;
    std::vector<double> calls_us;
    for (auto _ : state) {
      auto t0 = clock_type::now();
      auto err = call(*env, events);
      calls_us.push_back(
        std::chrono::duration<double, std::micro>(clock_type::now() - t0)
          .count());
      if (!err.empty()) {
        state.SkipWithError(err.c_str());
        return;
      }
    }
    using benchmark::Counter;
    state.counters["calls/s"] = Counter(static_cast<double>(state.iterations()),
                                        Counter::kIsRate);
    state.counters["events/s"] = Counter(static_cast<double>(events),
                                         Counter::kIsRate);
    state.counters["p50_us"] = percentile(calls_us, 0.5);
    state.counters["p99_us"] = percentile(calls_us, 0.99);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

void BM_BlockingQuery(benchmark::State& state) {
  auto q = read_query();
  run_blocking(state, [&](bench_env& env, std::uint64_t& events) {
    auto r = env.eng->read(q);
    if (!r)
      return dcbd::message_of(r.error());
    if (r->events.size() != query_events)
      return "the read returned " + std::to_string(r->events.size())
             + " events";
    for (const auto& e : r->events)
      if (e.event.tags.size() != 2 || e.event.tags[1] != query_tag)
        return std::string{"an event without "} + query_tag;
    events += r->events.size();
    return std::string{};
  });
}

void BM_BlockingProject(benchmark::State& state) {
  auto ps = counting_projectors();
  run_blocking(state, [&](bench_env& env, std::uint64_t& events) {
    auto p = env.eng->project(ps);
    if (!p)
      return dcbd::message_of(p.error());
    if (auto err = check_counts(*p->states); !err.empty())
      return err;
    events += project_events;
    return std::string{};
  });
}

void BM_BlockingAppend(benchmark::State& state) {
  auto n = static_cast<std::size_t>(state.range(0));
  std::mt19937_64 rng{7};
  run_blocking(state, [&](bench_env& env, std::uint64_t& events) {
    auto ack = env.eng->append(fresh_subscriptions(n, rng));
    if (!ack)
      return dcbd::message_of(ack.error());
    if (ack->last_position - ack->first_position + 1 != n)
      return std::string{"an ack for the wrong number of events"};
    events += n;
    return std::string{};
  });
}

void BM_BlockingConditionalAppend(benchmark::State& state) {
  std::mt19937_64 rng{8};
  run_blocking(state, [&](bench_env& env, std::uint64_t& events) {
    auto student = student_tag(fresh_id());
    dcbd::append_condition cond{dcbd::query{{item({subscribed}, {student})}},
                                0};
    auto ack = env.eng->append(
      {subscription(course_tag(rng() % n_courses), std::move(student))},
      std::move(cond));
    if (!ack)
      return dcbd::message_of(ack.error());
    events += 1;
    return std::string{};
  });
}

// A command: the project workload's model, then one subscription of a
// fresh student to a random course (outside the model's boundary, so the
// model stays at 100 events) under the model's condition. Rejected (and
// the benchmark fails) when the counts are wrong.
dcbd::command subscribe_command(std::mt19937_64& rng) {
  auto course = course_tag(rng() % n_courses);
  return dcbd::command{"subscribe", counting_projectors(),
                       [course](const dcbd::decision_states& s) {
                         if (auto err = check_counts(s); !err.empty())
                           return dcbd::verdict::reject(err);
                         return dcbd::verdict::accept(
                           {subscription(course, student_tag(fresh_id()))});
                       }};
}

std::string check_outcome(const dcbd::command_outcome& o) {
  if (!o.accepted)
    return "rejected: " + o.rejection;
  if (o.attempts != 1)
    return "took " + std::to_string(o.attempts) + " attempts";
  return {};
}

void BM_Execute(benchmark::State& state) {
  auto callers = static_cast<std::size_t>(state.range(0));
  if (auto* env = get_env(state); env != nullptr) {
    auto appenders = env->eng->appenders();
    auto rng = std::make_shared<std::mt19937_64>(11);
    run_rounds(state, callers,
               [appenders, rng](caf::event_based_actor* self, std::uint64_t,
                                std::size_t, const call_done& done) {
                 auto cmd = std::make_shared<const dcbd::command>(
                   subscribe_command(*rng));
                 self
                   ->request(appenders, request_timeout,
                             dcbd::execute_atom::value,
                             dcbd::command_request{cmd->name, cmd})
                   .then(
                     [done](const dcbd::command_outcome& o) {
                       if (auto err = check_outcome(o); !err.empty())
                         done(outcome::failed, 0, err);
                       else
                         done(outcome::ok, 1);
                     },
                     [done](caf::error& err) {
                       done(outcome::failed, 0, dcbd::message_of(err));
                     });
               });
  }
}

void BM_ExecuteUnbounded(benchmark::State& state) {
  auto callers = static_cast<std::size_t>(state.range(0));
  if (auto* env = get_env(state); env != nullptr) {
    auto* eng = env->eng.get();
    auto rng = std::make_shared<std::mt19937_64>(13);
    run_rounds(state, callers,
               [eng, rng](caf::event_based_actor*, std::uint64_t, std::size_t,
                          const call_done& done) {
                 eng->execute_unbounded(
                   subscribe_command(*rng),
                   [done](caf::expected<dcbd::command_outcome> o) {
                     if (!o)
                       done(outcome::failed, 0, dcbd::message_of(o.error()));
                     else if (auto err = check_outcome(*o); !err.empty())
                       done(outcome::failed, 0, err);
                     else
                       done(outcome::ok, 1);
                   });
               });
  }
}

void BM_BlockingExecute(benchmark::State& state) {
  std::mt19937_64 rng{12};
  run_blocking(state, [&](bench_env& env, std::uint64_t& events) {
    auto o = env.eng->execute(subscribe_command(rng));
    if (!o)
      return dcbd::message_of(o.error());
    if (auto err = check_outcome(*o); !err.empty())
      return err;
    events += 1;
    return std::string{};
  });
}

// The bare PostgreSQL store on the benchmark thread, no actors: the floor
// the actor benchmarks above stand on.

void BM_DirectQuery(benchmark::State& state) {
  auto q = read_query();
  run_blocking(state, [&](bench_env& env, std::uint64_t& events) {
    auto r = env.direct->read(q);
    if (r.events.size() != query_events)
      return "the read returned " + std::to_string(r.events.size()) + " events";
    events += r.events.size();
    return std::string{};
  });
}

void BM_DirectProject(benchmark::State& state) {
  auto ps = counting_projectors();
  run_blocking(state, [&](bench_env& env, std::uint64_t& events) {
    // As a reader does it: validate a copy, then project.
    auto model = ps;
    dcbd::validate(model, dcbd::limits{});
    auto d = dcbd::project(*env.direct, model);
    if (auto err = check_counts(*d.states); !err.empty())
      return err;
    events += d.events_read;
    return std::string{};
  });
}

void BM_DirectAppend(benchmark::State& state) {
  auto n = static_cast<std::size_t>(state.range(0));
  std::mt19937_64 rng{9};
  run_blocking(state, [&](bench_env& env, std::uint64_t& events) {
    env.direct->append(fresh_subscriptions(n, rng));
    events += n;
    return std::string{};
  });
}

void BM_DirectConditionalAppend(benchmark::State& state) {
  std::mt19937_64 rng{10};
  run_blocking(state, [&](bench_env& env, std::uint64_t& events) {
    auto student = student_tag(fresh_id());
    dcbd::append_condition cond{dcbd::query{{item({subscribed}, {student})}},
                                0};
    env.direct->append(
      {subscription(course_tag(rng() % n_courses), std::move(student))},
      std::move(cond));
    events += 1;
    return std::string{};
  });
}

// Reads first, so they see the dataset as loaded.
BENCHMARK(BM_Query)->ArgName("callers")->Arg(1)->Arg(100)->UseRealTime()->Unit(
  benchmark::kMillisecond);
BENCHMARK(BM_BlockingQuery)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DirectQuery)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Project)
  ->ArgName("callers")
  ->Arg(1)
  ->Arg(100)
  ->UseRealTime()
  ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BlockingProject)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DirectProject)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Append)
  ->ArgNames({"callers", "events"})
  ->Args({1, 1})
  ->Args({1, 10})
  ->Args({100, 1})
  ->Args({100, 10})
  ->UseRealTime()
  ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BlockingAppend)
  ->ArgName("events")
  ->Arg(1)
  ->Arg(10)
  ->UseRealTime()
  ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ConditionalAppend)
  ->ArgName("callers")
  ->Arg(1)
  ->Arg(100)
  ->UseRealTime()
  ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ConditionalAppendJobs)
  ->ArgNames({"callers", "jobs"})
  ->Args({1, 0})
  ->Args({1, 1})
  ->Args({100, 0})
  ->Args({100, 1})
  ->UseRealTime()
  ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DirectAppend)
  ->ArgName("events")
  ->Arg(1)
  ->Arg(10)
  ->UseRealTime()
  ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BlockingConditionalAppend)
  ->UseRealTime()
  ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DirectConditionalAppend)
  ->UseRealTime()
  ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Execute)
  ->ArgName("callers")
  ->Arg(1)
  ->Arg(100)
  ->UseRealTime()
  ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ExecuteUnbounded)
  ->ArgName("callers")
  ->Arg(1)
  ->Arg(100)
  ->UseRealTime()
  ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BlockingExecute)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ConflictingAppend)
  ->ArgName("callers")
  ->Arg(1)
  ->Arg(100)
  ->UseRealTime()
  ->Unit(benchmark::kMillisecond);

} // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  // What Google Benchmark left is for CAF; an unknown option fails the
  // setup (and every benchmark).
  caf_args.assign(argv + 1, argv + argc);
  benchmark::AddCustomContext(
    "dataset", std::to_string(background_events)
                 + " background subscriptions + " + std::to_string(query_events)
                 + "-event query boundary + " + std::to_string(project_events)
                 + "-event project boundary (3 projectors: "
                 + std::to_string(project_subscribed) + "/"
                 + std::to_string(project_unsubscribed) + "/"
                 + std::to_string(project_capacity) + "), schema "
                 + schema_name);
  benchmark::AddCustomContext(
    "actors", "1 actor system (scheduler.max-threads=2), 1 engine (2 "
              "appenders, 4 readers, 1 store actor); callers:N = N requests "
              "in flight from one driver actor; a round = every caller "
              "making one call");
  if (!caf_args.empty()) {
    std::string joined;
    for (const auto& a : caf_args)
      joined += (joined.empty() ? "" : " ") + a;
    benchmark::AddCustomContext("caf_options", joined);
  }
  summary_reporter reporter{isatty(STDOUT_FILENO) != 0
                              ? benchmark::ConsoleReporter::OO_Color
                              : benchmark::ConsoleReporter::OO_None};
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  the_env.reset();
  return 0;
}
