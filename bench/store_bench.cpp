// Store benchmarks (issue 2, "Benchmarks"): the PostgreSQL event store on the
// course domain of the go-crablet report, with 1,000 courses, 10,000 students
// and 50,000 enrolments (61,000 events). The raw PostgreSQL baseline
// (bench/pgbench_baseline.sh) is measured in the same run by
// bench/run_store_bench.sh (`./dev bench store`).
//
// The dataset (bench/store_dataset.*) is loaded once per process into a
// fresh schema `bench_store`, lazily, by the first benchmark that runs. Reads
// are registered before appends, so they measure the dataset as loaded. Appends
// then grow the log: each label states the load size and the counter `head` the
// log size when the benchmark started. Every benchmark checks its answer once,
// outside the timed loop.
//
// env: DCBD_TEST_PG_DSN (default host=127.0.0.1 port=55432 user=postgres
//      dbname=postgres)

#include "bench/store_dataset.hpp"
#include "store/error.hpp"
#include "store/event_store.hpp"
#include "store/matching.hpp"
#include "store/model.hpp"
#include "store/pg_store.hpp"
#include "store/validation.hpp"

#include <benchmark/benchmark.h>
#include <pqxx/pqxx>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

namespace {

using namespace dcbd::bench;

// -- reads ------------------------------------------------------------------

void BM_Head(benchmark::State& state) {
  run_guarded(state, [&](dataset& ds) {
    auto& store = *ds.store;
    auto head = store.head();
    set_label(state, ds, head);
    dcbd::read_options last;
    last.backwards = true;
    last.limit = 1;
    auto r = store.read(dcbd::query::all(), last);
    if (r.events.size() != 1 || r.events[0].position != head
        || r.head != head) {
      state.SkipWithError("head() differs from the last event's position");
      return;
    }
    for (auto _ : state)
      benchmark::DoNotOptimize(store.head());
    state.SetItemsProcessed(state.iterations());
  });
}

void BM_ReadSimple(benchmark::State& state) {
  run_guarded(state, [&](dataset& ds) {
    auto& store = *ds.store;
    set_label(state, ds, store.head());
    std::mt19937_64 rng{1};
    auto tag_query = [](std::uint64_t i) {
      return dcbd::query{{item({}, {course_tag(i)})}};
    };
    {
      auto i = rng() % n_courses;
      auto r = store.read(tag_query(i));
      auto tag = course_tag(i);
      for (const auto& e : r.events) {
        if (!has_tag(e.event, tag)) {
          state.SkipWithError(("an event without " + tag).c_str());
          return;
        }
      }
      if (!ascending(r.events) || r.head < ds.size
          || count_up_to(r.events, ds.size) != 1 + ds.course_enrolments[i]) {
        state.SkipWithError(("wrong events for " + tag).c_str());
        return;
      }
    }
    std::uint64_t events = 0;
    for (auto _ : state) {
      auto r = store.read(tag_query(rng() % n_courses));
      events += r.events.size();
      benchmark::DoNotOptimize(r);
    }
    state.SetItemsProcessed(state.iterations());
    state.counters["events/read"] = benchmark::Counter(
      static_cast<double>(events), benchmark::Counter::kAvgIterations);
  });
}

void BM_ReadComplex(benchmark::State& state) {
  run_guarded(state, [&](dataset& ds) {
    auto& store = *ds.store;
    set_label(state, ds, store.head());
    std::mt19937_64 rng{2};
    {
      // A student with courses, and one of their courses, so the items
      // overlap: the subscription must come back once.
      std::uint64_t j = rng() % n_students;
      while (ds.student_courses[j].empty())
        j = (j + 1) % n_students;
      std::uint64_t i = ds.student_courses[j].front();
      auto q = decision_model_query(i, j);
      auto r = store.read(q);
      dcbd::normalize(q);
      for (const auto& e : r.events) {
        if (!dcbd::matches(q, e.event)) {
          state.SkipWithError("an event the query does not match");
          return;
        }
      }
      auto expected = 1 + ds.course_enrolments[i] + 1
                      + ds.student_courses[j].size() - 1;
      if (!ascending(r.events) || count_up_to(r.events, ds.size) != expected) {
        state.SkipWithError("wrong events for the decision model");
        return;
      }
    }
    std::uint64_t events = 0;
    for (auto _ : state) {
      auto r = store.read(
        decision_model_query(rng() % n_courses, rng() % n_students));
      events += r.events.size();
      benchmark::DoNotOptimize(r);
    }
    state.SetItemsProcessed(state.iterations());
    state.counters["events/read"] = benchmark::Counter(
      static_cast<double>(events), benchmark::Counter::kAvgIterations);
  });
}

void BM_ReadBackwardsLast(benchmark::State& state) {
  run_guarded(state, [&](dataset& ds) {
    auto& store = *ds.store;
    set_label(state, ds, store.head());
    std::mt19937_64 rng{3};
    auto last_query = [](std::uint64_t j) {
      return dcbd::query{{item({subscribed}, {student_tag(j)})}};
    };
    dcbd::read_options last;
    last.backwards = true;
    last.limit = 1;
    {
      std::uint64_t j = rng() % n_students;
      while (ds.student_courses[j].empty())
        j = (j + 1) % n_students;
      auto all = store.read(last_query(j));
      auto r = store.read(last_query(j), last);
      if (all.events.empty() || r.events.size() != 1
          || r.events[0].position != all.events.back().position
          || !(r.events[0].event == all.events.back().event)) {
        state.SkipWithError("backwards limit 1 is not the last match");
        return;
      }
    }
    std::uint64_t events = 0;
    for (auto _ : state) {
      auto r = store.read(last_query(rng() % n_students), last);
      events += r.events.size();
      benchmark::DoNotOptimize(r);
    }
    state.SetItemsProcessed(state.iterations());
    state.counters["events/read"] = benchmark::Counter(
      static_cast<double>(events), benchmark::Counter::kAvgIterations);
  });
}

void BM_StreamAll(benchmark::State& state) {
  run_guarded(state, [&](dataset& ds) {
    auto& store = *ds.store;
    dcbd::stream_options chunking;
    chunking.chunk_events = 1000;
    // Returns the event count; sets `ok` to whether the positions were
    // exactly 1..head of the stream's snapshot.
    auto stream_all = [&](bool& ok) {
      auto s = store.stream(dcbd::query::all(), {}, chunking);
      std::vector<dcbd::sequenced_event> chunk;
      std::uint64_t n = 0;
      ok = true;
      while (s->next(chunk)) {
        for (const auto& e : chunk)
          ok = ok && e.position == ++n;
        benchmark::DoNotOptimize(chunk);
      }
      ok = ok && n == s->head();
      return n;
    };
    bool ok = false;
    auto n = stream_all(ok);
    set_label(state, ds, n);
    if (!ok || n < ds.size) {
      state.SkipWithError("the stream is not positions 1..head");
      return;
    }
    std::uint64_t events = 0;
    for (auto _ : state) {
      events += stream_all(ok);
      if (!ok) {
        state.SkipWithError("the stream is not positions 1..head");
        break;
      }
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(events));
    state.counters["events/stream"] = benchmark::Counter(
      static_cast<double>(events), benchmark::Counter::kAvgIterations);
  });
}

// -- appends ----------------------------------------------------------------

void BM_Append(benchmark::State& state) {
  run_guarded(state, [&](dataset& ds) {
    auto& store = *ds.store;
    auto n = static_cast<std::size_t>(state.range(0));
    std::mt19937_64 rng{4};
    auto head = store.head();
    set_label(state, ds, head);
    {
      auto expected = fresh_enrolments(n, rng);
      auto last = store.append(expected);
      dcbd::read_options from;
      from.from = last - n + 1;
      from.limit = n;
      auto r = store.read(dcbd::query::all(), from);
      bool ok = last == head + n && r.events.size() == n;
      for (std::size_t k = 0; ok && k < n; ++k)
        ok = r.events[k].position == head + 1 + k
             && r.events[k].event == expected[k];
      if (!ok) {
        state.SkipWithError("the appended events do not read back");
        return;
      }
    }
    for (auto _ : state)
      benchmark::DoNotOptimize(store.append(fresh_enrolments(n, rng)));
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(n));
  });
}

// One caller, the typical DCB call: append one event if nothing matching
// the decision model's query was appended after the head it was read at.
void BM_ConditionalAppend(benchmark::State& state) {
  run_guarded(state, [&](dataset& ds) {
    auto& store = *ds.store;
    std::mt19937_64 rng{5};
    auto head = store.head();
    set_label(state, ds, head);
    auto conditional = [&](std::uint64_t j, std::uint64_t after) {
      std::vector<dcbd::event> events{subscription_event(rng() % n_courses, j)};
      dcbd::append_condition cond{
        dcbd::query{{item({subscribed}, {student_tag(j)})}}, after};
      return store.append(std::move(events), std::move(cond));
    };
    {
      // A student already subscribed: the condition must fail.
      std::uint64_t j = 0;
      while (ds.student_courses[j].empty())
        ++j;
      try {
        conditional(j, 0);
        state.SkipWithError("a violated condition was accepted");
        return;
      } catch (const dcbd::store_error& e) {
        if (e.code() != dcbd::errc::append_condition_failed) {
          state.SkipWithError(e.what());
          return;
        }
      }
      if (store.head() != head
          || conditional(fresh_student(), head) != head + 1) {
        state.SkipWithError("a conditional append went wrong");
        return;
      }
    }
    // `after` = 0 (the student has no events): the database check runs on
    // every call, unlike `after` = head, which the store can skip.
    for (auto _ : state) {
      auto pos = conditional(fresh_student(), 0);
      benchmark::DoNotOptimize(pos);
    }
    state.SetItemsProcessed(state.iterations());
  });
}

constexpr std::size_t group_size = 100;
constexpr std::size_t contended_boundaries = 10;

dcbd::append_request subscription_request(std::uint64_t i, std::uint64_t j,
                                          std::uint64_t after) {
  dcbd::append_request req;
  req.events.push_back(subscription_event(i, j));
  req.condition = dcbd::append_condition{
    dcbd::query{{item({subscribed}, {course_tag(i), student_tag(j)})}}, after};
  return req;
}

// 100 conditional single-event requests on 100 distinct boundaries, all
// with the `after` read before the loop: all must succeed.
void BM_AppendGroup100Conditional(benchmark::State& state) {
  run_guarded(state, [&](dataset& ds) {
    auto& store = *ds.store;
    std::mt19937_64 rng{6};
    auto after = store.head();
    set_label(state, ds, after);
    auto make_group = [&] {
      std::vector<dcbd::append_request> group;
      group.reserve(group_size);
      for (std::size_t r = 0; r < group_size; ++r)
        group.push_back(
          subscription_request(rng() % n_courses, fresh_student(), after));
      return group;
    };
    {
      auto res = store.append_group(make_group());
      bool ok = res.size() == group_size;
      for (std::size_t r = 0; ok && r < res.size(); ++r)
        ok = res[r].ok() && res[r].last_position == after + 1 + r;
      if (!ok) {
        state.SkipWithError("a group on distinct boundaries did not commit "
                            "every request in order");
        return;
      }
    }
    for (auto _ : state) {
      auto res = store.append_group(make_group());
      bool ok = res.size() == group_size;
      for (const auto& x : res)
        ok = ok && x.ok();
      if (!ok) {
        state.SkipWithError("a request on a distinct boundary failed");
        break;
      }
      benchmark::DoNotOptimize(res);
    }
    state.SetItemsProcessed(state.iterations()
                            * static_cast<std::int64_t>(group_size));
  });
}

// 100 requests on 10 boundaries (10 each, interleaved, the same `after`):
// the first request of each boundary wins, the other 90 must fail.
void BM_AppendGroup100Contended(benchmark::State& state) {
  run_guarded(state, [&](dataset& ds) {
    auto& store = *ds.store;
    std::mt19937_64 rng{7};
    auto after = store.head();
    set_label(state, ds, after);
    auto make_group = [&] {
      std::vector<std::pair<std::uint64_t, std::uint64_t>> boundaries;
      for (std::size_t b = 0; b < contended_boundaries; ++b)
        boundaries.emplace_back(rng() % n_courses, fresh_student());
      std::vector<dcbd::append_request> group;
      group.reserve(group_size);
      for (std::size_t r = 0; r < group_size; ++r) {
        const auto& [i, j] = boundaries[r % contended_boundaries];
        group.push_back(subscription_request(i, j, after));
      }
      return group;
    };
    // Returns the accepted count, or -1 if any but the first request of a
    // boundary won or a loser failed for another reason.
    auto accepted = [](const std::vector<dcbd::append_result>& res) {
      if (res.size() != group_size)
        return -1;
      int n = 0;
      for (std::size_t r = 0; r < res.size(); ++r) {
        bool first = r < contended_boundaries;
        if (res[r].ok() != first
            || (!first && res[r].code != dcbd::errc::append_condition_failed))
          return -1;
        n += first ? 1 : 0;
      }
      return n;
    };
    if (accepted(store.append_group(make_group()))
        != static_cast<int>(contended_boundaries)) {
      state.SkipWithError("a contended group did not accept exactly the "
                          "first request of each boundary");
      return;
    }
    std::int64_t total = 0;
    for (auto _ : state) {
      auto res = store.append_group(make_group());
      auto n = accepted(res);
      if (n != static_cast<int>(contended_boundaries)) {
        state.SkipWithError("a contended group accepted the wrong requests");
        break;
      }
      total += n;
      benchmark::DoNotOptimize(res);
    }
    state.SetItemsProcessed(state.iterations()
                            * static_cast<std::int64_t>(group_size));
    state.counters["accepted"] = benchmark::Counter(
      static_cast<double>(total), benchmark::Counter::kAvgIterations);
  });
}

// Reads first, so they see the dataset as loaded.
BENCHMARK(BM_Head)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ReadSimple)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ReadComplex)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ReadBackwardsLast)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_StreamAll)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Append)->Arg(1)->Arg(10)->Arg(100)->Arg(1000)->UseRealTime()->Unit(
  benchmark::kMicrosecond);
BENCHMARK(BM_ConditionalAppend)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_AppendGroup100Conditional)
  ->UseRealTime()
  ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_AppendGroup100Contended)
  ->UseRealTime()
  ->Unit(benchmark::kMicrosecond);

} // namespace

// BENCHMARK_MAIN(), plus a description of the dataset in the context block.
int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv))
    return 1;
  benchmark::AddCustomContext(
    "dataset", "go-crablet course domain: 1000 courses, 10000 students, "
               "50000 enrolments (61000 events), schema bench_store");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
