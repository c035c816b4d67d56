// The HTTP API against a real server on an ephemeral port: the dcb.events
// contract (exact shapes), /v1, msgpack, bad input, timeouts, metrics. The
// dcbd process under SIGTERM: node_test.cpp.
#include "tests/runtime/http_test_client.hpp"

#include <chrono>
#include <ctime>
#include <string>
#include <vector>

namespace dcbd::test {
namespace {

using namespace http_support;

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

TEST_F(Http, ReadsStreamMoreThanTheReadBound) {
  serve();
  client c{port()};
  // The fixture bounds engine reads at 50 events; both streams go past it.
  json events = json::array();
  for (int i = 0; i < 120; ++i)
    events.push_back(ev("E", {"t"}));
  ASSERT_EQ(c.post("/v1/append", json{{"events", events}}).status, 200u);
  auto whole = c.get(read_target("/read", json{{"items", json::array()}}));
  ASSERT_EQ(whole.status, 200u) << whole.body;
  auto arr = whole.j();
  ASSERT_EQ(arr.size(), 120u);
  EXPECT_EQ(arr.front()["position"], 1);
  EXPECT_EQ(arr.back()["position"], 120);
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

// -- jobs enqueued with appends -----------------------------------------------

class HttpJobs : public Http {
protected:
  // RFC 3339, a day from now.
  static std::string in_a_day() {
    auto t = std::chrono::system_clock::to_time_t(
      std::chrono::system_clock::now() + std::chrono::hours{24});
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
  }

  // queue kind args priority max_attempts state unique_key, one per job.
  std::string jobs() {
    return exec_sql("SELECT string_agg(concat_ws(' ', queue, kind, args::text, "
                    "priority, max_attempts, state, unique_key), ',' ORDER BY "
                    "id) FROM "
                    + schema_ + ".jobs");
  }
};

TEST_F(HttpJobs, V1AppendEnqueuesItsJobsIffAccepted) {
  serve();
  client c{port()};
  json full{{"queue", "mail"},    {"kind", "welcome"}, {"args", {{"to", "a"}}},
            {"priority", 2},      {"delay_ms", 0},     {"max_attempts", 3},
            {"unique_key", "u:a"}};
  json later{{"kind", "remind"},
             {"args", json::array({1, "x"})},
             {"run_at", in_a_day()}};
  json cond{{"failIfEventsMatch", items({}, {"user:a"})}};
  auto r = c.post("/v1/append", json{{"events", {ev("Registered", {"user:a"})}},
                                     {"condition", cond},
                                     {"jobs", {full, later}}});
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.j(), (json{{"first_position", 1}, {"last_position", 1}}));
  EXPECT_EQ(jobs(), "mail welcome {\"to\": \"a\"} 2 3 available u:a,"
                    "default remind [1, \"x\"] 1 20 scheduled");
  // A failed condition (409) enqueues nothing.
  r = c.post("/v1/append", json{{"events", {ev("Registered", {"user:a"})}},
                                {"condition", cond},
                                {"jobs", {json{{"kind", "never"}}}}});
  EXPECT_EQ(r.status, 409u) << r.body;
  EXPECT_EQ(head(), 1u);
  EXPECT_EQ(exec_sql("SELECT count(*) FROM " + schema_ + ".jobs"), "2");
  // msgpack bodies carry jobs too.
  auto packed = json::to_msgpack(json{{"events", {ev("Other", {"user:b"})}},
                                      {"jobs", {json{{"kind", "packed"}}}}});
  r = c.send(bhttp::verb::post, "/v1/append",
             std::string(packed.begin(), packed.end()), "application/msgpack");
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(exec_sql("SELECT kind FROM " + schema_ + ".jobs ORDER BY id DESC"),
            "packed");
}

TEST_F(HttpJobs, DcbAppendEnqueuesItsJobsIffAccepted) {
  serve();
  client c{port()};
  json cond{{"failIfEventsMatch", items({"A"}, {"k:1"})}};
  auto body = json{{"events", {ev("A", {"k:1"})}},
                   {"condition", cond},
                   {"jobs", {json{{"kind", "k"}, {"unique_key", "once"}}}}};
  auto r = c.post("/append", body);
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.j()["appendConditionFailed"], false);
  r = c.post("/append", body);
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.j()["appendConditionFailed"], true);
  // Accepted again after the head; the live job keeps its key.
  cond["after"] = 1;
  body["condition"] = cond;
  r = c.post("/append", body);
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.j()["appendConditionFailed"], false);
  EXPECT_EQ(head(), 2u);
  EXPECT_EQ(jobs(), "default k {} 1 20 available once");
}

TEST_F(HttpJobs, BadJobsAre400NamingTheFieldAndWriteNothing) {
  serve();
  struct bad_case {
    std::string route;
    std::string jobs;
    std::string mentions;
  };
  std::vector<bad_case> cases{
    {"/v1/append", R"({})", "jobs"},
    {"/v1/append", R"([5])", "jobs[0]"},
    {"/append", R"([{"queue": "q"}])", "jobs[0].kind"},
    {"/append", R"([{"kind": 1}])", "jobs[0].kind"},
    {"/v1/append", R"([{"kind": "k"}, {"kind": "k", "run_at": "soon"}])",
     "jobs[1].run_at"},
    {"/v1/append", R"([{"kind": "k", "priority": "high"}])",
     "jobs[0].priority"},
    {"/v1/append", R"([{"kind": "k", "priority": 0}])", "jobs[0].priority"},
    {"/append", R"([{"kind": "k", "delay_ms": 1.5}])", "jobs[0].delay_ms"},
    {"/append", R"([{"kind": "k", "max_attempts": 1e10}])",
     "jobs[0].max_attempts"},
    {"/append", R"([{"kind": "k", "max_attempts": 99999999999}])",
     "jobs[0].max_attempts"},
    {"/append", R"([{"kind": "k", "queue": "a b"}])", "jobs[0].queue"},
    {"/append", R"([{"kind": "k", "unique_key": []}])", "jobs[0].unique_key"},
  };
  client c{port()};
  for (auto& bc : cases) {
    auto body = R"({"events": [{"type": "A"}], "jobs": )" + bc.jobs + "}";
    SCOPED_TRACE(bc.route + " " + body);
    auto r = c.send(bhttp::verb::post, bc.route, body);
    EXPECT_EQ(r.status, 400u) << r.body;
    auto j = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r.body;
    EXPECT_EQ(j["code"], "invalid_argument") << r.body;
    EXPECT_NE(j["message"].get<std::string>().find(bc.mentions),
              std::string::npos)
      << r.body;
  }
  // Jobs without events are as invalid as no events.
  auto r = c.post("/v1/append", json{{"events", json::array()},
                                     {"jobs", {json{{"kind", "k"}}}}});
  EXPECT_EQ(r.status, 400u) << r.body;
  EXPECT_EQ(head(), 0u);
  EXPECT_EQ(exec_sql("SELECT count(*) FROM " + schema_ + ".jobs"), "0");
}

// -- metrics ------------------------------------------------------------------

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

} // namespace
} // namespace dcbd::test
