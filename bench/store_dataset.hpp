// The store benchmarks' dataset: the course domain of the go-crablet report
// (1,000 courses, 10,000 students, 50,000 enrolments: 61,000 events),
// loaded once per process into a fresh schema `bench_store`, and the
// helpers the benchmarks in store_bench.cpp share.
#pragma once

#include "store/error.hpp"
#include "store/model.hpp"
#include "store/pg_store.hpp"

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace dcbd::bench {

// -- the course domain --------------------------------------------------------

inline constexpr const char* schema_name = "bench_store";
inline constexpr std::size_t n_courses = 1'000;
inline constexpr std::size_t n_students = 10'000;
inline constexpr std::size_t n_enrolments = 50'000;
inline constexpr std::size_t load_batch = 1'000;
inline constexpr std::uint64_t dataset_seed = 20'240'601;

inline const std::string course_defined = "CourseDefined";
inline const std::string student_registered = "StudentRegistered";
inline const std::string subscribed = "StudentSubscribedToCourse";
inline const std::string capacity_changed = "CourseCapacityChanged";

inline std::string dsn() {
  const char* env = std::getenv("DCBD_TEST_PG_DSN");
  return env != nullptr && *env != '\0'
           ? std::string{env}
           : std::string{"host=127.0.0.1 port=55432 user=postgres "
                         "dbname=postgres"};
}

inline std::string course_tag(std::uint64_t i) {
  return "course:" + std::to_string(i);
}

inline std::string student_tag(std::uint64_t j) {
  return "student:" + std::to_string(j);
}

inline dcbd::event course_defined_event(std::uint64_t i) {
  return dcbd::event{course_defined,
                     {course_tag(i)},
                     R"({"id":"c)" + std::to_string(i) + R"(","capacity":60})",
                     {}};
}

inline dcbd::event student_registered_event(std::uint64_t j) {
  return dcbd::event{student_registered,
                     {student_tag(j)},
                     R"({"id":"s)" + std::to_string(j) + R"(","name":"Student )"
                       + std::to_string(j) + R"("})",
                     {}};
}

// Tags in sorted order ("course:" < "student:"), as the store returns them.
inline dcbd::event subscription_event(std::uint64_t i, std::uint64_t j) {
  return dcbd::event{subscribed,
                     {course_tag(i), student_tag(j)},
                     R"({"studentId":"s)" + std::to_string(j)
                       + R"(","courseId":"c)" + std::to_string(i) + R"("})",
                     {}};
}

inline dcbd::query_item item(std::vector<std::string> types,
                             std::vector<std::string> tags) {
  return dcbd::query_item{std::move(types), std::move(tags)};
}

// The decision model of "subscribe student j to course i": 5 items.
inline dcbd::query decision_model_query(std::uint64_t i, std::uint64_t j) {
  return dcbd::query{{item({course_defined}, {course_tag(i)}),
                      item({subscribed}, {course_tag(i)}),
                      item({student_registered}, {student_tag(j)}),
                      item({subscribed}, {student_tag(j)}),
                      item({capacity_changed}, {course_tag(i)})}};
}

// Student ids that no event carries yet (the dataset uses 0..9,999).
inline std::uint64_t fresh_student() {
  static std::uint64_t next = 1'000'000;
  return next++;
}

// `n` enrolments of fresh students into random existing courses.
inline std::vector<dcbd::event> fresh_enrolments(std::size_t n,
                                                 std::mt19937_64& rng) {
  std::vector<dcbd::event> out;
  out.reserve(n);
  for (std::size_t k = 0; k < n; ++k)
    out.push_back(subscription_event(rng() % n_courses, fresh_student()));
  return out;
}

// -- the dataset ------------------------------------------------------------

struct dataset {
  std::unique_ptr<dcbd::pg_event_store> store;
  /// Events the loader appended (= the head right after loading).
  std::uint64_t size = 0;
  /// Per course, how many students the dataset subscribes to it.
  std::vector<std::uint32_t> course_enrolments;
  /// Per student, the courses the dataset subscribes them to.
  std::vector<std::vector<std::uint32_t>> student_courses;
};

/// The dataset, loaded by the first caller; nullptr (and the benchmark
/// skipped) if loading failed.
dataset* get_dataset(benchmark::State& state);

// Runs `body(dataset&)`, turning exceptions into a skipped benchmark.
template <class F>
inline void run_guarded(benchmark::State& state, F&& body) {
  auto* ds = get_dataset(state);
  if (ds == nullptr)
    return;
  try {
    body(*ds);
  } catch (const dcbd::store_error& e) {
    state.SkipWithError(
      (std::string{dcbd::to_string(e.code())} + ": " + e.what()).c_str());
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// The label names the dataset as loaded (constant, so it survives into the
// aggregate rows); the counter `head` is the log size when the benchmark
// started, which appends grow.
inline void set_label(benchmark::State& state, const dataset& ds,
                      std::uint64_t head) {
  state.SetLabel("dataset=" + std::to_string(ds.size));
  state.counters["head"] = static_cast<double>(head);
}

inline bool has_tag(const dcbd::event& e, const std::string& tag) {
  for (const auto& t : e.tags)
    if (t == tag)
      return true;
  return false;
}

inline bool ascending(const std::vector<dcbd::sequenced_event>& events) {
  for (std::size_t k = 1; k < events.size(); ++k)
    if (events[k - 1].position >= events[k].position)
      return false;
  return true;
}

inline std::size_t count_up_to(const std::vector<dcbd::sequenced_event>& events,
                               std::uint64_t max_position) {
  std::size_t n = 0;
  for (const auto& e : events)
    if (e.position <= max_position)
      ++n;
  return n;
}

} // namespace dcbd::bench
