// Jobs over HTTP (API.md §7) against a real server and job service on an
// ephemeral port: enqueue, get, list, cancel, retry and their bad input;
// external workers (fetch, complete, fail, heartbeat, stale leases, the
// long-poll); queue counts; triggers; the metrics. Then a dcbd process:
// its flags, dcbctl jobs and dcb_jobs{queue,state}.
#include "actors/jobs.hpp"
#include "tests/runtime/http_test_client.hpp"
#include "tests/runtime/node_process.hpp"

#include <algorithm>
#include <future>
#include <iostream>
#include <map>
#include <optional>
#include <set>

#ifndef DCBCTL_BINARY
#  error "DCBCTL_BINARY must name the dcbctl executable"
#endif

namespace dcbd::test {
namespace {

using namespace http_support;

class JobsHttp : public EngineTest {
protected:
  void SetUp() override {
    EngineTest::SetUp();
    metrics_ = std::make_shared<node_metrics>();
    auto cfg = config();
    cfg.metrics = metrics_->store_hooks();
    start(cfg);
  }

  void TearDown() override {
    server_.reset();
    if (jobs_)
      jobs_->stop();
    jobs_.reset();
    EngineTest::TearDown();
  }

  // Starts the job service (and workers added by `before`), then the server.
  void serve(std::function<void(job_service&)> before = {},
             http_config hc = {}) {
    jobs_config jc;
    jc.node = "test-node";
    jc.poll = 200ms;
    jobs_.emplace(*sys_, *engine_, jc, metrics_->job_hooks());
    if (before)
      before(*jobs_);
    hc.port = 0;
    http_extensions ext;
    ext.jobs = &*jobs_;
    server_.emplace(*engine_, metrics_, hc, std::move(ext));
  }

  std::uint16_t port() const {
    return server_->port();
  }

  std::string scrape() {
    return prometheus::TextSerializer().Serialize(
      metrics_->registry()->Collect());
  }

  // POSTs `body` and expects `status`; returns the answer's JSON.
  static json post(client& c, const std::string& path, const json& body,
                   unsigned status) {
    auto r = c.post(path, body);
    EXPECT_EQ(r.status, status) << path << " " << body << " -> " << r.body;
    return r.body.empty() ? json{} : json::parse(r.body, nullptr, false);
  }

  static json get(client& c, const std::string& path, unsigned status = 200) {
    auto r = c.get(path);
    EXPECT_EQ(r.status, status) << path << " -> " << r.body;
    return r.body.empty() ? json{} : json::parse(r.body, nullptr, false);
  }

  static std::int64_t enqueue(client& c, const json& body) {
    auto j = post(c, "/v1/jobs", body, 201);
    return j.is_object() ? j.value("id", std::int64_t{0}) : 0;
  }

  static std::string job_path(std::int64_t id, const std::string& tail = {}) {
    return "/v1/jobs/" + std::to_string(id) + tail;
  }

  // Expects a 400 invalid_argument whose message names `field`.
  static void expect_bad(const reply& r, const std::string& field,
                         const std::string& what) {
    EXPECT_EQ(r.status, 400u) << what << " -> " << r.body;
    auto j = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << what << " -> " << r.body;
    EXPECT_EQ(j.value("code", ""), "invalid_argument") << what;
    EXPECT_NE(j.value("message", "").find(field), std::string::npos)
      << what << ": the message should name " << field << ": " << r.body;
  }

  std::shared_ptr<node_metrics> metrics_;
  std::optional<job_service> jobs_;
  std::optional<http_server> server_;
};

// -- enqueue, get, list -------------------------------------------------------

TEST_F(JobsHttp, EnqueueAnswersIdAndStateAndGetShowsTheJob) {
  serve();
  client c{port()};
  auto r = c.post("/v1/jobs",
                  json{{"kind", "email"}, {"args", {{"to", "a@b"}, {"n", 1}}}});
  ASSERT_EQ(r.status, 201u) << r.body;
  auto created = r.j();
  EXPECT_EQ(created.size(), 2u) << created;
  ASSERT_TRUE(created["id"].is_number_integer()) << created;
  EXPECT_EQ(created["state"], "available");
  auto id = created["id"].get<std::int64_t>();

  auto j = get(c, job_path(id));
  EXPECT_EQ(j["id"], id);
  EXPECT_EQ(j["queue"], "default");
  EXPECT_EQ(j["kind"], "email");
  EXPECT_EQ(j["args"], (json{{"to", "a@b"}, {"n", 1}})) << "args as JSON";
  EXPECT_EQ(j["state"], "available");
  EXPECT_EQ(j["attempt"], 0);
  EXPECT_EQ(j["max_attempts"], 20);
  EXPECT_EQ(j["priority"], 1);
  EXPECT_EQ(j["errors"], json::array());
  ASSERT_TRUE(j["scheduled_at"].is_string()) << j;
  EXPECT_TRUE(parse_rfc3339(j["scheduled_at"].get<std::string>())) << j;
  EXPECT_TRUE(parse_rfc3339(j["created_at"].get<std::string>())) << j;
  for (auto key : {"attempted_at", "finalized_at", "worker", "unique_key",
                   "trigger", "trigger_position", "lease_expires_at"})
    EXPECT_TRUE(j.contains(key) && j[key].is_null()) << key << " " << j;
  EXPECT_FALSE(j.contains("lease")) << "the lease token is the worker's";

  // Every field given.
  auto full = enqueue(c, json{{"queue", "mail.eu-1"},
                              {"kind", "digest"},
                              {"args", json::array({1, "two"})},
                              {"priority", 3},
                              {"max_attempts", 5},
                              {"delay_ms", 3'600'000},
                              {"unique_key", "digest:2026-12"}});
  j = get(c, job_path(full));
  EXPECT_EQ(j["queue"], "mail.eu-1");
  EXPECT_EQ(j["args"], json::array({1, "two"}));
  EXPECT_EQ(j["state"], "scheduled");
  EXPECT_EQ(j["priority"], 3);
  EXPECT_EQ(j["max_attempts"], 5);
  EXPECT_EQ(j["unique_key"], "digest:2026-12");
  auto at = parse_rfc3339(j["scheduled_at"].get<std::string>());
  auto created_at = parse_rfc3339(j["created_at"].get<std::string>());
  ASSERT_TRUE(at && created_at);
  EXPECT_NEAR(static_cast<double>(*at - *created_at), 3.6e9, 60e6);

  // run_at, and args that are no object.
  auto later = enqueue(c, json{{"kind", "k"},
                               {"run_at", "2099-01-02T03:04:05+01:00"},
                               {"args", "just text"}});
  j = get(c, job_path(later));
  EXPECT_EQ(j["state"], "scheduled");
  EXPECT_EQ(j["scheduled_at"], "2099-01-02T02:04:05.000000Z");
  EXPECT_EQ(j["args"], "just text");

  EXPECT_EQ(c.get(job_path(999'999)).status, 404u);
  EXPECT_EQ(c.get(job_path(999'999)).j()["code"], "not_found");
}

TEST_F(JobsHttp, ListFiltersNewestFirstAndPages) {
  serve();
  client c{port()};
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 5; ++i)
    ids.push_back(enqueue(c, json{{"kind", i % 2 ? "odd" : "even"},
                                  {"queue", i < 4 ? "a" : "b"}}));
  auto delayed = enqueue(c, json{{"kind", "even"}, {"delay_ms", 60'000}});
  auto all = get(c, "/v1/jobs");
  ASSERT_TRUE(all.is_array()) << all;
  ASSERT_EQ(all.size(), 6u);
  EXPECT_EQ(all[0]["id"], delayed) << "newest first";
  EXPECT_EQ(all[5]["id"], ids[0]);
  EXPECT_EQ(get(c, "/v1/jobs?queue=a").size(), 4u);
  EXPECT_EQ(get(c, "/v1/jobs?queue=a&kind=odd").size(), 2u);
  auto scheduled = get(c, "/v1/jobs?state=scheduled");
  ASSERT_EQ(scheduled.size(), 1u);
  EXPECT_EQ(scheduled[0]["id"], delayed);
  EXPECT_EQ(get(c, "/v1/jobs?state=completed"), json::array());
  EXPECT_EQ(get(c, "/v1/jobs?queue=nope"), json::array());
  auto page = get(c, "/v1/jobs?limit=2");
  ASSERT_EQ(page.size(), 2u);
  auto next = get(c, "/v1/jobs?limit=2&before="
                       + std::to_string(page[1]["id"].get<std::int64_t>()));
  ASSERT_EQ(next.size(), 2u);
  EXPECT_LT(next[0]["id"], page[1]["id"]);

  // An empty parameter is an absent one (API.md writes them all empty).
  EXPECT_EQ(get(c, "/v1/jobs?queue=&state=&kind=&limit=&before="), all);
  EXPECT_EQ(get(c, "/v1/jobs?limit="), all);
  EXPECT_EQ(get(c, "/v1/jobs?before=&limit=2"), page);
  EXPECT_EQ(get(c, "/v1/jobs?queue=a&state=&kind=odd&limit=").size(), 2u);
  // The other list routes take no parameters, empty ones included.
  EXPECT_EQ(get(c, "/v1/queues?queue=&limit="), get(c, "/v1/queues"));
  EXPECT_EQ(get(c, "/v1/triggers?name=&limit="), json::array());

  // Bad parameters.
  expect_bad(c.get("/v1/jobs?state=bogus"), "state", "state=bogus");
  for (auto l : {"0", "1001", "x", "-1", "1.5"})
    expect_bad(c.get(std::string{"/v1/jobs?limit="} + l), "limit", l);
  expect_bad(c.get("/v1/jobs?before=abc"), "before", "before=abc");
  for (auto id : {"abc", "0", "-3", "1x", "99999999999999999999999"})
    expect_bad(c.get(std::string{"/v1/jobs/"} + id), "id", id);
}

// API.md §7 sends "run_at" and "delay_ms" together: each is a lower bound,
// the job is scheduled at the later of run_at and now + delay_ms (a delay of
// 0 bounds nothing: a past run_at is kept). POST /v1/jobs and the jobs of
// /v1/append and /append parse and schedule them alike.
TEST_F(JobsHttp, RunAtAndDelayMsAreLowerBoundsTheSameOnEveryPath) {
  serve();
  client c{port()};
  const std::string future = "2099-01-02T03:04:05Z";
  const std::string past = "2001-02-03T04:05:06Z";
  struct bounds_case {
    std::string name;
    json fields;
    // The expected scheduled_at: run_at exactly, else created_at + delay.
    std::optional<std::string> at;
    std::int64_t delay_ms;
    const char* state;
  };
  std::vector<bounds_case> cases{
    {"future_no_delay",
     {{"run_at", future}, {"delay_ms", 0}},
     "2099-01-02T03:04:05.000000Z",
     0,
     "scheduled"},
    {"future_then_delay",
     {{"run_at", future}, {"delay_ms", 3'600'000}},
     "2099-01-02T03:04:05.000000Z",
     0,
     "scheduled"},
    {"past_then_delay",
     {{"run_at", past}, {"delay_ms", 3'600'000}},
     std::nullopt,
     3'600'000,
     "scheduled"},
    {"past_no_delay",
     {{"run_at", past}, {"delay_ms", 0}},
     "2001-02-03T04:05:06.000000Z",
     0,
     "available"},
  };
  auto expect_scheduled = [](const json& j, const bounds_case& bc,
                             const std::string& path) {
    SCOPED_TRACE(path + " " + bc.name + " " + j.dump());
    EXPECT_EQ(j["state"], bc.state);
    if (bc.at) {
      EXPECT_EQ(j["scheduled_at"], *bc.at);
      return;
    }
    auto at = parse_rfc3339(j["scheduled_at"].get<std::string>());
    auto created = parse_rfc3339(j["created_at"].get<std::string>());
    ASSERT_TRUE(at && created);
    EXPECT_NEAR(static_cast<double>(*at - *created),
                static_cast<double>(bc.delay_ms) * 1000.0, 60e6);
  };
  auto job_of = [](const bounds_case& bc, const std::string& queue) {
    auto body = bc.fields;
    body["kind"] = bc.name;
    body["queue"] = queue;
    return body;
  };
  // Enqueued alone: 201, as asked.
  for (auto& bc : cases) {
    auto id = enqueue(c, job_of(bc, "posted"));
    expect_scheduled(get(c, job_path(id)), bc, "/v1/jobs");
  }
  // With an append, through both append routes.
  for (std::string route : {"/v1/append", "/append"}) {
    auto queue = route == "/append" ? std::string{"dcb"} : std::string{"v1"};
    auto jobs = json::array();
    for (auto& bc : cases)
      jobs.push_back(job_of(bc, queue));
    auto r = c.post(route, json{{"events", {ev("A", {"k"})}}, {"jobs", jobs}});
    ASSERT_EQ(r.status, 200u) << route << " " << r.body;
    auto listed = get(c, "/v1/jobs?queue=" + queue);
    ASSERT_EQ(listed.size(), cases.size()) << listed;
    for (auto& bc : cases) {
      auto j = std::find_if(listed.begin(), listed.end(), [&](const json& x) {
        return x["kind"] == bc.name;
      });
      ASSERT_NE(j, listed.end()) << bc.name << " " << listed;
      expect_scheduled(*j, bc, route);
    }
  }
}

TEST_F(JobsHttp, AUniqueKeyHeldByALiveJobAnswersThatJob) {
  serve();
  client c{port()};
  auto first = enqueue(c, json{{"kind", "k"}, {"unique_key", "u1"}});
  auto r = c.post("/v1/jobs", json{{"kind", "k"},
                                   {"unique_key", "u1"},
                                   {"args", {{"other", true}}}});
  ASSERT_EQ(r.status, 200u) << r.body;
  auto j = r.j();
  EXPECT_EQ(j["id"], first);
  EXPECT_EQ(j["state"], "available");
  EXPECT_EQ(j["duplicate"], true);
  EXPECT_EQ(j["kind"], "k");
  EXPECT_EQ(j["args"], json::object()) << "the existing job's args";
  EXPECT_EQ(get(c, "/v1/jobs").size(), 1u);
  // Once it is final, the key is free again.
  ASSERT_EQ(c.post(job_path(first, "/cancel"), json::object()).status, 200u);
  auto second = enqueue(c, json{{"kind", "k"}, {"unique_key", "u1"}});
  EXPECT_NE(second, first);
}

TEST_F(JobsHttp, BadJobsAre400NamingTheFieldAndEnqueueNothing) {
  serve();
  client c{port()};
  struct bad_case {
    json body;
    const char* field;
  };
  std::string long_key(300, 'k');
  std::vector<bad_case> cases{
    {json::object(), "kind"},
    {json::array(), "body"},
    {json{{"kind", 1}}, "kind"},
    {json{{"kind", ""}}, "kind"},
    {json{{"kind", std::string(256, 'x')}}, "kind"},
    {json{{"kind", "k"}, {"queue", "has space"}}, "queue"},
    {json{{"kind", "k"}, {"queue", ""}}, "queue"},
    {json{{"kind", "k"}, {"queue", 7}}, "queue"},
    {json{{"kind", "k"}, {"priority", 0}}, "priority"},
    {json{{"kind", "k"}, {"priority", 101}}, "priority"},
    {json{{"kind", "k"}, {"priority", -5}}, "priority"},
    {json{{"kind", "k"}, {"priority", "1"}}, "priority"},
    {json{{"kind", "k"}, {"priority", 1.5}}, "priority"},
    {json{{"kind", "k"}, {"priority", 1e30}}, "priority"},
    {json{{"kind", "k"}, {"priority", 99999999999999}}, "priority"},
    {json{{"kind", "k"}, {"max_attempts", 0}}, "max_attempts"},
    {json{{"kind", "k"}, {"max_attempts", 1001}}, "max_attempts"},
    {json{{"kind", "k"}, {"delay_ms", -1}}, "delay_ms"},
    {json{{"kind", "k"}, {"delay_ms", std::int64_t{1} << 60}}, "delay_ms"},
    {json{{"kind", "k"}, {"delay_ms", "soon"}}, "delay_ms"},
    {json{{"kind", "k"}, {"run_at", "tomorrow"}}, "run_at"},
    {json{{"kind", "k"}, {"run_at", 12}}, "run_at"},
    {json{{"kind", "k"}, {"run_at", "1969-12-31T23:59:59Z"}}, "run_at"},
    {json{{"kind", "k"}, {"unique_key", long_key}}, "unique_key"},
    {json{{"kind", "k"}, {"unique_key", 5}}, "unique_key"},
    {json{{"kind", "k"}, {"args", std::string("nul \0 inside", 13)}}, "args"},
  };
  for (auto& bc : cases)
    expect_bad(c.post("/v1/jobs", bc.body), bc.field, bc.body.dump());
  expect_bad(c.send(bhttp::verb::post, "/v1/jobs", "{not json"), "body",
             "malformed JSON");
  EXPECT_EQ(get(c, "/v1/jobs"), json::array()) << "nothing was enqueued";
  // The connection survived all of it.
  EXPECT_EQ(c.get("/v1/queues").status, 200u);
}

// -- management ---------------------------------------------------------------

TEST_F(JobsHttp, CancelAndRetryFollowTheStates) {
  serve();
  client c{port()};
  auto id = enqueue(c, json{{"kind", "k"}});
  auto j = post(c, job_path(id, "/cancel"), json::object(), 200);
  EXPECT_EQ(j["id"], id);
  EXPECT_EQ(j["state"], "cancelled");
  EXPECT_TRUE(j["finalized_at"].is_string()) << j;
  j = post(c, job_path(id, "/cancel"), json::object(), 409);
  EXPECT_EQ(j["code"], "conflict");
  EXPECT_NE(j["message"].get<std::string>().find("cancelled"),
            std::string::npos)
    << j;
  j = post(c, job_path(id, "/retry"), json::object(), 200);
  EXPECT_EQ(j["state"], "available");
  EXPECT_EQ(get(c, job_path(id))["state"], "available");

  // A running job cannot be retried; it can be cancelled.
  auto f = post(c, "/v1/jobs/fetch", json{{"kinds", {"k"}}}, 200);
  ASSERT_EQ(f["jobs"].size(), 1u) << f;
  j = post(c, job_path(id, "/retry"), json::object(), 409);
  EXPECT_EQ(j["code"], "conflict");
  EXPECT_NE(j["message"].get<std::string>().find("running"), std::string::npos)
    << j;
  EXPECT_EQ(post(c, job_path(id, "/cancel"), json::object(), 200)["state"],
            "cancelled");

  EXPECT_EQ(post(c, job_path(424242, "/cancel"), json::object(), 404)["code"],
            "not_found");
  EXPECT_EQ(post(c, job_path(424242, "/retry"), json::object(), 404)["code"],
            "not_found");
  expect_bad(c.post("/v1/jobs/x/cancel", json::object()), "id", "x/cancel");
  EXPECT_EQ(c.get(job_path(id, "/cancel")).status, 405u);
}

// -- external workers ---------------------------------------------------------

TEST_F(JobsHttp, AWorkerFetchesAndCompletes) {
  serve();
  client c{port()};
  auto id = enqueue(c, json{{"kind", "resize"},
                            {"queue", "media"},
                            {"args", {{"image", 7}}},
                            {"max_attempts", 3}});
  // Nothing of another queue or kind.
  EXPECT_EQ(post(c, "/v1/jobs/fetch", json{{"kinds", {"resize"}}}, 200),
            (json{{"jobs", json::array()}}));
  EXPECT_EQ(post(c, "/v1/jobs/fetch",
                 json{{"queue", "media"}, {"kinds", {"other"}}}, 200)["jobs"],
            json::array());
  auto f = post(c, "/v1/jobs/fetch",
                json{{"queue", "media"},
                     {"kinds", {"resize", "crop"}},
                     {"max", 10},
                     {"lease_ms", 30'000},
                     {"wait_ms", 0}},
                200);
  ASSERT_EQ(f["jobs"].size(), 1u) << f;
  auto got = f["jobs"][0];
  EXPECT_EQ(got["id"], id);
  EXPECT_EQ(got["kind"], "resize");
  EXPECT_EQ(got["queue"], "media");
  EXPECT_EQ(got["args"], (json{{"image", 7}}));
  EXPECT_EQ(got["attempt"], 1);
  EXPECT_EQ(got["max_attempts"], 3);
  ASSERT_TRUE(got["lease"].is_number_integer()) << got;
  auto lease = got["lease"].get<std::int64_t>();

  auto j = get(c, job_path(id));
  EXPECT_EQ(j["state"], "running");
  EXPECT_EQ(j["attempt"], 1);
  EXPECT_TRUE(j["attempted_at"].is_string()) << j;
  EXPECT_TRUE(j["lease_expires_at"].is_string()) << j;
  EXPECT_EQ(j["worker"].get<std::string>().rfind("http 127.0.0.1:", 0), 0u)
    << "named by its address: " << j;
  EXPECT_FALSE(j.contains("lease"));

  // Fetched once only.
  EXPECT_EQ(post(c, "/v1/jobs/fetch", json{{"queue", "media"}}, 200)["jobs"],
            json::array());

  // A wrong lease changes nothing; the right one completes it once.
  j = post(c, job_path(id, "/complete"), json{{"lease", lease + 1}}, 409);
  EXPECT_EQ(j["code"], "lease_lost");
  EXPECT_FALSE(j["message"].get<std::string>().empty());
  EXPECT_EQ(get(c, job_path(id))["state"], "running");
  EXPECT_EQ(post(c, job_path(id, "/complete"), json{{"lease", lease}}, 200),
            (json{{"id", id}, {"state", "completed"}}));
  EXPECT_EQ(post(c, job_path(id, "/complete"), json{{"lease", lease}},
                 409)["code"],
            "lease_lost");
  j = get(c, job_path(id));
  EXPECT_EQ(j["state"], "completed");
  EXPECT_TRUE(j["finalized_at"].is_string());
  EXPECT_TRUE(j["lease_expires_at"].is_null());
  // An id that does not exist: 404, for each of the three.
  for (auto what : {"/complete", "/fail", "/heartbeat"})
    EXPECT_EQ(post(c, job_path(777777, what), json{{"lease", lease}},
                   404)["code"],
              "not_found")
      << what;
}

TEST_F(JobsHttp, AFailedAttemptIsRetryableWithItsErrorThenDiscarded) {
  serve();
  client c{port()};
  auto id = enqueue(c, json{{"kind", "flaky"}, {"max_attempts", 2}});
  auto f = post(c, "/v1/jobs/fetch",
                json{{"kinds", {"flaky"}}, {"worker", "w-1"}}, 200);
  ASSERT_EQ(f["jobs"].size(), 1u) << f;
  auto lease = f["jobs"][0]["lease"].get<std::int64_t>();
  EXPECT_EQ(get(c, job_path(id))["worker"], "w-1");
  EXPECT_EQ(
    post(c, job_path(id, "/fail"),
         json{{"lease", lease}, {"error", "smtp timeout"}, {"retry_in_ms", 0}},
         200),
    (json{{"id", id}, {"state", "retryable"}}));
  auto j = get(c, job_path(id));
  EXPECT_EQ(j["state"], "retryable");
  ASSERT_EQ(j["errors"].size(), 1u) << j;
  EXPECT_EQ(j["errors"][0]["error"], "smtp timeout");
  EXPECT_EQ(j["errors"][0]["attempt"], 1);
  // Due at once (retry_in_ms 0): the second attempt, the last one.
  json second;
  for (int i = 0; i < 50 && second.empty(); ++i) {
    auto again = post(c, "/v1/jobs/fetch", json{{"kinds", {"flaky"}}}, 200);
    if (!again["jobs"].empty())
      second = again["jobs"][0];
    else
      std::this_thread::sleep_for(100ms);
  }
  ASSERT_FALSE(second.empty());
  EXPECT_EQ(second["attempt"], 2);
  EXPECT_EQ(post(c, job_path(id, "/fail"),
                 json{{"lease", second["lease"]}, {"error", "again"}}, 200),
            (json{{"id", id}, {"state", "discarded"}}));
  j = get(c, job_path(id));
  EXPECT_EQ(j["state"], "discarded");
  EXPECT_EQ(j["errors"].size(), 2u) << j;

  // discard: true ends it at once, whatever attempts are left.
  auto other = enqueue(c, json{{"kind", "flaky"}});
  f = post(c, "/v1/jobs/fetch", json{{"kinds", {"flaky"}}}, 200);
  ASSERT_EQ(f["jobs"].size(), 1u);
  EXPECT_EQ(post(c, job_path(other, "/fail"),
                 json{{"lease", f["jobs"][0]["lease"]},
                      {"error", "bad input"},
                      {"discard", true}},
                 200)["state"],
            "discarded");
  // A long error is kept in part, cut between characters.
  auto wordy = enqueue(c, json{{"kind", "flaky"}});
  f = post(c, "/v1/jobs/fetch", json{{"kinds", {"flaky"}}}, 200);
  ASSERT_EQ(f["jobs"].size(), 1u);
  std::string long_error = "x";
  for (int i = 0; i < 3000; ++i)
    long_error += "\xc3\xa9"; // é
  EXPECT_EQ(post(c, job_path(wordy, "/fail"),
                 json{{"lease", f["jobs"][0]["lease"]},
                      {"error", long_error},
                      {"retry_in_ms", 3'600'000}},
                 200)["state"],
            "retryable");
  auto kept = get(c, job_path(wordy))["errors"][0]["error"].get<std::string>();
  EXPECT_EQ(kept.size(), 4095u);
  EXPECT_EQ(kept, long_error.substr(0, 4095));

  // A retry_in_ms keeps it away for that long.
  auto later = enqueue(c, json{{"kind", "flaky"}});
  f = post(c, "/v1/jobs/fetch", json{{"kinds", {"flaky"}}}, 200);
  ASSERT_EQ(f["jobs"].size(), 1u);
  EXPECT_EQ(
    post(c, job_path(later, "/fail"),
         json{{"lease", f["jobs"][0]["lease"]}, {"retry_in_ms", 3'600'000}},
         200)["state"],
    "retryable");
  auto at
    = parse_rfc3339(get(c, job_path(later))["scheduled_at"].get<std::string>());
  ASSERT_TRUE(at);
  auto now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
  EXPECT_GT(*at - now_us, std::int64_t{3'500'000'000});
}

TEST_F(JobsHttp, HeartbeatsExtendALeaseUntilTheJobIsCancelled) {
  serve();
  client c{port()};
  auto id = enqueue(c, json{{"kind", "long"}});
  auto f = post(c, "/v1/jobs/fetch",
                json{{"kinds", {"long"}}, {"lease_ms", 2000}}, 200);
  ASSERT_EQ(f["jobs"].size(), 1u);
  auto lease = f["jobs"][0]["lease"].get<std::int64_t>();
  auto before = parse_rfc3339(
    get(c, job_path(id))["lease_expires_at"].get<std::string>());
  EXPECT_EQ(post(c, job_path(id, "/heartbeat"),
                 json{{"lease", lease}, {"lease_ms", 600'000}}, 200),
            (json{{"id", id}, {"state", "running"}}));
  auto after = parse_rfc3339(
    get(c, job_path(id))["lease_expires_at"].get<std::string>());
  ASSERT_TRUE(before && after);
  EXPECT_GT(*after - *before, std::int64_t{500'000'000});
  EXPECT_EQ(post(c, job_path(id, "/heartbeat"), json{{"lease", lease + 7}},
                 409)["code"],
            "lease_lost");

  // Cancelled while it runs: its worker's lease is stale from now on.
  ASSERT_EQ(post(c, job_path(id, "/cancel"), json::object(), 200)["state"],
            "cancelled");
  EXPECT_EQ(post(c, job_path(id, "/heartbeat"), json{{"lease", lease}},
                 409)["code"],
            "lease_lost");
  EXPECT_EQ(post(c, job_path(id, "/complete"), json{{"lease", lease}},
                 409)["code"],
            "lease_lost");
  EXPECT_EQ(post(c, job_path(id, "/fail"),
                 json{{"lease", lease}, {"error", "late"}}, 409)["code"],
            "lease_lost");
  auto j = get(c, job_path(id));
  EXPECT_EQ(j["state"], "cancelled");
  EXPECT_EQ(j["errors"], json::array()) << "the stale fail wrote nothing";
}

// A heartbeat that names no lease_ms extends by what the worker asked for
// at fetch (or in its latest heartbeat), not by a fixed 30 s: a worker that
// leased for an hour is not cut short, one that leased for a second is not
// kept alive for 30 after it vanishes.
TEST_F(JobsHttp, AHeartbeatWithoutLeaseMsKeepsTheLengthTheWorkerAskedFor) {
  serve();
  client c{port()};
  auto expires_in_us = [&](std::int64_t id) {
    auto at = parse_rfc3339(
      get(c, job_path(id))["lease_expires_at"].get<std::string>());
    EXPECT_TRUE(at);
    auto now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
    return at ? *at - now_us : 0;
  };
  auto long_id = enqueue(c, json{{"kind", "hour"}});
  auto f = post(c, "/v1/jobs/fetch",
                json{{"kinds", {"hour"}}, {"lease_ms", 3'600'000}}, 200);
  ASSERT_EQ(f["jobs"].size(), 1u);
  auto lease = f["jobs"][0]["lease"].get<std::int64_t>();
  post(c, job_path(long_id, "/heartbeat"), json{{"lease", lease}}, 200);
  EXPECT_GT(expires_in_us(long_id), std::int64_t{3'000'000'000});
  // A heartbeat that names a length sets it for the ones after it.
  post(c, job_path(long_id, "/heartbeat"),
       json{{"lease", lease}, {"lease_ms", 2000}}, 200);
  post(c, job_path(long_id, "/heartbeat"), json{{"lease", lease}}, 200);
  EXPECT_LT(expires_in_us(long_id), std::int64_t{10'000'000});

  auto short_id = enqueue(c, json{{"kind", "second"}});
  f = post(c, "/v1/jobs/fetch", json{{"kinds", {"second"}}, {"lease_ms", 1000}},
           200);
  ASSERT_EQ(f["jobs"].size(), 1u);
  post(c, job_path(short_id, "/heartbeat"),
       json{{"lease", f["jobs"][0]["lease"]}}, 200);
  EXPECT_LT(expires_in_us(short_id), std::int64_t{10'000'000});
}

// API.md §7: "An expired lease makes the job fetchable again (attempt+1)
// within lease_ms + 1 s"; the vanished worker's lease is fenced from then on.
TEST_F(JobsHttp, AnExpiredLeaseMakesTheJobFetchableAgainAndFencesTheOldOne) {
  serve();
  client c{port()};
  auto id = enqueue(c, json{{"kind", "vanish"}, {"max_attempts", 3}});
  auto f = post(c, "/v1/jobs/fetch",
                json{{"kinds", {"vanish"}}, {"lease_ms", 1000}}, 200);
  ASSERT_EQ(f["jobs"].size(), 1u) << f;
  EXPECT_EQ(f["jobs"][0]["attempt"], 1);
  auto first = f["jobs"][0]["lease"].get<std::int64_t>();
  // The worker vanishes; another one long-polls until the job comes back.
  auto t0 = std::chrono::steady_clock::now();
  json again;
  while (std::chrono::steady_clock::now() - t0 < 20s) {
    again = post(c, "/v1/jobs/fetch",
                 json{{"kinds", {"vanish"}}, {"wait_ms", 200}}, 200);
    if (!again["jobs"].empty())
      break;
  }
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_EQ(again["jobs"].size(), 1u) << "not fetchable again within 20 s";
  EXPECT_EQ(again["jobs"][0]["id"], id);
  EXPECT_EQ(again["jobs"][0]["attempt"], 2);
  auto second = again["jobs"][0]["lease"].get<std::int64_t>();
  EXPECT_NE(second, first);
  for (std::string call : {"/complete", "/heartbeat", "/fail"})
    EXPECT_EQ(post(c, job_path(id, call), json{{"lease", first}}, 409)["code"],
              "lease_lost")
      << call;
  EXPECT_EQ(post(c, job_path(id, "/complete"), json{{"lease", second}},
                 200)["state"],
            "completed");
  std::cout
    << "[          ] fetchable again "
    << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
    << " ms after the fetch (lease 1000 ms; API.md: within lease_ms "
       "+ 1 s)\n";
}

// API.md §7: lower numbers run first; equal priorities in the order they
// became due.
TEST_F(JobsHttp, FetchTakesTheMostUrgentFirst) {
  serve();
  client c{port()};
  auto low = enqueue(c, json{{"kind", "p"}, {"priority", 3}});
  auto urgent = enqueue(c, json{{"kind", "p"}, {"priority", 1}});
  auto mid = enqueue(c, json{{"kind", "p"}, {"priority", 2}});
  auto urgent_later = enqueue(c, json{{"kind", "p"}});
  std::vector<std::int64_t> order;
  for (int i = 0; i < 4; ++i) {
    auto f = post(c, "/v1/jobs/fetch", json{{"kinds", {"p"}}, {"max", 1}}, 200);
    ASSERT_EQ(f["jobs"].size(), 1u) << f;
    order.push_back(f["jobs"][0]["id"].get<std::int64_t>());
  }
  EXPECT_EQ(order, (std::vector<std::int64_t>{urgent, urgent_later, mid, low}));
}

TEST_F(JobsHttp, BadWorkerCallsAre400) {
  serve();
  client c{port()};
  struct bad_case {
    json body;
    const char* field;
  };
  std::vector<bad_case> fetches{
    {json{{"max", 0}}, "max"},
    {json{{"max", 1001}}, "max"},
    {json{{"max", "1"}}, "max"},
    {json{{"lease_ms", 999}}, "lease_ms"},
    {json{{"lease_ms", 3'600'001}}, "lease_ms"},
    {json{{"wait_ms", -1}}, "wait_ms"},
    {json{{"wait_ms", 60'001}}, "wait_ms"},
    {json{{"kinds", "k"}}, "kinds"},
    {json{{"kinds", {1}}}, "kinds[0]"},
    {json{{"kinds", {"k", std::string("a\0b", 3)}}}, "kinds[1]"},
    {json{{"kinds", {""}}}, "kinds[0]"},
    {json{{"kinds", {std::string(256, 'k')}}}, "kinds[0]"},
    {json{{"queue", "a b"}}, "queue"},
    {json{{"worker", ""}}, "worker"},
    {json{{"worker", 5}}, "worker"},
    {json::array(), "body"},
  };
  for (auto& bc : fetches)
    expect_bad(c.post("/v1/jobs/fetch", bc.body), bc.field, bc.body.dump());
  // Nothing was taken by those.
  auto id = enqueue(c, json{{"kind", "k"}});
  EXPECT_EQ(get(c, job_path(id))["state"], "available");

  std::vector<bad_case> finishes{
    {json::object(), "lease"},
    {json{{"lease", "12"}}, "lease"},
    {json{{"lease", 0}}, "lease"},
    {json{{"lease", -4}}, "lease"},
  };
  for (auto tail : {"/complete", "/fail", "/heartbeat"})
    for (auto& bc : finishes)
      expect_bad(c.post(job_path(id, tail), bc.body), bc.field,
                 tail + bc.body.dump());
  expect_bad(c.post(job_path(id, "/fail"),
                    json{{"lease", 1}, {"retry_in_ms", -1}}),
             "retry_in_ms", "retry_in_ms -1");
  expect_bad(c.post(job_path(id, "/fail"), json{{"lease", 1}, {"error", 5}}),
             "error", "error 5");
  expect_bad(c.post(job_path(id, "/fail"),
                    json{{"lease", 1}, {"discard", "yes"}}),
             "discard", "discard yes");
  expect_bad(c.post(job_path(id, "/fail"),
                    json{{"lease", 1}, {"discard", true}, {"retry_in_ms", 5}}),
             "retry_in_ms", "discard with retry_in_ms");
  expect_bad(c.post(job_path(id, "/heartbeat"),
                    json{{"lease", 1}, {"lease_ms", 10}}),
             "lease_ms", "lease_ms 10");
  expect_bad(c.post("/v1/jobs/abc/complete", json{{"lease", 1}}), "id",
             "abc/complete");
  EXPECT_EQ(c.get("/v1/jobs/fetch").status, 405u);
  EXPECT_EQ(get(c, job_path(id))["state"], "available");
}

TEST_F(JobsHttp, ALongPollReturnsAsSoonAsAJobIsEnqueued) {
  // One HTTP thread: a waiting fetch must not hold it.
  http_config hc;
  hc.threads = 1;
  serve({}, hc);
  std::atomic<bool> done{false};
  json fetched;
  std::chrono::steady_clock::duration took{};
  std::thread worker{[&] {
    client w{port()};
    auto t0 = std::chrono::steady_clock::now();
    auto r
      = w.post("/v1/jobs/fetch",
               json{{"queue", "lp"}, {"kinds", {"wake"}}, {"wait_ms", 20'000}});
    took = std::chrono::steady_clock::now() - t0;
    fetched = json::parse(r.body, nullptr, false);
    done = true;
  }};
  std::this_thread::sleep_for(500ms);
  EXPECT_FALSE(done) << fetched;
  client c{port()};
  // Served while the fetch waits.
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(c.get("/v1/queues").status, 200u);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  auto id = enqueue(c, json{{"kind", "wake"}, {"queue", "lp"}});
  worker.join();
  ASSERT_TRUE(fetched.is_object()) << fetched;
  ASSERT_EQ(fetched["jobs"].size(), 1u) << fetched;
  EXPECT_EQ(fetched["jobs"][0]["id"], id);
  EXPECT_GE(took, 450ms);
  EXPECT_LT(took, 10s) << "woken by the enqueue, not by the end of wait_ms";
}

TEST_F(JobsHttp, ALongPollWithoutJobsEndsEmptyAfterWaitMs) {
  serve();
  client c{port()};
  auto t0 = std::chrono::steady_clock::now();
  auto r = c.post("/v1/jobs/fetch", json{{"queue", "quiet"}, {"wait_ms", 700}});
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.j(), (json{{"jobs", json::array()}}));
  EXPECT_GE(took, 600ms);
  EXPECT_LT(took, 5s);
}

// -- queues and triggers ------------------------------------------------------

TEST_F(JobsHttp, QueuesCountJobsByState) {
  serve();
  client c{port()};
  enqueue(c, json{{"kind", "k"}, {"queue", "q1"}});
  enqueue(c, json{{"kind", "k"}, {"queue", "q1"}, {"delay_ms", 600'000}});
  auto gone = enqueue(c, json{{"kind", "k"}, {"queue", "q2"}});
  post(c, job_path(gone, "/cancel"), json::object(), 200);
  auto run = enqueue(c, json{{"kind", "k"}, {"queue", "q2"}});
  auto f = post(c, "/v1/jobs/fetch", json{{"queue", "q2"}}, 200);
  ASSERT_EQ(f["jobs"].size(), 1u);
  EXPECT_EQ(f["jobs"][0]["id"], run);
  auto qs = get(c, "/v1/queues");
  ASSERT_TRUE(qs.is_array()) << qs;
  std::map<std::string, json> by_queue;
  for (auto& q : qs)
    by_queue[q["queue"].get<std::string>()] = q;
  ASSERT_EQ(by_queue.size(), 2u) << qs;
  EXPECT_EQ(by_queue["q1"], (json{{"queue", "q1"},
                                  {"available", 1},
                                  {"scheduled", 1},
                                  {"running", 0},
                                  {"retryable", 0},
                                  {"completed", 0},
                                  {"cancelled", 0},
                                  {"discarded", 0}}));
  EXPECT_EQ(by_queue["q2"]["cancelled"], 1);
  EXPECT_EQ(by_queue["q2"]["running"], 1);
}

TEST_F(JobsHttp, TriggersMakeOneJobPerMatchingEvent) {
  serve();
  client c{port()};
  ASSERT_EQ(
    c.post("/v1/append", json{{"events", {ev("Paid", {"order:0"})}}}).status,
    200u);
  auto t = post(c, "/v1/triggers",
                json{{"name", "on-paid"},
                     {"query", items({"Paid"}, {})},
                     {"kind", "ship"},
                     {"queue", "shipping"}},
                201);
  EXPECT_EQ(t["name"], "on-paid");
  EXPECT_EQ(t["kind"], "ship");
  EXPECT_EQ(t["queue"], "shipping");
  EXPECT_EQ(t["query"], items({"Paid"}, {}));
  EXPECT_EQ(t["position"], 1) << "from now: after the head " << t;
  EXPECT_TRUE(parse_rfc3339(t.value("created_at", ""))) << t;
  // Taken, and bad ones.
  EXPECT_EQ(post(c, "/v1/triggers", json{{"name", "on-paid"}, {"kind", "ship"}},
                 409)["code"],
            "conflict");
  expect_bad(c.post("/v1/triggers", json{{"kind", "k"}}), "name", "no name");
  expect_bad(c.post("/v1/triggers", json{{"name", "a b"}, {"kind", "k"}}),
             "name", "a b");
  expect_bad(c.post("/v1/triggers", json{{"name", "t"}}), "kind", "no kind");
  expect_bad(c.post("/v1/triggers",
                    json{{"name", "t"},
                         {"kind", "k"},
                         {"query", {{"items", {json::object()}}}}}),
             "query", "an empty item");
  expect_bad(c.post("/v1/triggers",
                    json{{"name", "t"}, {"kind", "k"}, {"query", "Paid"}}),
             "query", "query text");
  expect_bad(c.post("/v1/triggers",
                    json{{"name", "t"}, {"kind", "k"}, {"from", "later"}}),
             "from", "from later");
  expect_bad(c.post("/v1/triggers",
                    json{{"name", "t"}, {"kind", "k"}, {"from", -1}}),
             "from", "from -1");
  expect_bad(c.post("/v1/triggers",
                    json{{"name", "t"}, {"kind", "k"}, {"queue", "a b"}}),
             "queue", "queue a b");
  // Past the head (1): refused as a subscription's `after` would be, also
  // past int32 (the position is a bigint throughout).
  for (std::uint64_t from :
       {std::uint64_t{2}, std::uint64_t{1} << 31, std::uint64_t{INT64_MAX}})
    expect_bad(c.post("/v1/triggers",
                      json{{"name", "t"}, {"kind", "k"}, {"from", from}}),
               "past the head", "from " + std::to_string(from));
  EXPECT_EQ(get(c, "/v1/triggers").size(), 1u) << "the refused ones exist";
  // From a position: the events after it.
  post(c, "/v1/triggers",
       json{{"name", "all-from-0"}, {"kind", "audit"}, {"from", 0}}, 201);

  ASSERT_EQ(c.post("/v1/append",
                   json{{"events",
                         {ev("Paid", {"order:1"}, "one"), ev("Other", {}),
                          ev("Paid", {"order:2"}, "two")}}})
              .status,
            200u);
  json ship;
  json audit;
  for (int i = 0; i < 100; ++i) {
    ship = get(c, "/v1/jobs?kind=ship");
    audit = get(c, "/v1/jobs?kind=audit");
    if (ship.size() >= 2 && audit.size() >= 4)
      break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(ship.size(), 2u) << ship;
  ASSERT_EQ(audit.size(), 4u) << audit;
  // Newest first: the event at 4, then at 2.
  EXPECT_EQ(ship[0]["queue"], "shipping");
  EXPECT_EQ(ship[0]["trigger"], "on-paid");
  EXPECT_EQ(ship[0]["trigger_position"], 4);
  EXPECT_EQ(ship[0]["args"]["trigger"], "on-paid");
  EXPECT_EQ(ship[0]["args"]["event"]["type"], "Paid");
  EXPECT_EQ(ship[0]["args"]["event"]["tags"], json::array({"order:2"}));
  EXPECT_EQ(ship[0]["args"]["event"]["data"], "two");
  EXPECT_EQ(ship[0]["args"]["event"]["position"], 4);
  EXPECT_EQ(ship[1]["args"]["event"]["position"], 2);
  std::set<std::uint64_t> positions;
  for (auto& j : audit)
    positions.insert(j["trigger_position"].get<std::uint64_t>());
  EXPECT_EQ(positions, (std::set<std::uint64_t>{1, 2, 3, 4}));

  auto list = get(c, "/v1/triggers");
  ASSERT_TRUE(list.is_array());
  ASSERT_EQ(list.size(), 2u) << list;
  for (auto& tr : list)
    for (auto key :
         {"name", "query", "queue", "kind", "position", "created_at"})
      EXPECT_TRUE(tr.contains(key)) << key << " " << tr;

  // Delete: 200, then 404; no more jobs from it.
  auto del = c.send(bhttp::verb::delete_, "/v1/triggers/on-paid");
  ASSERT_EQ(del.status, 200u) << del.body;
  EXPECT_EQ(del.j(), (json{{"name", "on-paid"}, {"deleted", true}}));
  EXPECT_EQ(c.send(bhttp::verb::delete_, "/v1/triggers/on-paid").status, 404u);
  EXPECT_EQ(c.send(bhttp::verb::delete_, "/v1/triggers/a%20b").status, 404u);
  EXPECT_EQ(get(c, "/v1/triggers").size(), 1u);
  ASSERT_EQ(
    c.post("/v1/append", json{{"events", {ev("Paid", {"order:3"})}}}).status,
    200u);
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(get(c, "/v1/jobs?kind=ship").size(), 2u);
}

// -- metrics ------------------------------------------------------------------

TEST_F(JobsHttp, MetricsCountEnqueuesRunsAndQueueStates) {
  serve([](job_service& jobs) {
    job_worker_spec w;
    w.kind = "ok";
    w.handle = [](const job&) {
      return job_result::ok();
    };
    jobs.add_worker(std::move(w));
  });
  client c{port()};
  auto id = enqueue(c, json{{"kind", "ok"}});
  enqueue(c, json{{"kind", "idle"}, {"queue", "other"}});
  for (int i = 0; i < 100; ++i) {
    if (get(c, job_path(id))["state"] == "completed")
      break;
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_EQ(get(c, job_path(id))["state"], "completed");
  // What the node's poller does once a second.
  std::promise<std::vector<queue_counts>> counted;
  jobs_->counts([&](caf::expected<std::vector<queue_counts>> r) {
    counted.set_value(r ? *r : std::vector<queue_counts>{});
  });
  metrics_->jobs(counted.get_future().get());
  auto text = scrape();
  EXPECT_GE(sample(text, "dcb_jobs_enqueued_total"), 2) << text;
  EXPECT_EQ(
    sample(
      text,
      R"(dcb_job_runs_total{kind="ok",queue="default",result="completed"})"),
    1)
    << text;
  EXPECT_GE(sample(text, "dcb_job_duration_seconds_count"), 1) << text;
  EXPECT_GE(sample(text, "dcb_job_wait_seconds_count"), 1) << text;
  EXPECT_EQ(sample(text, "dcb_job_rescued_total"), 0) << text;
  EXPECT_EQ(sample(text, R"(dcb_jobs{queue="default",state="completed"})"), 1)
    << text;
  EXPECT_EQ(sample(text, R"(dcb_jobs{queue="other",state="available"})"), 1)
    << text;
  // A queue that is gone reads 0.
  metrics_->jobs({});
  text = scrape();
  EXPECT_EQ(sample(text, R"(dcb_jobs{queue="other",state="available"})"), 0)
    << text;
}

// -- a dcbd process -----------------------------------------------------------

class JobsNode : public PgSchemaTest {};

std::string run(std::vector<std::string> argv, int* code = nullptr) {
  argv.insert(argv.begin(), DCBCTL_BINARY);
  child_process p{std::move(argv), {}};
  auto status = p.wait();
  if (code)
    *code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return p.output();
}

TEST_F(JobsNode, DcbctlJobsAndTheGaugesOfANode) {
  node_process node{schema_,
                    {"--dcbd.jobs-poll-ms=200", "--dcbd.jobs-lease-ms=3000",
                     "--dcbd.jobs-retention-completed-s=60",
                     "--dcbd.jobs-retention-discarded-s=120"}};
  ASSERT_TRUE(node.up()) << node.log();
  auto url = "http://127.0.0.1:" + std::to_string(node.port());
  int code = -1;

  auto out = run({"--url", url, "--json", "jobs", "enqueue", "report",
                  "--queue", "reports", "--args", R"({"month":12})",
                  "--priority", "2", "--unique-key", "r-12"},
                 &code);
  ASSERT_EQ(code, 0) << out;
  auto id = json::parse(out)["id"].get<std::int64_t>();
  out = run({"--url", url, "jobs", "enqueue", "report", "--queue", "reports",
             "--unique-key", "r-12"},
            &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("already has unique key r-12"), std::string::npos) << out;
  out = run({"--url", url, "jobs", "enqueue", "later", "--delay-ms", "60000"},
            &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("(scheduled)"), std::string::npos) << out;

  out = run({"--url", url, "jobs", "list", "--queue", "reports"}, &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("SCHEDULED_AT"), std::string::npos) << out;
  EXPECT_NE(out.find("report"), std::string::npos) << out;
  EXPECT_EQ(out.find("later"), std::string::npos) << out;
  out = run({"--url", url, "jobs", "show", std::to_string(id)}, &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find(R"({"month":12})"), std::string::npos) << out;
  EXPECT_NE(out.find("r-12"), std::string::npos) << out;
  out = run({"--url", url, "jobs", "cancel", std::to_string(id)}, &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("cancelled"), std::string::npos) << out;
  out = run({"--url", url, "jobs", "cancel", std::to_string(id)}, &code);
  EXPECT_EQ(code, 1) << out;
  out = run({"--url", url, "--json", "jobs", "retry", std::to_string(id)},
            &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(json::parse(out)["state"], "available") << out;
  out = run({"--url", url, "jobs", "show", "999999"}, &code);
  EXPECT_EQ(code, 1) << out;
  out = run({"--url", url, "jobs", "show", "x"}, &code);
  EXPECT_EQ(code, 2) << out;
  out = run({"--url", url, "jobs", "list", "--state", "nope"}, &code);
  EXPECT_EQ(code, 1) << out;

  out = run({"--url", url, "jobs", "queues"}, &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("AVAILABLE"), std::string::npos) << out;
  EXPECT_NE(out.find("reports"), std::string::npos) << out;

  out = run({"--url", url, "jobs", "triggers", "create", "t1", "--kind",
             "notify", "--types", "A,B", "--tags", "k:1", "--from", "0"},
            &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("t1"), std::string::npos) << out;
  out = run({"--url", url, "--json", "jobs", "triggers"}, &code);
  EXPECT_EQ(code, 0) << out;
  auto triggers = json::parse(out);
  ASSERT_EQ(triggers.size(), 1u) << out;
  json item{{"types", {"A", "B"}}, {"tags", {"k:1"}}};
  EXPECT_EQ(triggers[0]["query"], (json{{"items", json::array({item})}}));
  out = run({"--url", url, "jobs", "triggers", "create", "t1", "--kind", "x"},
            &code);
  EXPECT_EQ(code, 1) << out;
  out = run({"--url", url, "jobs", "triggers", "delete", "t1"}, &code);
  EXPECT_EQ(code, 0) << out;
  out = run({"--url", url, "jobs", "triggers", "delete", "t1"}, &code);
  EXPECT_EQ(code, 1) << out;
  out = run({"--url", url, "jobs", "frobnicate"}, &code);
  EXPECT_EQ(code, 2) << out;

  // dcb_jobs{queue,state}, from the node's poller within about a second.
  std::string text;
  for (int i = 0; i < 50; ++i) {
    // The exporter closes the connection after each answer.
    client m{node.metrics_port()};
    text = m.get("/metrics").body;
    if (sample(text, R"(dcb_jobs{queue="reports",state="available"})") == 1
        && sample(text, R"(dcb_jobs{queue="default",state="scheduled"})") == 1)
      break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(sample(text, R"(dcb_jobs{queue="reports",state="available"})"), 1)
    << text;
  EXPECT_EQ(sample(text, R"(dcb_jobs{queue="default",state="scheduled"})"), 1)
    << text;
  EXPECT_GE(sample(text, "dcb_jobs_enqueued_total"), 2) << text;

  // Every job this node enqueued counts once: through the jobs API (the
  // two above, not the duplicate), with an accepted append (three), and
  // by a trigger (one per matching event, two).
  out = run({"--url", url, "jobs", "triggers", "create", "t2", "--kind",
             "notify", "--types", "C", "--from", "0"},
            &code);
  EXPECT_EQ(code, 0) << out;
  client w{node.port()};
  json c_event{{"type", "C"}, {"tags", {"c:1"}}, {"data", "x"}};
  auto appended = w.post(
    "/v1/append",
    json{{"events", {c_event, c_event}},
         {"jobs", {{{"kind", "a"}}, {{"kind", "b"}}, {{"kind", "c"}}}}});
  ASSERT_EQ(appended.status, 200u) << appended.body;
  double enqueued = 0;
  for (int i = 0; i < 50 && enqueued < 7; ++i) {
    client m{node.metrics_port()};
    enqueued = sample(m.get("/metrics").body, "dcb_jobs_enqueued_total");
    if (enqueued < 7)
      std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(enqueued, 7);

  node.process().signal(SIGTERM);
  EXPECT_EQ(WEXITSTATUS(node.process().wait()), 0);
}

TEST_F(JobsNode, ABadJobFlagStopsTheNodeAtStart) {
  child_process p{{DCBD_BINARY, "--dcbd.jobs-poll-ms=soon"},
                  {{"DCB_POSTGRES_DSN", test_dsn()}}};
  auto status = p.wait();
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2) << p.output();
}

} // namespace
} // namespace dcbd::test
