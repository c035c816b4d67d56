// Jobs in real `dcbd-courses` processes (API.md §7): every acknowledged
// enqueue runs although a node is SIGKILLed mid-load (its running jobs are
// rescued by the survivor), and the example's trigger makes exactly one
// confirmation job per StudentSubscribed event across a SIGKILL of a node
// while writers append, each done once (the worker records it in the job's
// own transaction).
#include "tests/runtime/http_test_client.hpp"
#include "tests/runtime/node_process.hpp"

#include <csignal>
#include <mutex>
#include <set>

#ifndef DCBD_COURSES_BINARY
#  error "DCBD_COURSES_BINARY must name the dcbd-courses executable"
#endif

namespace dcbd::test {
namespace {

using namespace http_support;

class NodeJobs : public PgSchemaTest {
protected:
  std::unique_ptr<node_process> courses(const std::string& name,
                                        std::uint16_t port = 0) {
    return std::make_unique<node_process>(
      schema_, std::vector<std::string>{}, port,
      std::vector<std::pair<std::string, std::string>>{{"DCB_NODE_NAME", name}},
      DCBD_COURSES_BINARY);
  }

  std::string count(const std::string& where) {
    return exec_sql("SELECT count(*) FROM " + schema_ + ".jobs WHERE " + where);
  }

  template <class Pred>
  static bool eventually(Pred pred, std::chrono::milliseconds d) {
    auto until = std::chrono::steady_clock::now() + d;
    while (std::chrono::steady_clock::now() < until) {
      if (pred())
        return true;
      std::this_thread::sleep_for(50ms);
    }
    return pred();
  }

  static json subscribe_event(const std::string& student,
                              const std::string& course) {
    return ev("StudentSubscribed", {"student:" + student, "course:" + course},
              json{{"student", student}, {"course", course}}.dump());
  }
};

TEST_F(NodeJobs, EveryAcknowledgedEnqueueRunsAcrossSigkill) {
  auto a = courses("a");
  ASSERT_TRUE(a->up()) << a->log();
  auto b = courses("b");
  ASSERT_TRUE(b->up()) << b->log();
  std::mutex mtx;
  std::set<std::int64_t> acked;
  std::atomic<bool> enqueuing{true};
  std::vector<std::thread> clients;
  for (int w = 0; w < 3; ++w)
    clients.emplace_back([&, w] {
      // Alternate between the nodes; the one that dies answers nothing.
      for (int i = 0; enqueuing; ++i) {
        try {
          client c{i % 2 == 0 ? a->port() : b->port()};
          auto r = c.post(
            "/v1/jobs",
            json{{"kind", "send_confirmation"},
                 {"queue", "confirmations"},
                 {"args",
                  {{"manual", std::to_string(w) + "-" + std::to_string(i)}}}});
          if (r.status == 201) {
            std::lock_guard guard{mtx};
            acked.insert(json::parse(r.body)["id"].get<std::int64_t>());
          }
        } catch (const std::exception&) {
          // that node is gone
        }
      }
    });
  std::this_thread::sleep_for(1500ms);
  a->process().signal(SIGKILL);
  a->process().wait();
  std::this_thread::sleep_for(1000ms);
  enqueuing = false;
  for (auto& t : clients)
    t.join();
  ASSERT_GT(acked.size(), 20u);
  // Jobs the dead node held come back after their lease (5 s) and run on
  // the survivor.
  ASSERT_TRUE(eventually(
    [&] {
      return count("state <> 'completed' AND queue = 'confirmations'") == "0";
    },
    30s))
    << exec_sql("SELECT string_agg(id || ':' || state || ':' || worker, ',') "
                "FROM "
                + schema_ + ".jobs WHERE state <> 'completed'");
  std::string ids;
  for (auto id : acked)
    ids += (ids.empty() ? "" : ",") + std::to_string(id);
  EXPECT_EQ(count("id IN (" + ids + ") AND state = 'completed'"),
            std::to_string(acked.size()));
  // Each completed exactly once: one confirmation row per job.
  EXPECT_EQ(exec_sql("SELECT count(*) FROM " + schema_
                     + ".confirmations WHERE job IN (" + ids + ")"),
            std::to_string(acked.size()));
}

TEST_F(NodeJobs, OneConfirmationPerSubscriptionAcrossSigkill) {
  auto port = free_tcp_port();
  auto a = courses("a", port);
  ASSERT_TRUE(a->up()) << a->log();
  auto b = courses("b");
  ASSERT_TRUE(b->up()) << b->log();
  std::atomic<bool> writing{true};
  std::atomic<int> acknowledged{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < 2; ++w)
    writers.emplace_back([&, w] {
      for (int i = 0; writing; ++i) {
        try {
          client c{w == 0 ? port : b->port()};
          auto r = c.post("/v1/append",
                          json{{"events",
                                {subscribe_event("s" + std::to_string(w) + "-"
                                                   + std::to_string(i),
                                                 "c" + std::to_string(i % 3)),
                                 ev("Other", {}, "x")}}});
          if (r.status == 200)
            ++acknowledged;
        } catch (const std::exception&) {
          std::this_thread::sleep_for(20ms);
        }
      }
    });
  std::this_thread::sleep_for(1000ms);
  a->process().signal(SIGKILL);
  a->process().wait();
  std::this_thread::sleep_for(500ms);
  a = courses("a", port);
  ASSERT_TRUE(a->up()) << a->log();
  std::this_thread::sleep_for(800ms);
  writing = false;
  for (auto& t : writers)
    t.join();
  ASSERT_GT(acknowledged.load(), 20);
  auto events = [&] {
    return exec_sql("SELECT count(*) FROM " + schema_
                    + ".events WHERE type = 'StudentSubscribed'");
  };
  ASSERT_TRUE(eventually(
    [&] {
      return count("trigger_name = 'confirm_subscription' AND state = "
                   "'completed'")
             == events();
    },
    30s))
    << count("trigger_name = 'confirm_subscription'") << " jobs, " << events()
    << " events";
  EXPECT_EQ(count("trigger_name = 'confirm_subscription'"), events());
  EXPECT_EQ(exec_sql("SELECT count(DISTINCT trigger_position) FROM " + schema_
                     + ".jobs WHERE trigger_name = 'confirm_subscription'"),
            events());
  // Every subscription has its confirmation, and only one.
  EXPECT_EQ(exec_sql("SELECT count(*) FROM " + schema_ + ".events e JOIN "
                     + schema_
                     + ".confirmations c ON c.position = e.position WHERE "
                       "e.type = 'StudentSubscribed'"),
            events());
}

} // namespace
} // namespace dcbd::test
