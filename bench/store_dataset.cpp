#include "bench/store_dataset.hpp"

#include <pqxx/pqxx>

#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <unordered_set>

namespace dcbd::bench {

namespace {

std::unique_ptr<dataset> load_dataset() {
  auto started = std::chrono::steady_clock::now();
  {
    pqxx::connection conn{dsn()};
    pqxx::nontransaction tx{conn};
    tx.exec("SET client_min_messages = warning");
    tx.exec(std::string{"DROP SCHEMA IF EXISTS "} + schema_name + " CASCADE");
  }
  auto ds = std::make_unique<dataset>();
  dcbd::pg_config cfg;
  cfg.dsn = dsn();
  cfg.schema = schema_name;
  ds->store = std::make_unique<dcbd::pg_event_store>(cfg);
  ds->course_enrolments.assign(n_courses, 0);
  ds->student_courses.assign(n_students, {});

  std::vector<dcbd::event> batch;
  auto flush = [&] {
    if (batch.empty())
      return;
    ds->store->append(std::move(batch));
    batch.clear();
  };
  auto add = [&](dcbd::event e) {
    batch.push_back(std::move(e));
    if (batch.size() == load_batch)
      flush();
  };
  for (std::uint64_t i = 0; i < n_courses; ++i)
    add(course_defined_event(i));
  for (std::uint64_t j = 0; j < n_students; ++j)
    add(student_registered_event(j));
  // Random (seeded) distinct (course, student) pairs.
  std::mt19937_64 rng{dataset_seed};
  std::unordered_set<std::uint64_t> pairs;
  while (pairs.size() < n_enrolments) {
    auto i = rng() % n_courses;
    auto j = rng() % n_students;
    if (!pairs.insert(i * n_students + j).second)
      continue;
    ++ds->course_enrolments[i];
    ds->student_courses[j].push_back(static_cast<std::uint32_t>(i));
    add(subscription_event(i, j));
  }
  flush();

  ds->size = ds->store->head();
  auto expected = n_courses + n_students + n_enrolments;
  if (ds->size != expected)
    throw std::runtime_error{"loaded " + std::to_string(ds->size)
                             + " events, expected " + std::to_string(expected)};
  // Statistics and visibility map as autovacuum would leave them; the
  // pgbench baseline does the same to its table.
  {
    pqxx::connection conn{dsn()};
    pqxx::nontransaction tx{conn};
    tx.exec(std::string{"VACUUM ANALYZE "} + schema_name + ".events");
  }
  auto secs
    = std::chrono::duration<double>(std::chrono::steady_clock::now() - started)
        .count();
  std::fprintf(stderr,
               "store_bench: dataset loaded into schema %s: %llu events "
               "(%zu CourseDefined, %zu StudentRegistered, %zu "
               "StudentSubscribedToCourse) in %.1f s\n",
               schema_name, static_cast<unsigned long long>(ds->size),
               n_courses, n_students, n_enrolments, secs);
  return ds;
}

} // namespace

dataset* get_dataset(benchmark::State& state) {
  static std::string error;
  static std::unique_ptr<dataset> ds = []() -> std::unique_ptr<dataset> {
    try {
      return load_dataset();
    } catch (const std::exception& e) {
      error = e.what();
      std::fprintf(stderr, "store_bench: cannot load the dataset: %s\n",
                   error.c_str());
      return nullptr;
    }
  }();
  if (!ds)
    state.SkipWithError(("dataset: " + error).c_str());
  return ds.get();
}

} // namespace dcbd::bench
