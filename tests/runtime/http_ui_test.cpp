// The web console's routes (runtime/routes_ui.cpp) and the overview's
// numbers (runtime/routes_stats.cpp), over a real server and engine: the
// embedded files with their types, a policy that allows nothing from
// elsewhere, revalidation by ETag, clear 404s; /v1/stats counting what the
// node did. What the page does in a browser is tests/ui/console_test.mjs.
#include "runtime/http_server.hpp"
#include "runtime/metrics.hpp"
#include "runtime/ui_assets.hpp"
#include "tests/runtime/http_test_client.hpp"
#include "tests/support/engine_fixture.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <gtest/gtest.h>

#include <map>
#include <string>

namespace dcbd::test {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using json = nlohmann::json;

struct answer {
  unsigned status = 0;
  std::map<std::string, std::string> headers;
  std::string body;
};

class Console : public EngineTest {
protected:
  void SetUp() override {
    EngineTest::SetUp();
    metrics_ = std::make_shared<node_metrics>();
    start();
    http_config hc;
    hc.port = 0;
    server_.emplace(*engine_, metrics_, hc);
  }

  void TearDown() override {
    server_.reset();
    EngineTest::TearDown();
  }

  answer call(bhttp::verb verb, const std::string& target,
              std::map<std::string, std::string> headers = {},
              std::string body = {}) {
    net::io_context ioc;
    beast::tcp_stream s{ioc};
    s.connect({net::ip::make_address("127.0.0.1"), server_->port()});
    bhttp::request<bhttp::string_body> req{verb, target, 11};
    req.set(bhttp::field::host, "127.0.0.1");
    for (auto& [k, v] : headers)
      req.set(k, v);
    req.body() = std::move(body);
    req.prepare_payload();
    bhttp::write(s, req);
    beast::flat_buffer buf;
    bhttp::response_parser<bhttp::string_body> parser;
    if (verb == bhttp::verb::head)
      parser.skip(true);
    bhttp::read(s, buf, parser);
    auto& res = parser.get();
    answer a;
    a.status = res.result_int();
    for (auto& f : res)
      a.headers[std::string{f.name_string()}] = std::string{f.value()};
    a.body = res.body();
    return a;
  }

  answer get(const std::string& target,
             std::map<std::string, std::string> headers = {}) {
    return call(bhttp::verb::get, target, std::move(headers));
  }

  json stats() {
    auto a = get("/v1/stats");
    EXPECT_EQ(a.status, 200u) << a.body;
    return json::parse(a.body);
  }

  std::shared_ptr<node_metrics> metrics_;
  std::optional<http_server> server_;
};

TEST_F(Console, ThePageAndItsFilesAreServedWithTheirTypes) {
  auto page = get("/ui");
  ASSERT_EQ(page.status, 200u) << page.body;
  EXPECT_EQ(page.headers["Content-Type"], "text/html; charset=utf-8");
  // The page loads its script and style from the node, by absolute path,
  // so /ui and /ui/ work alike.
  EXPECT_NE(page.body.find("src=\"/ui/console.js\""), std::string::npos);
  EXPECT_NE(page.body.find("href=\"/ui/console.css\""), std::string::npos);
  EXPECT_EQ(get("/ui/").body, page.body);

  auto js = get("/ui/console.js");
  ASSERT_EQ(js.status, 200u);
  EXPECT_EQ(js.headers["Content-Type"], "text/javascript; charset=utf-8");
  auto css = get("/ui/console.css");
  ASSERT_EQ(css.status, 200u);
  EXPECT_EQ(css.headers["Content-Type"], "text/css; charset=utf-8");

  // Byte for byte what was embedded (binary-safe: the length is the file's).
  for (auto& asset : http::ui_assets()) {
    auto a = get("/ui/" + std::string{asset.name});
    EXPECT_EQ(a.body, asset.bytes) << asset.name;
    EXPECT_EQ(a.headers["Content-Length"], std::to_string(asset.bytes.size()));
  }

  // HEAD answers the length without the body.
  auto head = call(bhttp::verb::head, "/ui/console.js");
  EXPECT_EQ(head.status, 200u);
  EXPECT_EQ(head.headers["Content-Length"], std::to_string(js.body.size()));
  EXPECT_TRUE(head.body.empty());
}

TEST_F(Console, NothingMayBeLoadedFromElsewhere) {
  for (auto target : {"/ui", "/ui/console.js", "/ui/console.css"}) {
    auto a = get(target);
    auto& csp = a.headers["Content-Security-Policy"];
    EXPECT_NE(csp.find("default-src 'none'"), std::string::npos) << csp;
    EXPECT_NE(csp.find("script-src 'self'"), std::string::npos) << csp;
    EXPECT_NE(csp.find("connect-src 'self'"), std::string::npos) << csp;
    EXPECT_NE(csp.find("frame-ancestors 'none'"), std::string::npos) << csp;
    EXPECT_EQ(csp.find("http"), std::string::npos) << csp;
    EXPECT_EQ(a.headers["X-Content-Type-Options"], "nosniff");
  }
  // No file refers to another origin for anything it loads.
  for (auto& asset : http::ui_assets()) {
    std::string text{asset.bytes};
    for (auto ref : {"src=\"http", "href=\"http", "url(http", "import "})
      EXPECT_EQ(text.find(ref), std::string::npos) << asset.name << ": " << ref;
  }
}

TEST_F(Console, ABrowserRevalidatesWithTheETag) {
  auto first = get("/ui/console.js");
  ASSERT_EQ(first.status, 200u);
  auto etag = first.headers["ETag"];
  ASSERT_GE(etag.size(), 3u);
  EXPECT_EQ(etag.front(), '"');
  EXPECT_EQ(first.headers["Cache-Control"], "no-cache");
  auto again = get("/ui/console.js", {{"If-None-Match", etag}});
  EXPECT_EQ(again.status, 304u);
  EXPECT_TRUE(again.body.empty());
  EXPECT_EQ(again.headers["ETag"], etag);
  // Another version (an upgraded node) sends the file again.
  EXPECT_EQ(get("/ui/console.js", {{"If-None-Match", "\"old\""}}).status, 200u);
  // Each file has its own tag.
  EXPECT_NE(get("/ui/console.css").headers["ETag"], etag);
}

TEST_F(Console, UnknownFilesAndOtherMethodsAreClearErrors) {
  auto missing = get("/ui/nope.js");
  EXPECT_EQ(missing.status, 404u);
  auto j = json::parse(missing.body);
  EXPECT_EQ(j["code"], "not_found");
  EXPECT_NE(j["message"].get<std::string>().find("nope.js"), std::string::npos);
  // Paths do not walk out of the console's files.
  EXPECT_EQ(get("/ui/..%2Fconsole.js").status, 404u);
  EXPECT_EQ(get("/ui/sub/console.js").status, 404u);
  auto post = call(bhttp::verb::post, "/ui", {}, "x");
  EXPECT_EQ(post.status, 405u);
  EXPECT_EQ(post.headers["Allow"], "GET");
}

TEST_F(Console, StatsCountWhatTheNodeDid) {
  auto before = stats();
  for (auto key :
       {"node", "head", "uptime_ms", "time_ms", "appends", "events_appended",
        "reads", "events_read", "subscriptions", "deliveries", "fell_behind",
        "open_streams", "jobs_enqueued"})
    EXPECT_TRUE(before.contains(key)) << key << " " << before.dump();
  for (auto result :
       {"ok", "conflict", "invalid", "overloaded", "unavailable", "internal"})
    EXPECT_TRUE(before["appends"].contains(result)) << result;

  http_support::client c{server_->port()};
  auto ok = c.post(
    "/v1/append",
    json{{"events", json::array({json{{"type", "A"}}, json{{"type", "B"}}})}});
  ASSERT_EQ(ok.status, 200u) << ok.body;
  // A failed condition counts as a conflict, not as ok.
  json cond{{"failIfEventsMatch", json{{"items", json::array()}}},
            {"after", 0}};
  auto conflict = c.post("/v1/append",
                         json{{"events", json::array({json{{"type", "C"}}})},
                              {"condition", cond}});
  ASSERT_EQ(conflict.status, 409u) << conflict.body;
  ASSERT_EQ(c.get("/v1/read").status, 200u);

  auto after = stats();
  EXPECT_EQ(after["appends"]["ok"].get<std::uint64_t>(),
            before["appends"]["ok"].get<std::uint64_t>() + 1);
  EXPECT_EQ(after["appends"]["conflict"].get<std::uint64_t>(),
            before["appends"]["conflict"].get<std::uint64_t>() + 1);
  EXPECT_GT(after["reads"].get<std::uint64_t>(),
            before["reads"].get<std::uint64_t>());
  // A monotonic clock: rates are counter differences over its difference.
  EXPECT_GE(after["time_ms"].get<std::int64_t>(),
            before["time_ms"].get<std::int64_t>());
  EXPECT_GE(after["uptime_ms"].get<std::int64_t>(),
            before["uptime_ms"].get<std::int64_t>());
}

} // namespace
} // namespace dcbd::test
