// The node as a library (runtime/node.hpp): a program that embeds it
// (tests/runtime/embedded_node.cpp) serves its own routes and metrics beside
// the built-in ones, reads its own options, stops its actors in stop hooks
// after the HTTP server and before the engine, stops itself with an exit
// code, and fails with exit code 2 when its setup or its routes are bad;
// dcbd names itself after DCB_NODE_NAME or its host and pid.
#include "tests/runtime/http_test_client.hpp"
#include "tests/runtime/node_process.hpp"

#include <fstream>
#include <sstream>

#ifndef EMBEDDED_NODE_BINARY
#  error "EMBEDDED_NODE_BINARY must name the embedding test program"
#endif

namespace dcbd::test {
namespace {

using namespace http_support;

std::string slurp(const std::string& path) {
  std::ifstream in{path};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Where `line` starts in `text`, or npos.
std::size_t line_at(const std::string& text, const std::string& line) {
  auto at = text.find(line);
  return at == std::string::npos || at == 0 || text[at - 1] == '\n'
           ? at
           : std::string::npos;
}

// The exit code of a child that exited (-1 if a signal ended it).
int exit_code(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class NodeEmbedding : public PgSchemaTest {
protected:
  // The embedding program on this test's schema, named "emb-1".
  std::unique_ptr<node_process> start(std::vector<std::string> args = {}) {
    return std::make_unique<node_process>(
      schema_, std::move(args), 0,
      std::vector<std::pair<std::string, std::string>>{
        {"DCB_NODE_NAME", "emb-1"}},
      EMBEDDED_NODE_BINARY);
  }

  // Runs the embedding program until it exits by itself; its exit code
  // and its output (stdout and stderr).
  std::pair<int, std::string> run_to_exit(std::vector<std::string> args) {
    auto log = "/tmp/dcbd-embedded-" + std::to_string(::getpid()) + ".log";
    std::vector<std::string> argv{EMBEDDED_NODE_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    child_process p{
      std::move(argv),
      {{"DCB_POSTGRES_DSN", test_dsn()},
       {"DCB_SCHEMA", schema_},
       {"DCB_HTTP_ADDR", "127.0.0.1:" + std::to_string(free_tcp_port())},
       {"DCB_METRICS_ADDR", "127.0.0.1:" + std::to_string(free_tcp_port())}},
      log};
    auto status = p.wait();
    auto out = slurp(log);
    std::remove(log.c_str());
    return {exit_code(status), out};
  }
};

TEST_F(NodeEmbedding, ServesItsRoutesAndMetricsAndStopsItsActorsFirst) {
  auto n = start({"--embedded.greeting=hi"});
  ASSERT_TRUE(n->up()) << slurp(n->log());
  client c{n->port()};
  auto r = c.get("/v1/hello/new%20world");
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(
    r.j(),
    (json{{"greeting", "hi"}, {"name", "new world"}, {"node", "emb-1"}}));
  // The built-in API is all there, and 404 names the added routes too.
  EXPECT_EQ(c.get("/v1/head").j(), (json{{"head", 0}}));
  r = c.get("/v1/nope");
  EXPECT_EQ(r.status, 404u);
  // The added routes come after the built-in ones (the last built-in
  // path, then the added ones).
  EXPECT_NE(r.body.find("/v1/queues, /v1/cluster, /v1/commands, "
                        "/v1/commands/{name}, /v1/stats, /ui, "
                        "/v1/hello/{name}, /v1/stop/{code}\""),
            std::string::npos)
    << r.body;
  EXPECT_EQ(c.get("/v1/hello/x/y").status, 404u);
  // The worker setup added runs the node's jobs of its kind.
  auto job = c.post("/v1/jobs", json{{"kind", "embedded_echo"}});
  ASSERT_EQ(job.status, 201u) << job.body;
  auto job_path = "/v1/jobs/" + std::to_string(job.j()["id"].get<long>());
  std::string state;
  for (int i = 0; i < 100 && state != "completed"; ++i) {
    state = c.get(job_path).j()["state"].get<std::string>();
    if (state != "completed")
      std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(state, "completed");
  client scraper{n->metrics_port()};
  auto m = scraper.get("/metrics");
  ASSERT_EQ(m.status, 200u);
  EXPECT_EQ(sample(m.body, "embedded_hellos_total"), 1) << m.body;
  EXPECT_EQ(
    sample(m.body,
           R"(dcb_http_requests_total{code="200",route="/v1/hello/{name}"})"),
    1)
    << m.body;

  n->process().signal(SIGTERM);
  EXPECT_EQ(exit_code(n->process().wait()), 0);
  auto out = slurp(n->log());
  EXPECT_EQ(line_at(out, "dcbd: node emb-1, schema " + schema_ + ", readers "),
            0u)
    << out;
  auto setup = line_at(out, "embedded: setup done for emb-1 on schema "
                              + schema_ + ", API port "
                              + std::to_string(n->port()) + "\n");
  auto api = line_at(out, "dcbd: API on http://");
  auto term = line_at(out, "dcbd: SIGTERM: stopping");
  auto actor = line_at(out, "embedded: actor hook\n");
  // Last registered, first run; the engine answers in the hooks.
  auto engine = line_at(out, "embedded: engine hook, head 0\n");
  auto stopped = line_at(out, "dcbd: stopped\n");
  for (auto at : {setup, api, term, actor, engine, stopped})
    ASSERT_NE(at, std::string::npos) << out;
  EXPECT_LT(setup, api) << out;
  EXPECT_LT(api, term) << out;
  EXPECT_LT(term, actor) << out;
  EXPECT_LT(actor, engine) << out;
  EXPECT_LT(engine, stopped) << out;
  std::remove(n->log().c_str());
}

// Commands the program registered run over HTTP: outcomes as the C++ API
// gives them, bad input refused before anything runs, and the rule holds
// under concurrent clients.
TEST_F(NodeEmbedding, RunsItsCommandsForHttpClients) {
  auto n = start();
  ASSERT_TRUE(n->up()) << slurp(n->log());
  client c{n->port()};
  auto r = c.get("/v1/commands");
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.j(),
            (json{{{"name", "claim"}, {"description", "claims a name once"}},
                  {{"name", "explode"}, {"description", ""}}}));
  r = c.post("/v1/commands/claim", json{{"name", "ann"}});
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.j(), (json{{"accepted", true},
                         {"first_position", 1},
                         {"last_position", 1},
                         {"attempts", 1}}));
  r = c.post("/v1/commands/claim", json{{"name", "ann"}});
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.j(), (json{{"accepted", false},
                         {"rejection", "name 'ann' is taken"},
                         {"attempts", 1}}));
  // Refused before anything runs: nothing is appended.
  auto refused = [&](const std::string& target, const std::string& body,
                     unsigned status, const std::string& code,
                     const std::string& part) {
    auto x = c.send(bhttp::verb::post, target, body);
    EXPECT_EQ(x.status, status) << target << " " << body << ": " << x.body;
    if (x.status != status)
      return;
    EXPECT_EQ(x.j()["code"], code) << x.body;
    EXPECT_NE(x.j()["message"].get<std::string>().find(part), std::string::npos)
      << x.body;
  };
  refused("/v1/commands/claim", "", 400, "invalid_argument",
          "command 'claim': \"name\" must be a non-empty string");
  refused("/v1/commands/claim", R"({"name": 7})", 400, "invalid_argument",
          "\"name\" must be a non-empty string");
  refused("/v1/commands/claim", "[1]", 400, "invalid_argument",
          "must be a JSON object of arguments");
  refused("/v1/commands/claim", "{", 400, "invalid_argument", "");
  refused("/v1/commands/nope", "{}", 404, "not_found", "no command 'nope'");
  refused("/v1/commands/explode", "{}", 500, "internal",
          "command 'explode': decide() threw: boom");
  EXPECT_EQ(c.get("/v1/commands/claim").status, 405u);
  EXPECT_EQ(c.get("/v1/head").j(), (json{{"head", 1}}));
  // 16 clients claim one name at once: exactly one wins.
  constexpr int clients = 16;
  std::vector<std::thread> threads;
  std::vector<reply> replies(clients);
  for (int i = 0; i < clients; ++i)
    threads.emplace_back([&, i] {
      client mine{n->port()};
      replies[i] = mine.post("/v1/commands/claim", json{{"name", "bob"}});
    });
  for (auto& t : threads)
    t.join();
  int won = 0;
  for (auto& x : replies) {
    ASSERT_EQ(x.status, 200u) << x.body;
    if (x.j()["accepted"].get<bool>())
      ++won;
    else
      EXPECT_EQ(x.j()["rejection"], "name 'bob' is taken");
  }
  EXPECT_EQ(won, 1);
  EXPECT_EQ(exec_sql("SELECT count(*) FROM " + schema_
                     + ".events WHERE 'name:bob' = ANY(tags)"),
            "1");
  client scraper{n->metrics_port()};
  auto m = scraper.get("/metrics");
  EXPECT_EQ(
    sample(
      m.body,
      R"(dcb_http_requests_total{code="200",route="/v1/commands/{name}"})"),
    2 + clients)
    << m.body;
}

TEST_F(NodeEmbedding, StopFromInsideIsGracefulAndReturnsItsCode) {
  auto n = start();
  ASSERT_TRUE(n->up()) << slurp(n->log());
  client c{n->port()};
  EXPECT_EQ(c.post("/v1/stop/3", json::object()).status, 202u);
  EXPECT_EQ(exit_code(n->process().wait()), 3);
  auto out = slurp(n->log());
  auto requested
    = line_at(out, "dcbd: stop requested: stopping (answering requests in "
                   "flight)\n");
  auto engine = line_at(out, "embedded: engine hook, head 0\n");
  ASSERT_NE(requested, std::string::npos) << out;
  ASSERT_NE(engine, std::string::npos) << out;
  EXPECT_LT(requested, engine);
  EXPECT_NE(line_at(out, "dcbd: stopped\n"), std::string::npos) << out;
  std::remove(n->log().c_str());
}

TEST_F(NodeEmbedding, FailedSetupExitsTwoAfterRunningItsHooks) {
  auto [code, out] = run_to_exit({"--embedded.fail-setup"});
  EXPECT_EQ(code, 2) << out;
  auto hook = line_at(out, "embedded: hook of a failed setup\n");
  auto failed = line_at(out, "dcbd: setup failed: no projectors today\n");
  ASSERT_NE(hook, std::string::npos) << out;
  ASSERT_NE(failed, std::string::npos) << out;
  EXPECT_EQ(out.find("dcbd: API on"), std::string::npos) << out;
}

TEST_F(NodeEmbedding, MalformedRouteExitsTwoBeforeServing) {
  auto [code, out] = run_to_exit({"--embedded.bad-route"});
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(line_at(out, "dcbd: bad routes: route /v1/x/{: "),
            std::string::npos)
    << out;
  EXPECT_EQ(out.find("dcbd: API on"), std::string::npos) << out;
  // Its actor was stopped by its hook, or the process would not have ended.
  EXPECT_NE(line_at(out, "embedded: actor hook\n"), std::string::npos) << out;
}

TEST_F(NodeEmbedding, HelpListsTheEmbeddersOptionsBesideDcbds) {
  auto [code, out] = run_to_exit({"--long-help"});
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("embedded.greeting"), std::string::npos) << out;
  EXPECT_NE(out.find("dcbd.max-subscriptions"), std::string::npos) << out;
  EXPECT_EQ(out.find("dcbd: node"), std::string::npos) << out;
}

TEST_F(NodeEmbedding, DcbdIsNamedAfterItsHostAndPidByDefault) {
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
  node_process n{schema_};
  ASSERT_TRUE(n.up()) << slurp(n.log());
  auto expected = "dcbd: node " + std::string{host} + "-"
                  + std::to_string(n.process().pid()) + ", schema " + schema_
                  + ", ";
  EXPECT_EQ(line_at(slurp(n.log()), expected), 0u) << slurp(n.log());
  node_process named{schema_, {}, 0, {{"DCB_NODE_NAME", "blue"}}};
  ASSERT_TRUE(named.up()) << slurp(named.log());
  EXPECT_EQ(line_at(slurp(named.log()), "dcbd: node blue, schema "), 0u)
    << slurp(named.log());
  std::remove(n.log().c_str());
  std::remove(named.log().c_str());
}

} // namespace
} // namespace dcbd::test
