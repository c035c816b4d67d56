// Input from the network never takes a node down (a real dcbd-courses
// process, so every route of API.md is live: appends, reads, jobs,
// triggers, projectors, the cluster):
// - thousands of requests mutated from valid ones (wrong types, missing and
//   extra fields, huge numbers, deep nesting, truncated and random bodies,
//   odd ids in paths, every method) get answers below 500 (or 503), and the
//   log holds exactly the events of the appends it acknowledged;
// - random WebSocket frames free every subscription they opened;
// - random bytes and forged middleman headers (payload lengths up to 4 GiB)
//   on the cluster port neither crash the node nor keep a peer from linking
//   afterwards (they do stall its middleman and grow its memory: CAF 0.17
//   bounds no payload; README "Security").
// The mutations come from a seeded generator: DCBD_FUZZ_SEED picks another
// seed (the seed is printed), DCBD_FUZZ_REQUESTS another count.
#include "tests/runtime/http_test_client.hpp"
#include "tests/runtime/node_process.hpp"
#include "tests/runtime/ws_client.hpp"

#include <cstdlib>
#include <fstream>
#include <map>
#include <random>

#ifndef DCBD_COURSES_BINARY
#  error "DCBD_COURSES_BINARY must name the dcbd-courses executable"
#endif

namespace dcbd::test {
namespace {

using namespace http_support;

std::uint64_t env_or(const char* name, std::uint64_t fallback) {
  auto* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

// Resident memory of `pid` in KiB (0 when unknown).
std::size_t rss_kib(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0)
      return std::stoul(line.substr(6));
  return 0;
}

// One HTTP exchange on a fresh connection that only waits for the status
// line (streams such as /v1/subscribe never end); 0 when the connection
// failed or nothing came within `wait`.
unsigned status_of(std::uint16_t port, const std::string& request,
                   std::chrono::milliseconds wait = 3s) {
  net::io_context ioc;
  beast::tcp_stream s{ioc};
  beast::error_code ec;
  s.connect(tcp::endpoint{net::ip::make_address("127.0.0.1"), port}, ec);
  if (ec)
    return 0;
  s.expires_after(wait);
  net::write(s.socket(), net::buffer(request), ec);
  if (ec)
    return 0;
  std::string got;
  char buf[256];
  while (got.find("\r\n") == std::string::npos) {
    auto n = s.read_some(net::buffer(buf), ec);
    if (ec)
      break;
    got.append(buf, n);
  }
  if (got.rfind("HTTP/1.1 ", 0) != 0 || got.size() < 12)
    return 0;
  return static_cast<unsigned>(std::stoul(got.substr(9, 3)));
}

// -- mutations ----------------------------------------------------------------

class mutator {
public:
  explicit mutator(std::uint64_t seed) : rng_(seed) {
  }

  bool chance(double p) {
    return std::uniform_real_distribution<double>{0, 1}(rng_) < p;
  }

  std::size_t below(std::size_t n) {
    return std::uniform_int_distribution<std::size_t>{0, n - 1}(rng_);
  }

  template <class T>
  const T& pick(const std::vector<T>& v) {
    return v[below(v.size())];
  }

  // A value of a type or size no route expects.
  json weird() {
    switch (below(16)) {
      case 0:
        return nullptr;
      case 1:
        return chance(0.5);
      case 2:
        return -1;
      case 3:
        return std::numeric_limits<std::int64_t>::max();
      case 4:
        return std::numeric_limits<std::int64_t>::min();
      case 5:
        return std::numeric_limits<std::uint64_t>::max();
      case 6:
        return 1e308;
      case 7:
        return -0.5;
      case 8:
        return "";
      case 9:
        return std::string(70'000, 'x');
      case 10:
        return std::string("a\0b", 3);
      case 11:
        return json::array();
      case 12:
        return json::object();
      case 13: {
        json deep = json::array();
        for (int i = 0; i < 200; ++i)
          deep = json::array({deep});
        return deep;
      }
      case 14:
        return "2026-13-45T99:99:99Z";
      default:
        return "99999999999999999999999";
    }
  }

  // Mutates `v` at `depth` (copies of array elements only near the top, so
  // that bodies stay below a megabyte).
  json mutate(const json& v, int depth = 0) {
    if (depth > 8)
      return v;
    if (chance(0.15))
      return weird();
    if (v.is_object()) {
      json o = v;
      if (!o.empty() && chance(0.3)) {
        auto it = o.begin();
        std::advance(it, static_cast<long>(below(o.size())));
        o.erase(it);
      }
      if (chance(0.2))
        o[pick(keys_)] = weird();
      for (auto& [k, x] : o.items())
        if (chance(0.5))
          x = mutate(x, depth + 1);
      return o;
    }
    if (v.is_array()) {
      json a = json::array();
      auto copies = depth < 2 && chance(0.2) ? pick(std::vector<int>{0, 2, 50})
                                             : 1;
      for (int c = 0; c < copies; ++c)
        for (auto& x : v)
          a.push_back(chance(0.5) ? mutate(x, depth + 1) : x);
      return a;
    }
    return v;
  }

  // The body bytes: usually the JSON, sometimes cut short, random bytes or
  // an unclosed nesting far past any parser's depth.
  std::string bytes(const json& body) {
    auto r = below(100);
    if (r < 5) {
      std::string s(below(300), '\0');
      for (auto& c : s)
        c = static_cast<char>(below(256));
      return s;
    }
    auto text = body.dump(-1, ' ', false, json::error_handler_t::replace);
    if (r < 12)
      return text.substr(0, below(text.size() + 1));
    if (r < 15)
      return std::string(100'000, '[');
    return text;
  }

private:
  std::mt19937_64 rng_;
  std::vector<std::string> keys_{"extra", "events", "condition", "kind",
                                 "lease", "query",  "items",     "after"};
};

struct route {
  bhttp::verb verb;
  std::string target;
  json body; // null: none
};

json a_query() {
  return items({"StudentSubscribed"}, {"course:c1"});
}

std::vector<route> seeds() {
  auto event = ev("StudentSubscribed", {"student:s1", "course:c1"},
                  R"({"student":"s1","course":"c1"})");
  auto condition = json{{"failIfEventsMatch", a_query()}, {"after", 1}};
  using bhttp::verb;
  return {
    {verb::post, "/append",
     json{{"events", json::array({event})}, {"condition", condition}}},
    {verb::post, "/v1/append",
     json{{"events", json::array({event, event})},
          {"condition", condition},
          {"jobs", json::array({json{{"kind", "k"}, {"args", {{"a", 1}}}}})}}},
    {verb::post, "/v1/jobs",
     json{{"queue", "default"},
          {"kind", "k"},
          {"args", json::object()},
          {"priority", 1},
          {"run_at", "2026-01-01T00:00:00Z"},
          {"delay_ms", 0},
          {"max_attempts", 3},
          {"unique_key", "u"}}},
    {verb::post, "/v1/jobs/fetch",
     json{{"queue", "default"},
          {"kinds", {"k"}},
          {"max", 2},
          {"lease_ms", 1000},
          {"wait_ms", 0},
          {"worker", "w"}}},
    {verb::post, "/v1/jobs/1/complete", json{{"lease", 1}}},
    {verb::post, "/v1/jobs/1/fail",
     json{
       {"lease", 1}, {"error", "e"}, {"retry_in_ms", 10}, {"discard", false}}},
    {verb::post, "/v1/jobs/1/heartbeat", json{{"lease", 1}, {"lease_ms", 100}}},
    {verb::post, "/v1/jobs/1/cancel", nullptr},
    {verb::post, "/v1/jobs/1/retry", nullptr},
    {verb::post, "/v1/triggers",
     json{{"name", "t"},
          {"query", a_query()},
          {"queue", "default"},
          {"kind", "k"},
          {"from", "now"}}},
    {verb::post, "/v1/projectors/course_seats/pause", nullptr},
    {verb::post, "/v1/projectors/course_seats/resume", nullptr},
    {verb::post, "/v1/projectors/course_seats/dead-letters/1/retry", nullptr},
    {verb::post, "/v1/projectors/course_seats/dead-letters/1/skip", nullptr},
  };
}

// GET targets; `%` stands for a mutated, URL-encoded JSON value.
const std::vector<std::string> get_targets{
  "/read?query=%&options=%",
  "/v1/read?query=%&options=%",
  "/v1/jobs?queue=%&state=%&kind=k&limit=%",
  "/v1/jobs/%",
  "/v1/projectors/%",
  "/v1/projectors/%/dead-letters",
  "/v1/subscribe?query=%&after=%",
  "/v1/head",
  "/v1/stats",
  "/v1/cluster",
  "/v1/queues",
  "/v1/triggers",
  "/ui/%",
  "/readyz",
};

class HostileInput : public PgSchemaTest {
protected:
  std::unique_ptr<node_process> node(const std::string& name,
                                     std::uint16_t cluster_port,
                                     const std::string& seeds) {
    return std::make_unique<node_process>(
      schema_, std::vector<std::string>{}, 0,
      std::vector<std::pair<std::string, std::string>>{
        {"DCB_NODE_NAME", name},
        {"DCB_CLUSTER_ADDR", "127.0.0.1:" + std::to_string(cluster_port)},
        {"DCB_CLUSTER_SEEDS", seeds}},
      DCBD_COURSES_BINARY);
  }

  static bool healthy(std::uint16_t port) {
    try {
      client c{port};
      return c.get("/healthz").status == 200;
    } catch (const std::exception&) {
      return false;
    }
  }

  std::uint64_t head() {
    return std::stoull(exec_sql("SELECT position FROM " + schema_ + ".head"));
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
};

TEST_F(HostileInput, MutatedRequestsOnEveryRouteGetAnswersAndChangeNothing) {
  auto cport = free_tcp_port();
  auto n = node("h1", cport, "127.0.0.1:" + std::to_string(cport));
  ASSERT_TRUE(n->up()) << n->log();
  auto seed = env_or("DCBD_FUZZ_SEED", 20261202);
  auto count = env_or("DCBD_FUZZ_REQUESTS", 2500);
  std::cout << "[          ] seed " << seed << ", " << count << " requests"
            << std::endl;
  mutator m{seed};
  auto routes = seeds();
  auto c = std::make_unique<client>(n->port());
  // Events of acknowledged appends, and of appends whose outcome is
  // unknown (503, or the connection dropped).
  std::uint64_t acked = 0, maybe = 0;
  std::map<unsigned, int> statuses;
  std::vector<std::string> failures;
  for (std::uint64_t i = 0; i < count; ++i) {
    unsigned status = 0;
    std::string what;
    json sent = nullptr;
    bool append = false;
    // `/append` answers a failed condition with 200 and this flag.
    bool condition_failed = false;
    if (m.chance(0.6)) {
      auto r = m.pick(routes);
      if (m.chance(0.2)) {
        auto at = r.target.find("/1/");
        if (at != std::string::npos)
          r.target.replace(at, 3,
                           "/"
                             + m.pick(std::vector<std::string>{
                               "0", "-1", "abc", "99999999999999999999", "%00",
                               "1e3", "%2F..%2F"})
                             + "/");
      }
      if (m.chance(0.1))
        r.verb = m.pick(
          std::vector<bhttp::verb>{bhttp::verb::get, bhttp::verb::put,
                                   bhttp::verb::delete_, bhttp::verb::patch});
      append = r.target == "/append" || r.target == "/v1/append";
      sent = r.body.is_null() ? json{} : m.mutate(r.body);
      auto body = r.body.is_null() && m.chance(0.7) ? "" : m.bytes(sent);
      auto type = m.pick(
        std::vector<std::string>{"application/json", "application/json",
                                 "application/msgpack", "text/plain"});
      what = std::string{bhttp::to_string(r.verb)} + " " + r.target + " "
             + body.substr(0, 200);
      try {
        auto rep = c->send(r.verb, r.target, body, type);
        status = rep.status;
        if (status == 200 && r.target == "/append")
          condition_failed
            = json::parse(rep.body).value("appendConditionFailed", false);
        if (rep.closed)
          c.reset();
      } catch (const std::exception&) {
        c.reset();
      }
      if (!c)
        c = std::make_unique<client>(n->port());
      if (append) {
        auto events = sent.is_object() && sent.contains("events")
                          && sent["events"].is_array()
                        ? sent["events"].size()
                        : 0;
        if (status == 200 && !condition_failed)
          acked += events;
        else if (status == 0 || status == 503)
          maybe += events;
      }
    } else {
      auto target = m.pick(get_targets);
      std::string t;
      for (auto ch : target) {
        if (ch != '%') {
          t += ch;
          continue;
        }
        auto v = m.mutate(m.pick(std::vector<json>{
          a_query(), json{{"limit", 3}, {"backwards", true}, {"from", 2}},
          json("x"), json(5)}));
        t += url_encode(v.dump(-1, ' ', false, json::error_handler_t::replace));
      }
      auto verb = m.chance(0.7)
                    ? std::string{"GET"}
                    : m.pick(std::vector<std::string>{"POST", "DELETE", "PUT",
                                                      "HEAD", "BREW"});
      auto accept = m.pick(std::vector<std::string>{
        "application/json", "text/event-stream", "application/x-ndjson",
        "application/msgpack"});
      what = verb + " " + t.substr(0, 200);
      status = status_of(n->port(), verb + " " + t
                                      + " HTTP/1.1\r\nHost: x\r\nAccept: "
                                      + accept + "\r\n\r\n");
      // Past the 64 KiB header limit the server answers 431 and closes
      // while the rest is still coming, so the answer may be lost to the
      // reset (the node's health is checked below either way).
      if (status == 0 && t.size() > 64 * 1024 && healthy(n->port()))
        status = 431;
    }
    ++statuses[status];
    if (status == 0 || (status >= 500 && status != 503))
      failures.push_back(std::to_string(status) + " " + what);
    if (status == 0 && !healthy(n->port()))
      FAIL() << "the node stopped answering after request " << i << ": " << what
             << "\n"
             << n->log();
  }
  std::cout << "[          ] statuses:";
  for (auto& [s, k] : statuses)
    std::cout << " " << s << "x" << k;
  std::cout << std::endl;
  // The requests reached the routes' logic: some were taken, many refused.
  EXPECT_GT(statuses[200] + statuses[201], 50);
  EXPECT_GT(statuses[400], 300);
  std::string listed;
  for (std::size_t k = 0; k < failures.size() && k < 10; ++k)
    listed += "\n  " + failures[k];
  EXPECT_TRUE(failures.empty())
    << failures.size() << " requests got no answer or a 5xx:" << listed;
  ASSERT_TRUE(healthy(n->port())) << n->log();
  // Refused appends wrote nothing; acknowledged ones are all there.
  auto h = head();
  EXPECT_GE(h, acked);
  EXPECT_LE(h, acked + maybe);
  // The node still takes and serves appends.
  client fresh{n->port()};
  auto ok = fresh.post("/v1/append",
                       json{{"events", json::array({ev("Probe", {"p:1"})})}});
  ASSERT_EQ(ok.status, 200u) << ok.body;
  auto read = fresh.get(read_target("/read", items({"Probe"}, {"p:1"})));
  ASSERT_EQ(read.status, 200u) << read.body;
  EXPECT_EQ(read.j().size(), 1u);
}

// -- WebSocket ----------------------------------------------------------------

TEST_F(HostileInput, RandomWebSocketFramesFreeEverythingTheyOpened) {
  auto cport = free_tcp_port();
  auto n = node("w1", cport, "127.0.0.1:" + std::to_string(cport));
  ASSERT_TRUE(n->up()) << n->log();
  auto subscriptions = [&] {
    client c{n->metrics_port()};
    return sample(c.get("/metrics").body, "dcb_subscriptions");
  };
  // The node's own subscriptions (the projector's, the trigger's), once
  // they all run: the count has been the same for a second. (Taking the
  // first non-zero count raced the trigger's start.)
  double before = -1;
  ASSERT_TRUE(eventually(
    [&] {
      before = subscriptions();
      std::this_thread::sleep_for(1s);
      return before >= 1 && subscriptions() == before;
    },
    20s));
  mutator m{env_or("DCBD_FUZZ_SEED", 20261202)};
  std::vector<json> ops{json{{"op", "subscribe"},
                             {"sub", "s1"},
                             {"query", json{{"items", json::array()}}},
                             {"after", 0},
                             {"credit", 10}},
                        json{{"op", "credit"}, {"sub", "s1"}, {"n", 5}},
                        json{{"op", "unsubscribe"}, {"sub", "s1"}}};
  int upgraded = 0;
  for (int conn = 0; conn < 150; ++conn) {
    net::io_context ioc;
    tcp::socket s{ioc};
    ASSERT_EQ(ws_upgrade(s, n->port()).substr(0, 12), "HTTP/1.1 101")
      << "connection " << conn;
    beast::error_code ec;
    ++upgraded;
    for (auto k = m.below(20) + 1; k > 0; --k) {
      std::string bytes;
      switch (m.below(6)) {
        case 0:
        case 1:
        case 2:
          bytes
            = ws_frame(m.mutate(m.pick(ops))
                         .dump(-1, ' ', false, json::error_handler_t::replace),
                       1);
          break;
        case 3:
          bytes = ws_frame(
            m.bytes(json{}),
            static_cast<int>(m.pick(std::vector<int>{1, 2, 3, 8, 9, 10, 15})));
          break;
        case 4:
          bytes = ws_frame("{\"op\":", 1, false); // never finished
          break;
        default:
          bytes = ws_frame("{}", 1, true, false); // unmasked: not allowed
      }
      net::write(s, net::buffer(bytes), ec);
      if (ec)
        break;
    }
    s.close(ec);
  }
  EXPECT_EQ(upgraded, 150);
  // A binary message (an error frame on /v1/ws; on a route without a
  // binary handler the server starts closing, which deadlocked Beast 1.74:
  // see WebSocket.CloseStuckInBeastStillEndsTheConnection) then a text
  // message that is no UTF-8, or a ping.
  for (auto second : {ws_frame("\xff\xfe", 1), ws_frame("p", 9)})
    for (int k = 0; k < 5; ++k) {
      net::io_context ioc;
      tcp::socket s{ioc};
      ASSERT_EQ(ws_upgrade(s, n->port()).substr(0, 12), "HTTP/1.1 101");
      beast::error_code ec;
      net::write(s, net::buffer(ws_frame("bin", 2) + second), ec);
      std::this_thread::sleep_for(20ms);
      s.close(ec);
    }
  ASSERT_TRUE(healthy(n->port())) << n->log();
  // Every subscription those connections opened ended with them.
  EXPECT_TRUE(eventually(
    [&] {
      return subscriptions() == before;
    },
    10s))
    << subscriptions() << " subscriptions, " << before << " before";
  // And every connection ended: a stop waits for them, so the node exits
  // within its grace period.
  n->process().signal(SIGTERM);
  EXPECT_TRUE(n->process().exited_within(15s))
    << "the node did not stop: a WebSocket session outlived its connection\n"
    << n->log();
}

// -- the cluster port ---------------------------------------------------------

TEST_F(HostileInput, GarbageOnTheClusterPortIsDroppedAndPeersStillLink) {
  auto p1 = free_tcp_port(), p2 = free_tcp_port();
  auto seeds = "127.0.0.1:" + std::to_string(p1)
               + ",127.0.0.1:" + std::to_string(p2);
  auto a = node("g1", p1, seeds);
  ASSERT_TRUE(a->up()) << a->log();
  auto rss0 = rss_kib(a->process().pid());
  mutator m{env_or("DCBD_FUZZ_SEED", 20261202)};
  auto send = [&](const std::string& bytes) {
    net::io_context ioc;
    tcp::socket s{ioc};
    beast::error_code ec;
    s.connect({net::ip::make_address("127.0.0.1"), p1}, ec);
    if (ec)
      return;
    net::write(s, net::buffer(bytes), ec);
    std::this_thread::sleep_for(5ms);
    s.close(ec);
  };
  for (int i = 0; i < 200; ++i)
    send(m.bytes(json{}) + std::string(m.below(3000), 'z'));
  // Headers shaped like the middleman's (operation, flags, payload length,
  // operation data, source and destination actor), with payload lengths of
  // 4 GiB, 1 GiB and 100 bytes, for every operation.
  for (int op = 0; op < 8; ++op)
    for (std::uint32_t len : {0xffffffffu, 1u << 30, 100u}) {
      std::string h(32, '\0');
      h[0] = static_cast<char>(op);
      for (int b = 0; b < 4; ++b)
        h[4 + b] = static_cast<char>((len >> (24 - 8 * b)) & 0xff);
      h[15] = 1;
      send(h + std::string(200, 'q'));
    }
  ASSERT_TRUE(healthy(a->port())) << a->log();
  auto rss1 = rss_kib(a->process().pid());
  // CAF 0.17's middleman sets a buffer aside for whatever payload length a
  // header announces. Without the guard in front of it (actors/basp_guard)
  // these headers grew the node from 19 to 185 MiB and stalled the
  // middleman so that the peer below linked only after 11-47 s.
  std::cout << "[          ] RSS " << rss0 << " KiB before, " << rss1
            << " KiB after" << std::endl;
#if !defined(__SANITIZE_ADDRESS__)
  // Under AddressSanitizer freed memory sits in quarantine (256 MiB by
  // default), so RSS measures the sanitizer; the link time below still
  // catches a stalled middleman there.
  EXPECT_LT(rss1, rss0 + 32 * 1024) << "the garbage grew the node";
#endif
  auto b = node("g2", p2, seeds);
  ASSERT_TRUE(b->up()) << b->log();
  auto both_up = [&] {
    client c{a->port()};
    auto r = c.get("/v1/cluster");
    if (r.status != 200)
      return false;
    int up = 0;
    auto doc = r.j();
    for (auto& mem : doc["members"])
      up += mem["status"] == "up";
    return up == 2;
  };
  // A cold mesh links within 2 s (ClusterTest); a loaded machine gets
  // slack, a stalled middleman does not.
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(eventually(both_up, 15s))
    << client{a->port()}.get("/v1/cluster").body << "\n"
    << a->log();
  std::cout << "[          ] linked after "
            << std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::steady_clock::now() - t0)
                 .count()
            << " ms" << std::endl;
}

} // namespace
} // namespace dcbd::test
