// The dcbd process itself: started as a child, stopped with SIGTERM while
// 50 clients append; it must exit 0 and keep every acknowledged append.
#include "tests/runtime/http_test_client.hpp"

namespace dcbd::test {
namespace {

using namespace http_support;

// -- graceful shutdown of the process -----------------------------------------

#ifndef DCBD_BINARY
#  error "DCBD_BINARY must name the dcbd executable"
#endif

// Waits until something listens on 127.0.0.1:`port`.
bool await_listening(std::uint16_t port, std::chrono::seconds wait) {
  auto deadline = std::chrono::steady_clock::now() + wait;
  while (std::chrono::steady_clock::now() < deadline) {
    net::io_context ioc;
    tcp::socket s{ioc};
    beast::error_code ec;
    s.connect(tcp::endpoint{net::ip::make_address("127.0.0.1"), port}, ec);
    if (!ec)
      return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

std::uint16_t free_port() {
  net::io_context ioc;
  tcp::acceptor a{ioc, tcp::endpoint{net::ip::make_address("127.0.0.1"), 0}};
  return a.local_endpoint().port();
}

class Node : public PgSchemaTest {};

TEST_F(Node, SigtermUnderLoadKeepsEveryAcknowledgedAppendAndExitsZero) {
  auto http_port = free_port();
  auto metrics_port = free_port();
  auto log = "/tmp/dcbd-sigterm-" + std::to_string(::getpid()) + ".log";
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::setenv("DCB_POSTGRES_DSN", test_dsn().c_str(), 1);
    ::setenv("DCB_SCHEMA", schema_.c_str(), 1);
    ::setenv("DCB_HTTP_ADDR",
             ("127.0.0.1:" + std::to_string(http_port)).c_str(), 1);
    ::setenv("DCB_METRICS_ADDR",
             ("127.0.0.1:" + std::to_string(metrics_port)).c_str(), 1);
    ::execl(DCBD_BINARY, DCBD_BINARY, static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ASSERT_TRUE(await_listening(http_port, 60s))
    << "dcbd did not start; see " << log;
  constexpr int clients = 50;
  std::atomic<bool> stop{false};
  std::mutex mtx;
  std::set<std::string> acked;
  std::atomic<int> ok_count{0};
  std::atomic<int> after_term{0};
  std::atomic<bool> termed{false};
  std::vector<std::thread> threads;
  for (int k = 0; k < clients; ++k) {
    threads.emplace_back([&, k] {
      try {
        client c{http_port};
        for (int i = 0; !stop; ++i) {
          auto id = std::to_string(k) + "-" + std::to_string(i);
          auto r = c.post("/append",
                          json{{"events", {ev("Load", {"id:" + id}, id)}}});
          if (r.status == 0)
            return; // the connection closed
          if (r.status == 200 && r.j()["appendConditionFailed"] == false) {
            ++ok_count;
            if (termed)
              ++after_term;
            std::lock_guard<std::mutex> guard{mtx};
            acked.insert(id);
          }
          if (r.closed)
            return;
        }
      } catch (const std::exception&) {
        // connection refused or reset: the node is gone
      }
    });
  }
  std::this_thread::sleep_for(1500ms);
  // A real scrape of the process's exporter sees the work so far.
  {
    // Every append acknowledged before the scrape was counted before its
    // answer went out.
    auto ok_before = ok_count.load();
    client scraper{metrics_port};
    auto m = scraper.get("/metrics");
    ASSERT_EQ(m.status, 200u);
    EXPECT_GE(sample(m.body, R"(dcb_append_requests_total{result="ok"})"),
              ok_before)
      << m.body;
    EXPECT_GT(sample(m.body, "dcb_events_appended_total"), 0) << m.body;
    EXPECT_GT(sample(m.body,
                     R"(dcb_http_requests_total{code="200",route="/append"})"),
              0)
      << m.body;
    EXPECT_GT(sample(m.body, "dcb_group_size_requests_count"), 0) << m.body;
  }
  termed = true;
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  stop = true;
  for (auto& t : threads)
    t.join();
  ASSERT_TRUE(WIFEXITED(status)) << "dcbd died by a signal; see " << log;
  EXPECT_EQ(WEXITSTATUS(status), 0) << "see " << log;
  ASSERT_GT(ok_count.load(), clients) << "too little load to test anything";
  std::cout << "[          ] " << ok_count.load() << " appends acknowledged, "
            << after_term.load() << " of them after the SIGTERM\n";
  // Every acknowledged append is stored.
  auto store = open_store(1);
  auto all = store->read(query{{query_item{{"Load"}, {}}}}, {});
  std::set<std::string> stored;
  for (auto& e : all.events)
    stored.insert(e.event.data);
  for (auto& id : acked)
    EXPECT_TRUE(stored.count(id) > 0)
      << "acknowledged append " << id << " is missing";
  EXPECT_EQ(stored.size(), all.events.size()) << "an append was stored twice";
  std::remove(log.c_str());
}

} // namespace
} // namespace dcbd::test
