// Faults: the store's backend connections are terminated while appends
// stream in. Affected requests fail with `unavailable`, no part of a failed
// group is visible, the store recovers by itself, and every acknowledged
// append can be read back.
#include "tests/support/pg_fixture.hpp"

#include <atomic>
#include <mutex>
#include <thread>

namespace dcbd::test {
namespace {

class PgFaults : public PgSchemaTest {
protected:
  // Terminates every backend that has run this test's append statement.
  int kill_store_backends() {
    auto n = exec_sql("SELECT count(pg_terminate_backend(pid)) FROM "
                      "pg_stat_activity WHERE pid <> pg_backend_pid() AND "
                      "query LIKE '%\""
                      + schema_ + "\"%'");
    return n.empty() ? 0 : std::stoi(n);
  }

  void run_terminations(bool conditional);
};

// Appends groups from 3 writers while backends are terminated, then checks
// every outcome. Conditional groups take the store's function path,
// unconditional ones its single-statement path.
void PgFaults::run_terminations(bool conditional) {
  auto store = open_store(3);
  struct outcome {
    std::string tag;
    bool ok;
    std::uint64_t last_position;
  };
  std::mutex mtx;
  std::vector<outcome> outcomes;
  std::atomic<bool> stop{false};
  std::atomic<int> kills{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < 3; ++w)
    writers.emplace_back([&, w] {
      for (int n = 0; !stop; ++n) {
        // A group of 4 requests, 2 events each, all tagged by request.
        std::vector<append_request> group;
        std::vector<std::string> tags;
        for (int r = 0; r < 4; ++r) {
          auto tag = "req:" + std::to_string(w) + "-" + std::to_string(n) + "-"
                     + std::to_string(r);
          tags.push_back(tag);
          std::optional<append_condition> cond;
          if (conditional)
            cond = append_condition{query{{query_item{{}, {tag}}}}, {}};
          group.push_back(
            {{event{"E", {tag}, "a"}, event{"E", {tag}, "b"}}, cond});
        }
        auto res = store->append_group(std::move(group));
        std::lock_guard guard{mtx};
        for (std::size_t r = 0; r < res.size(); ++r) {
          if (!res[r].ok()) {
            ASSERT_EQ(res[r].code, errc::unavailable) << res[r].message;
          }
          outcomes.push_back({tags[r], res[r].ok(), res[r].last_position});
        }
      }
    });
  for (int i = 0; i < 30; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds{40});
    kills += kill_store_backends();
  }
  stop = true;
  for (auto& t : writers)
    t.join();
  ASSERT_GT(kills, 0);
  // It recovers by itself: appends work again without intervention.
  EXPECT_NO_THROW(store->append({event{"After", {"recovered"}}}));
  EXPECT_GT(store->reconnects(), 0u);

  int failed = 0, acked = 0;
  for (const auto& o : outcomes) {
    auto got = store->read(query{{query_item{{}, {o.tag}}}});
    if (o.ok) {
      ++acked;
      ASSERT_EQ(got.events.size(), 2u) << "acknowledged append lost: " << o.tag;
      EXPECT_EQ(got.events[1].position, o.last_position);
      EXPECT_EQ(got.events[0].event.data, "a");
    } else {
      ++failed;
      EXPECT_TRUE(got.events.empty())
        << "part of a failed group is visible: " << o.tag;
    }
  }
  EXPECT_GT(failed, 0) << "the faults should have failed some requests";
  EXPECT_GT(acked, 0);
  // Positions stay gap-free across the failures.
  auto all = store->read(query::all());
  for (std::size_t i = 0; i < all.events.size(); ++i)
    ASSERT_EQ(all.events[i].position, i + 1);
}

TEST_F(PgFaults, TerminatedBackendsFailConditionalGroupsCleanly) {
  run_terminations(true);
}

TEST_F(PgFaults, TerminatedBackendsFailUnconditionalGroupsCleanly) {
  run_terminations(false);
}

TEST_F(PgFaults, UnreachableDatabaseFailsWithUnavailable) {
  pg_config cfg;
  cfg.dsn = "host=127.0.0.1 port=1 user=postgres dbname=postgres "
            "connect_timeout=1";
  cfg.schema = schema_;
  cfg.connect_timeout = std::chrono::milliseconds{200};
  try {
    pg_event_store store{cfg};
    FAIL() << "expected unavailable";
  } catch (const store_error& e) {
    EXPECT_EQ(e.code(), errc::unavailable) << e.what();
  }
}

TEST_F(PgFaults, SchemaNameMustBeAPlainIdentifier) {
  auto cfg = test_config("bad; DROP TABLE x");
  try {
    pg_event_store store{cfg};
    FAIL() << "expected invalid_argument";
  } catch (const store_error& e) {
    EXPECT_EQ(e.code(), errc::invalid_argument);
    EXPECT_NE(std::string{e.what()}.find("schema"), std::string::npos);
  }
}

} // namespace
} // namespace dcbd::test
