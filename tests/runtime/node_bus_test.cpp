// Live subscriptions across real dcbd processes on one schema: appends
// through one node are delivered by the other, also with its LISTEN
// connection killed; dcbctl subscribe follows a node through its restart.
#include "tests/runtime/http_test_client.hpp"
#include "tests/runtime/node_process.hpp"
#include "tests/runtime/sub_client.hpp"

#include <pqxx/connection>
#include <pqxx/nontransaction>

#ifndef DCBCTL_BINARY
#  error "DCBCTL_BINARY must name the dcbctl executable"
#endif

namespace dcbd::test {
namespace {

using namespace http_support;

class NodeBus : public PgSchemaTest {
protected:
  // Positions and the prev chain of NDJSON events.
  static std::vector<std::uint64_t> chain(const std::vector<json>& events) {
    std::vector<std::uint64_t> out;
    std::uint64_t prev = 0;
    for (auto& e : events) {
      EXPECT_EQ(e["prev"].get<std::uint64_t>(), prev) << e.dump();
      prev = e["position"].get<std::uint64_t>();
      out.push_back(prev);
    }
    return out;
  }

  std::vector<std::uint64_t> all_positions() {
    auto store = open_store(1);
    std::vector<std::uint64_t> out;
    for (auto& e : store->read(query::all(), {}).events)
      out.push_back(e.position);
    return out;
  }

  // Terminates the LISTEN connections of this schema's channel.
  int kill_listeners() {
    pqxx::connection conn{test_dsn()};
    pqxx::nontransaction tx{conn};
    auto r = tx.exec_params(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query "
      "LIKE 'LISTEN%' AND query LIKE $1",
      "%dcbd_" + schema_ + "%");
    return static_cast<int>(r.size());
  }
};

TEST_F(NodeBus, AppendsThroughOneNodeAreDeliveredByTheOther) {
  node_process a{schema_};
  node_process b{schema_, {"--dcbd.bus-poll-ms=300"}};
  ASSERT_TRUE(a.up()) << a.log();
  ASSERT_TRUE(b.up()) << b.log();
  sub_client sub{b.port(), "/v1/subscribe", false};
  ASSERT_TRUE(sub.wait_kind("caught_up"));
  std::vector<std::thread> writers;
  for (int w = 0; w < 6; ++w)
    writers.emplace_back([&, w] {
      client c{w < 4 ? a.port() : b.port()};
      for (int i = 0; i < 50; ++i) {
        auto r
          = c.post("/v1/append",
                   json{{"events", {ev("E", {"w:" + std::to_string(w)})}}});
        ASSERT_EQ(r.status, 200u) << r.body;
      }
    });
  for (auto& t : writers)
    t.join();
  ASSERT_TRUE(sub.wait_events(300));
  EXPECT_EQ(chain(sub.events()), all_positions());

  // Without its LISTEN connection node B still delivers: the listener
  // reconnects, and the bus polls besides.
  std::this_thread::sleep_for(200ms);
  ASSERT_GE(kill_listeners(), 2);
  client c{a.port()};
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(c.post("/v1/append", json{{"events", {ev("E", {"late"})}}}).status,
            200u);
  ASSERT_TRUE(sub.wait_events(301, 5s));
  auto delay = std::chrono::steady_clock::now() - t0;
  std::cout
    << "[          ] delivered by the other node "
    << std::chrono::duration_cast<std::chrono::milliseconds>(delay).count()
    << " ms after its append, LISTEN killed (poll 300 ms)\n";
  EXPECT_LT(delay, 2s);
  EXPECT_EQ(chain(sub.events()), all_positions());
  // Node A's own subscription agrees.
  sub_client on_a{a.port(), "/v1/subscribe", true};
  ASSERT_TRUE(on_a.wait_events(301));
  EXPECT_EQ(chain(on_a.events()), all_positions());
}

TEST_F(NodeBus, DcbctlSubscribeFollowsAndResumesAcrossARestart) {
  auto port = free_tcp_port();
  auto a = std::make_unique<node_process>(schema_, std::vector<std::string>{},
                                          port);
  ASSERT_TRUE(a->up()) << a->log();
  auto url = "http://127.0.0.1:" + std::to_string(port);
  child_process ctl{
    {DCBCTL_BINARY, "--url", url, "--json", "subscribe", "--type", "E"}, {}};
  client c{port};
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(
      c.post("/v1/append", json{{"events", {ev("E", {}), ev("F", {})}}}).status,
      200u);
  auto events_out = [&] {
    std::vector<json> out;
    std::istringstream lines{ctl.output()};
    std::string line;
    while (std::getline(lines, line)) {
      auto j = json::parse(line, nullptr, false);
      if (j.is_object() && j["kind"] == "event")
        out.push_back(j);
    }
    return out;
  };
  auto wait_for = [&](std::size_t n) {
    auto until = std::chrono::steady_clock::now() + 20s;
    while (events_out().size() < n && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(20ms);
    return events_out().size() >= n;
  };
  ASSERT_TRUE(wait_for(3)) << ctl.output();
  // The node restarts on the same port; dcbctl resumes after what it
  // printed.
  a->process().signal(SIGTERM);
  a->process().wait();
  a.reset();
  a = std::make_unique<node_process>(schema_, std::vector<std::string>{}, port);
  ASSERT_TRUE(a->up()) << a->log();
  client c2{port};
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(c2.post("/v1/append",
                      json{{"events", {ev("F", {}), ev("E", {})}}})
                .status,
              200u);
  ASSERT_TRUE(wait_for(6)) << ctl.output();
  std::this_thread::sleep_for(200ms);
  auto evs = events_out();
  EXPECT_EQ(chain(evs), (std::vector<std::uint64_t>{1, 3, 5, 8, 10, 12}));
  ctl.signal(SIGTERM);
}

} // namespace
} // namespace dcbd::test
