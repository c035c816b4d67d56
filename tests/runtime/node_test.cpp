// The dcbd process itself, started as a child: stopped with SIGTERM while
// 50 clients append, it must exit 0 and keep every acknowledged append; a
// GET /read of 200,000 events must stay within a memory bound (its RSS).
#include "tests/runtime/http_test_client.hpp"

#include <fstream>

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

// Starts dcbd on `schema` with HTTP on `http_port` and metrics on
// `metrics_port`, its output going to `log`; returns its pid (-1 when the
// fork failed).
pid_t spawn_node(const std::string& schema, std::uint16_t http_port,
                 std::uint16_t metrics_port, const std::string& log) {
  pid_t pid = ::fork();
  if (pid == 0) {
    auto fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::setenv("DCB_POSTGRES_DSN", test_dsn().c_str(), 1);
    ::setenv("DCB_SCHEMA", schema.c_str(), 1);
    ::setenv("DCB_HTTP_ADDR",
             ("127.0.0.1:" + std::to_string(http_port)).c_str(), 1);
    ::setenv("DCB_METRICS_ADDR",
             ("127.0.0.1:" + std::to_string(metrics_port)).c_str(), 1);
    ::execl(DCBD_BINARY, DCBD_BINARY, static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

class Node : public PgSchemaTest {};

TEST_F(Node, SigtermUnderLoadKeepsEveryAcknowledgedAppendAndExitsZero) {
  auto http_port = free_port();
  auto metrics_port = free_port();
  auto log = "/tmp/dcbd-sigterm-" + std::to_string(::getpid()) + ".log";
  pid_t pid = spawn_node(schema_, http_port, metrics_port, log);
  ASSERT_GE(pid, 0);
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

// -- memory of a large GET /read ---------------------------------------------

// The resident set of process `pid` in bytes (VmRSS); 0 when unreadable.
std::size_t rss_of(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0)
      return std::stoull(line.substr(6)) * 1024;
  return 0;
}

// Walks a JSON array of events without building it: counts them and checks
// that their positions run 1, 2, 3...
class event_counter : public json::json_sax_t {
public:
  std::size_t events = 0;
  bool array = false;
  bool in_order = true;

  bool start_array(std::size_t) override {
    if (depth_++ == 0)
      array = true;
    return true;
  }

  bool end_array() override {
    --depth_;
    return true;
  }

  bool start_object(std::size_t) override {
    if (depth_++ == 1)
      ++events;
    return true;
  }

  bool end_object() override {
    --depth_;
    return true;
  }

  bool key(string_t& k) override {
    position_next_ = depth_ == 2 && k == "position";
    return true;
  }

  bool number_unsigned(number_unsigned_t v) override {
    if (position_next_ && v != events)
      in_order = false;
    position_next_ = false;
    return true;
  }

  bool null() override {
    return scalar();
  }

  bool boolean(bool) override {
    return scalar();
  }

  bool number_integer(number_integer_t) override {
    return scalar();
  }

  bool number_float(number_float_t, const string_t&) override {
    return scalar();
  }

  bool string(string_t&) override {
    return scalar();
  }

  bool binary(binary_t&) override {
    return scalar();
  }

  bool parse_error(std::size_t, const std::string&,
                   const nlohmann::detail::exception&) override {
    return false;
  }

private:
  bool scalar() {
    if (position_next_)
      in_order = false;
    position_next_ = false;
    return true;
  }

  int depth_ = 0;
  bool position_next_ = false;
};

TEST_F(Node, ReadOf200000EventsStaysWithinAMemoryBound) {
#if defined(__SANITIZE_ADDRESS__)
  // AddressSanitizer keeps freed memory in quarantine (256 MiB by default),
  // so the node's RSS measures the sanitizer, not the stream.
  GTEST_SKIP() << "RSS is not the node's memory under AddressSanitizer";
#endif
  constexpr int total = 200'000;
  constexpr int batch = 20'000;
  // The log, written straight through a store on the node's schema.
  {
    auto store = open_store(1);
    const std::string data(200, 'x');
    for (int b = 0; b < total / batch; ++b) {
      std::vector<event> events;
      events.reserve(batch);
      for (int i = 0; i < batch; ++i)
        events.push_back(
          event{"Big", {"t:" + std::to_string(i % 10)}, data, {}});
      store->append(std::move(events));
    }
  }
  auto http_port = free_port();
  auto metrics_port = free_port();
  auto log = "/tmp/dcbd-rss-" + std::to_string(::getpid()) + ".log";
  pid_t pid = spawn_node(schema_, http_port, metrics_port, log);
  ASSERT_GE(pid, 0);
  struct reaper {
    pid_t pid;
    ~reaper() {
      ::kill(pid, SIGTERM);
      int status = 0;
      ::waitpid(pid, &status, 0);
    }
  } stop_node{pid};
  ASSERT_TRUE(await_listening(http_port, 60s))
    << "dcbd did not start; see " << log;
  client c{http_port};
  auto all = read_target("/read", json{{"items", json::array()}});
  // Warm up: the readers' connections, the first chunks' buffers.
  auto warm = c.get(read_target("/read", json{{"items", json::array()}},
                                json{{"limit", 5000}}));
  ASSERT_EQ(warm.status, 200u) << warm.body.substr(0, 200);
  // The event cache loads the log after the start (about 70 MiB here):
  // measure the read once it holds all of it (dcb_cache_lo 0, copied to
  // the metrics once a second), so the growth is the read's.
  auto cache_lo = [&] {
    client m{metrics_port};
    auto body = m.get("/metrics").body;
    auto at = body.find("\ndcb_cache_lo ");
    return at == std::string::npos ? -1.0 : std::stod(body.substr(at + 14));
  };
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (cache_lo() != 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(100ms);
  ASSERT_EQ(cache_lo(), 0) << "the cache did not load the log";
  std::this_thread::sleep_for(1s);
  auto before = rss_of(pid);
  ASSERT_GT(before, 0u);
  std::atomic<bool> reading{true};
  std::size_t peak = before;
  std::thread sampler{[&] {
    while (reading) {
      peak = std::max(peak, rss_of(pid));
      std::this_thread::sleep_for(2ms);
    }
  }};
  auto t0 = std::chrono::steady_clock::now();
  auto r = c.get(all);
  auto took = std::chrono::steady_clock::now() - t0;
  reading = false;
  sampler.join();
  ASSERT_EQ(r.status, 200u) << r.body.substr(0, 200);
  event_counter counter;
  EXPECT_TRUE(json::sax_parse(r.body, &counter)) << "not valid JSON";
  EXPECT_TRUE(counter.array);
  EXPECT_EQ(counter.events, std::size_t{total});
  EXPECT_TRUE(counter.in_order);
  auto growth = peak - before;
  std::cout
    << "[          ] GET /read of " << total << " events: body "
    << r.body.size() / 1024 / 1024 << " MiB in "
    << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
    << " ms; node RSS " << before / 1024 / 1024 << " MiB before, peak "
    << peak / 1024 / 1024 << " MiB during (growth " << growth / 1024
    << " KiB)\n";
  EXPECT_GT(r.body.size(), std::size_t{40} << 20) << "too small to tell";
  EXPECT_LT(growth, r.body.size() / 4)
    << "the node's memory grew with the result";
  std::remove(log.c_str());
}

} // namespace
} // namespace dcbd::test
