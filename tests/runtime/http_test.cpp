// The HTTP API against a real server on an ephemeral port: the dcb.events
// contract (exact shapes), /v1, msgpack, bad input, timeouts, metrics; and
// the dcbd process stopped with SIGTERM under load.
#include "runtime/http_client.hpp"
#include "runtime/http_server.hpp"
#include "runtime/json_api.hpp"
#include "runtime/metrics.hpp"
#include "tests/support/engine_fixture.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

namespace dcbd::test {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using client::url_encode;
using namespace std::chrono_literals;

struct reply {
  unsigned status = 0;
  std::string body;
  std::string content_type;
  std::string allow;
  bool closed = false;

  json j() const {
    return json::parse(body);
  }
};

/// A keep-alive HTTP client for one connection.
class client {
public:
  explicit client(std::uint16_t port) : stream_(ioc_) {
    stream_.connect(tcp::endpoint{net::ip::make_address("127.0.0.1"), port});
  }

  reply send(bhttp::verb verb, const std::string& target,
             const std::string& body = {},
             const std::string& content_type = "application/json",
             const std::string& accept = {}) {
    bhttp::request<bhttp::string_body> req{verb, target, 11};
    req.set(bhttp::field::host, "127.0.0.1");
    if (!body.empty()) {
      req.set(bhttp::field::content_type, content_type);
      req.body() = body;
    }
    if (!accept.empty())
      req.set(bhttp::field::accept, accept);
    req.keep_alive(true);
    req.prepare_payload();
    stream_.expires_after(30s);
    bhttp::write(stream_, req);
    return receive();
  }

  reply receive() {
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(std::uint64_t{1} << 30);
    beast::error_code ec;
    bhttp::read(stream_, buffer_, parser, ec);
    reply r;
    if (ec) {
      r.closed = true;
      return r;
    }
    auto& res = parser.get();
    r.status = res.result_int();
    r.body = res.body();
    r.content_type = std::string{res[bhttp::field::content_type]};
    r.allow = std::string{res[bhttp::field::allow]};
    r.closed = !res.keep_alive();
    return r;
  }

  reply get(const std::string& target) {
    return send(bhttp::verb::get, target);
  }

  reply post(const std::string& target, const json& body) {
    return send(bhttp::verb::post, target, body.dump());
  }

  /// Writes raw bytes.
  void raw(const std::string& bytes) {
    net::write(stream_.socket(), net::buffer(bytes));
  }

  /// Whether the server closed the connection within `wait`.
  bool closed_within(std::chrono::milliseconds wait) {
    stream_.expires_after(wait);
    char c;
    beast::error_code ec;
    stream_.read_some(net::buffer(&c, 1), ec);
    return ec && ec != beast::error::timeout;
  }

private:
  net::io_context ioc_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
};

json ev(const std::string& type, std::vector<std::string> tags,
        const std::string& data = "d") {
  return json{{"type", type}, {"tags", tags}, {"data", data}};
}

json items(std::vector<std::string> types, std::vector<std::string> tags) {
  return json{{"items", json::array({json{{"types", types}, {"tags", tags}}})}};
}

std::string read_target(const std::string& route, const json& q,
                        const json& options = nullptr) {
  auto t = route + "?query=" + url_encode(q.dump());
  if (!options.is_null())
    t += "&options=" + url_encode(options.dump());
  return t;
}

class Http : public EngineTest {
protected:
  void SetUp() override {
    EngineTest::SetUp();
    metrics_ = std::make_shared<node_metrics>();
    auto cfg = config();
    cfg.metrics = metrics_->store_hooks();
    cfg.reader.max_read_events = 50;
    start(cfg);
  }

  void TearDown() override {
    server_.reset();
    EngineTest::TearDown();
  }

  http_server& serve(http_config hc = {}) {
    hc.port = 0;
    if (hc.stream_chunk_events == http_config{}.stream_chunk_events)
      hc.stream_chunk_events = 3;
    server_.emplace(*engine_, metrics_, hc);
    return *server_;
  }

  std::uint16_t port() const {
    return server_->port();
  }

  std::uint64_t head() {
    auto h = engine_->head();
    EXPECT_TRUE(h) << message_of(h.error());
    return h ? *h : 0;
  }

  std::string scrape() {
    return prometheus::TextSerializer().Serialize(
      metrics_->registry()->Collect());
  }

  std::shared_ptr<node_metrics> metrics_;
  std::optional<http_server> server_;
};

// -- the dcb.events contract --------------------------------------------------

TEST_F(Http, DcbAppendAndReadHaveTheContractShapes) {
  serve();
  client c{port()};
  auto r = c.post("/append", json{{"events", json::array({ev("A", {"k:1"}, "x"),
                                                          ev("B", {"k:2"})})}});
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.content_type, "application/json");
  auto j = r.j();
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j.size(), 2u) << j;
  ASSERT_TRUE(j["durationInMicroseconds"].is_number_integer()) << j;
  EXPECT_GE(j["durationInMicroseconds"].get<std::int64_t>(), 0);
  EXPECT_EQ(j["appendConditionFailed"], false);

  auto rd = c.get(read_target("/read", items({"A"}, {"k:1"})));
  ASSERT_EQ(rd.status, 200u) << rd.body;
  auto arr = rd.j();
  ASSERT_TRUE(arr.is_array()) << arr;
  ASSERT_EQ(arr.size(), 1u);
  EXPECT_EQ(
    arr[0],
    (json{{"type", "A"}, {"tags", {"k:1"}}, {"data", "x"}, {"position", 1}}));
  // All events, options from / limit / backwards.
  auto all = c.get(read_target("/read", json{{"items", json::array()}},
                               json{{"from", 2}}))
               .j();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0]["position"], 2);
  auto back = c.get(read_target("/read", json{{"items", json::array()}},
                                json{{"backwards", true}, {"limit", 1}}))
                .j();
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0]["type"], "B");
}

TEST_F(Http, DcbFailedConditionIsOkWithTrueAndWritesNothing) {
  serve();
  client c{port()};
  ASSERT_EQ(c.post("/append", json{{"events", {ev("A", {"k:1"})}}}).status,
            200u);
  json cond{{"failIfEventsMatch", items({"A"}, {"k:1"})}};
  auto r = c.post("/append",
                  json{{"events", {ev("A", {"k:1"})}}, {"condition", cond}});
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.j()["appendConditionFailed"], true);
  EXPECT_EQ(head(), 1u);
  // With after = 1 the condition holds.
  cond["after"] = 1;
  r = c.post("/append",
             json{{"events", {ev("A", {"k:1"})}}, {"condition", cond}});
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.j()["appendConditionFailed"], false);
  EXPECT_EQ(head(), 2u);
}

// -- /v1 ----------------------------------------------------------------------

TEST_F(Http, V1AppendReturnsPositionsAndConflictIs409) {
  serve();
  client c{port()};
  auto r = c.post(
    "/v1/append",
    json{{"events", {ev("A", {"k"}), ev("A", {"k"}), ev("A", {"k"})}}});
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.j(), (json{{"first_position", 1}, {"last_position", 3}}));
  json cond{{"failIfEventsMatch", items({}, {"k"})}, {"after", 2}};
  r = c.post("/v1/append",
             json{{"events", {ev("A", {"k"})}}, {"condition", cond}});
  ASSERT_EQ(r.status, 409u) << r.body;
  EXPECT_EQ(r.j()["code"], "append_condition_failed");
  EXPECT_FALSE(r.j()["message"].get<std::string>().empty());
  EXPECT_EQ(head(), 3u);
}

TEST_F(Http, V1ReadStreamsNdjsonEndingWithTheHead) {
  serve();
  client c{port()};
  json events = json::array();
  for (int i = 0; i < 10; ++i)
    events.push_back(
      ev("E", {"n:" + std::to_string(i % 2)}, std::to_string(i)));
  ASSERT_EQ(c.post("/v1/append", json{{"events", events}}).status, 200u);
  // 10 events in chunks of 3: several HTTP chunks, then the head line.
  auto r = c.get(read_target("/v1/read", json{{"items", json::array()}}));
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.content_type, "application/x-ndjson");
  std::istringstream in{r.body};
  std::string line;
  std::vector<json> lines;
  while (std::getline(in, line))
    lines.push_back(json::parse(line));
  ASSERT_EQ(lines.size(), 11u) << r.body;
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(lines[i]["position"], i + 1);
    EXPECT_EQ(lines[i]["data"], std::to_string(i));
  }
  EXPECT_EQ(lines[10], (json{{"head", 10}}));
  // A filtered stream on the same connection (keep-alive).
  auto f
    = c.get(read_target("/v1/read", items({}, {"n:1"}), json{{"limit", 2}}));
  ASSERT_EQ(f.status, 200u);
  std::istringstream in2{f.body};
  lines.clear();
  while (std::getline(in2, line))
    lines.push_back(json::parse(line));
  ASSERT_EQ(lines.size(), 3u) << f.body;
  EXPECT_EQ(lines[0]["position"], 2);
  EXPECT_EQ(lines[1]["position"], 4);
  EXPECT_TRUE(lines[2].contains("head"));
}

TEST_F(Http, V1ReadStreamsMoreThanTheReadBound) {
  serve();
  client c{port()};
  // The fixture bounds /read at 50 events; the stream has no bound.
  json events = json::array();
  for (int i = 0; i < 120; ++i)
    events.push_back(ev("E", {"t"}));
  ASSERT_EQ(c.post("/v1/append", json{{"events", events}}).status, 200u);
  auto bounded = c.get(read_target("/read", json{{"items", json::array()}}));
  EXPECT_EQ(bounded.status, 400u);
  EXPECT_NE(bounded.j()["message"].get<std::string>().find("stream"),
            std::string::npos)
    << bounded.body;
  auto r = c.get(read_target("/v1/read", json{{"items", json::array()}}));
  ASSERT_EQ(r.status, 200u);
  EXPECT_EQ(std::count(r.body.begin(), r.body.end(), '\n'), 121);
}

TEST_F(Http, HeadHealthAndReadiness) {
  serve();
  client c{port()};
  EXPECT_EQ(c.get("/v1/head").j(), (json{{"head", 0}}));
  auto h = c.get("/healthz");
  EXPECT_EQ(h.status, 200u);
  auto rz = c.get("/readyz");
  EXPECT_EQ(rz.status, 200u);
  EXPECT_EQ(rz.j()["status"], "ready");
}

TEST_F(Http, MsgpackBodiesCarryBinaryData) {
  serve();
  client c{port()};
  std::string bin{"\x00\xff\x01 binary", 10};
  json body{{"events",
             {json{{"type", "Bin"},
                   {"tags", {"b"}},
                   {"data", json::binary(std::vector<std::uint8_t>(
                              bin.begin(), bin.end()))}}}}};
  auto packed = json::to_msgpack(body);
  auto r = c.send(bhttp::verb::post, "/v1/append",
                  std::string(packed.begin(), packed.end()),
                  "application/msgpack", "application/msgpack");
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.content_type, "application/msgpack");
  auto ack = json::from_msgpack(r.body);
  EXPECT_EQ(ack["last_position"], 1);
  auto rd = c.send(bhttp::verb::get,
                   read_target("/read", json{{"items", json::array()}}), {},
                   "application/json", "application/msgpack");
  ASSERT_EQ(rd.status, 200u);
  auto arr = json::from_msgpack(rd.body);
  ASSERT_EQ(arr.size(), 1u);
  auto& data = arr[0]["data"].get_binary();
  EXPECT_EQ(std::string(data.begin(), data.end()), bin);
  // Malformed msgpack is a 400; so are truncated documents and nesting
  // deep enough to exhaust a recursive decoder's stack.
  auto bad = c.send(bhttp::verb::post, "/v1/append", std::string{"\xc1", 1},
                    "application/msgpack");
  EXPECT_EQ(bad.status, 400u);
  auto truncated = std::string(packed.begin(), packed.end() - 3);
  EXPECT_EQ(c.send(bhttp::verb::post, "/v1/append", truncated,
                   "application/msgpack")
              .status,
            400u);
  std::string deep(1'000'000, '\x91');
  deep += '\xc0';
  auto r2 = c.send(bhttp::verb::post, "/v1/append", deep,
                   "application/msgpack");
  EXPECT_EQ(r2.status, 400u) << r2.body;
  std::string deep_json(200'000, '[');
  deep_json += std::string(200'000, ']');
  EXPECT_EQ(c.send(bhttp::verb::post, "/v1/append", deep_json).status, 400u);
  EXPECT_EQ(head(), 1u);
}

// -- bad input ----------------------------------------------------------------

TEST_F(Http, BadInputGetsA4xxWithTheReasonAndWritesNothing) {
  serve();
  struct bad_case {
    bhttp::verb verb;
    std::string target;
    std::string body;
    unsigned status;
    std::string mentions;
  };
  auto q = [](const std::string& text) {
    return "/read?query=" + url_encode(text);
  };
  std::vector<bad_case> cases{
    {bhttp::verb::post, "/append", "{\"events\": [", 400, "JSON"},
    {bhttp::verb::post, "/append", "[]", 400, "object"},
    {bhttp::verb::post, "/append", "{}", 400, "events"},
    {bhttp::verb::post, "/append", R"({"events": {}})", 400, "events"},
    {bhttp::verb::post, "/append", R"({"events": [{"tags": []}]})", 400,
     "events[0].type"},
    {bhttp::verb::post, "/append",
     R"({"events": [{"type": "A", "tags": [1]}]})", 400, "events[0].tags[0]"},
    {bhttp::verb::post, "/append", R"({"events": [{"type": "A", "data": 5}]})",
     400, "events[0].data"},
    {bhttp::verb::post, "/append", R"({"events": [{"type": ""}]})", 400,
     "events[0].type"},
    {bhttp::verb::post, "/v1/append",
     R"({"events": [{"type": "A"}], "condition": {"after": 1}})", 400,
     "failIfEventsMatch"},
    {bhttp::verb::post, "/v1/append",
     R"({"events": [{"type": "A"}], "condition": {"failIfEventsMatch": {"items": []}, "after": -1}})",
     400, "condition.after"},
    {bhttp::verb::post, "/append",
     R"({"events": [{"type": "A"}], "condition": {"failIfEventsMatch": {"items": "x"}}})",
     400, "items"},
    {bhttp::verb::get, q("{"), "", 400, "query"},
    {bhttp::verb::get, q(R"({"items": [{"types": "A"}]})"), "", 400,
     "query.items[0].types"},
    {bhttp::verb::get, q(R"({"items": [{"tags": [""]}]})"), "", 400,
     "query.items[0].tags[0]"},
    {bhttp::verb::get,
     "/read?query=" + url_encode(R"({"items": []})")
       + "&options=" + url_encode(R"({"limit": "ten"})"),
     "", 400, "options.limit"},
    {bhttp::verb::get, "/read?query=%zz", "", 400, "percent"},
    {bhttp::verb::get, "/nope", "", 404, "/nope"},
    {bhttp::verb::get, "/append", "", 405, "POST"},
    {bhttp::verb::delete_, "/read", "", 405, "GET"},
    {bhttp::verb::post, "/v1/head", "{}", 405, "GET"},
  };
  auto c = std::make_unique<client>(port());
  for (auto& bc : cases) {
    SCOPED_TRACE(std::string{bhttp::to_string(bc.verb)} + " " + bc.target + " "
                 + bc.body);
    auto r = c->send(bc.verb, bc.target, bc.body);
    if (r.closed && r.status == 0) {
      c = std::make_unique<client>(port());
      ADD_FAILURE() << "the server closed the connection";
      continue;
    }
    EXPECT_EQ(r.status, bc.status) << r.body;
    auto j = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r.body;
    EXPECT_TRUE(j["code"].is_string()) << r.body;
    EXPECT_NE(j["message"].get<std::string>().find(bc.mentions),
              std::string::npos)
      << r.body;
    if (bc.status == 405) {
      EXPECT_FALSE(r.allow.empty());
    }
  }
  EXPECT_EQ(head(), 0u);
  // The server still serves.
  EXPECT_EQ(c->get("/healthz").status, 200u);
}

TEST_F(Http, OversizedBodyIs413AndWritesNothing) {
  http_config hc;
  hc.max_body = 1024;
  serve(hc);
  client c{port()};
  json big{{"events", {ev("A", {"k"}, std::string(4096, 'x'))}}};
  auto r = c.post("/append", big);
  EXPECT_EQ(r.status, 413u) << r.body;
  EXPECT_NE(r.body.find("1024"), std::string::npos) << r.body;
  EXPECT_EQ(head(), 0u);
  client again{port()};
  EXPECT_EQ(again.get("/healthz").status, 200u);
}

TEST_F(Http, ClientStallingMidRequestIsTimedOut) {
  http_config hc;
  hc.request_timeout = 300ms;
  hc.idle_timeout = 300ms;
  serve(hc);
  client c{port()};
  c.raw("POST /append HTTP/1.1\r\nHost: x\r\nContent-Type: "
        "application/json\r\nContent-Length: 100\r\n\r\n{\"events\":");
  EXPECT_TRUE(c.closed_within(5s));
  client half{port()};
  half.raw("GET /healthz HTTP/1.1\r\nHo");
  EXPECT_TRUE(half.closed_within(5s));
  EXPECT_EQ(head(), 0u);
}

TEST_F(Http, GarbageIsA400AndTheServerCarriesOn) {
  serve();
  client c{port()};
  c.raw("THIS IS NOT HTTP\r\n\r\n");
  auto r = c.receive();
  EXPECT_EQ(r.status, 400u);
  client ok{port()};
  EXPECT_EQ(ok.get("/healthz").status, 200u);
}

// -- metrics ------------------------------------------------------------------

// The value of the sample `name{labels}` in a scrape; -1 when absent.
double sample(const std::string& text, const std::string& series) {
  std::istringstream in{text};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(series + " ", 0) == 0)
      return std::stod(line.substr(series.size() + 1));
  return -1;
}

TEST_F(Http, MetricsMoveWithTheWork) {
  serve();
  client c{port()};
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(
      c.post("/append", json{{"events", {ev("A", {"k"}), ev("B", {})}}}).status,
      200u);
  json cond{{"failIfEventsMatch", items({"A"}, {})}};
  ASSERT_EQ(c.post("/append",
                   json{{"events", {ev("A", {})}}, {"condition", cond}})
              .j()["appendConditionFailed"],
            true);
  ASSERT_EQ(c.get(read_target("/read", json{{"items", json::array()}})).status,
            200u);
  ASSERT_EQ(c.get("/nope").status, 404u);
  auto text = scrape();
  EXPECT_EQ(sample(text, R"(dcb_append_requests_total{result="ok"})"), 3)
    << text;
  EXPECT_EQ(sample(text, R"(dcb_append_requests_total{result="conflict"})"), 1);
  EXPECT_EQ(sample(text, "dcb_events_appended_total"), 6);
  EXPECT_EQ(sample(text, R"(dcb_read_requests_total{result="ok"})"), 1);
  EXPECT_EQ(sample(text, "dcb_events_read_total"), 6);
  EXPECT_EQ(
    sample(text, R"(dcb_http_requests_total{code="200",route="/append"})"), 4);
  EXPECT_EQ(
    sample(text, R"(dcb_http_requests_total{code="404",route="other"})"), 1);
  EXPECT_GE(sample(text, "dcb_group_size_requests_count"), 3);
  EXPECT_EQ(sample(text, "dcb_append_duration_seconds_count"), 4);
}

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
