// The route tables and the router's lookup (runtime/http_routes): which
// routes exist, their metrics labels, 404/405 decisions, HEAD on GET; and
// that the label a request is counted under comes from the table.
#include "runtime/http_routes.hpp"

#include "runtime/http_server.hpp"
#include "runtime/metrics.hpp"
#include "tests/runtime/http_test_client.hpp"
#include "tests/support/engine_fixture.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include <set>
#include <sstream>
#include <string>
#include <utility>

namespace dcbd::test {
namespace {

using http::bhttp::verb;

class Route : public EngineTest {
protected:
  void SetUp() override {
    EngineTest::SetUp();
    metrics_ = std::make_shared<node_metrics>();
    start();
    env_.emplace(http::route_env{*engine_, metrics_, cfg_, slots_, hub_});
  }

  void TearDown() override {
    env_.reset();
    EngineTest::TearDown();
  }

  // The tables as http_server assembles them.
  http::router all() {
    return http::router{http::all_routes(*env_), metrics_, cfg_.max_body};
  }

  http_config cfg_;
  std::shared_ptr<node_metrics> metrics_;
  http::stream_slots slots_{1, nullptr};
  http::subscription_hub hub_{1};
  std::optional<http::route_env> env_;
};

TEST_F(Route, TablesHoldEveryRouteOnceWithItsLabel) {
  auto r = all();
  std::set<std::pair<std::string, std::string>> seen;
  for (auto& route : r.routes()) {
    EXPECT_TRUE(route.fn) << route.path;
    EXPECT_TRUE(
      seen
        .emplace(std::string{http::bhttp::to_string(route.method)}, route.path)
        .second)
      << "duplicate " << route.path;
    // A route is counted under its own path.
    EXPECT_EQ(r.label_of(route.path), route.path);
  }
  std::set<std::pair<std::string, std::string>> expected{
    {"GET", "/read"},    {"POST", "/append"},      {"POST", "/v1/append"},
    {"GET", "/v1/read"}, {"GET", "/v1/head"},      {"GET", "/healthz"},
    {"GET", "/readyz"},  {"GET", "/v1/subscribe"}, {"GET", "/v1/ws"}};
  EXPECT_EQ(seen, expected);
  EXPECT_EQ(r.label_of("/nope"), "other");
  EXPECT_EQ(r.label_of("/read/"), "other");
  EXPECT_EQ(r.label_of(""), "other");
  // 404 answers name the API routes, in table order, not the probes.
  EXPECT_EQ(r.known(), "/read, /append, /v1/append, /v1/read, /v1/head, "
                       "/v1/subscribe, /v1/ws");
}

TEST_F(Route, LookupFindsMethodsAnswersHeadAndListsAllow) {
  auto r = all();
  auto get = r.find("/read", verb::get);
  ASSERT_NE(get.found, nullptr);
  EXPECT_EQ(get.found->path, "/read");
  auto head = r.find("/v1/head", verb::head);
  ASSERT_NE(head.found, nullptr) << "HEAD is served by the GET route";
  EXPECT_EQ(head.found->method, verb::get);
  EXPECT_EQ(r.find("/append", verb::head).found, nullptr);
  auto wrong = r.find("/append", verb::get);
  EXPECT_EQ(wrong.found, nullptr);
  EXPECT_EQ(wrong.allow, "POST");
  auto missing = r.find("/nope", verb::get);
  EXPECT_EQ(missing.found, nullptr);
  EXPECT_TRUE(missing.allow.empty());
  EXPECT_EQ(http::path_of("/read?query=x"), "/read");
  EXPECT_EQ(http::path_of("/v1/head"), "/v1/head");
}

TEST(RouteTable, PathsWithSeveralMethodsListThemAll) {
  http::route_table t{
    {"/things", verb::get, [](const auto&) {}},
    {"/things", verb::delete_, [](const auto&) {}},
    {"/probe", verb::get, [](const auto&) {}, false},
  };
  http::router r{std::move(t), nullptr, 1024};
  EXPECT_EQ(r.find("/things", verb::delete_).found->method, verb::delete_);
  EXPECT_EQ(r.find("/things", verb::post).allow, "GET, DELETE");
  EXPECT_EQ(r.known(), "/things");
}

using http_support::sample;

TEST_F(Route, EveryRouteIsCountedUnderItsTableLabel) {
  namespace net = boost::asio;
  namespace beast = boost::beast;
  http_config hc;
  hc.port = 0;
  http_server server{*engine_, metrics_, hc};
  net::io_context ioc;
  beast::tcp_stream s{ioc};
  s.connect({net::ip::make_address("127.0.0.1"), server.port()});
  beast::flat_buffer buf;
  auto call = [&](verb v, const std::string& target, std::string body = {}) {
    http::request req{v, target, 11};
    req.set(http::bhttp::field::host, "x");
    req.body() = std::move(body);
    req.prepare_payload();
    http::bhttp::write(s, req);
    http::response res;
    http::bhttp::read(s, buf, res);
    return res.result_int();
  };
  std::string events = R"({"events": [{"type": "A"}]})";
  EXPECT_EQ(call(verb::get, "/read"), 200u);
  EXPECT_EQ(call(verb::post, "/append", events), 200u);
  EXPECT_EQ(call(verb::post, "/v1/append", events), 200u);
  EXPECT_EQ(call(verb::get, "/v1/read"), 200u);
  EXPECT_EQ(call(verb::get, "/v1/head"), 200u);
  EXPECT_EQ(call(verb::get, "/healthz"), 200u);
  EXPECT_EQ(call(verb::get, "/readyz"), 200u);
  EXPECT_EQ(call(verb::put, "/v1/head"), 405u);
  EXPECT_EQ(call(verb::get, "/elsewhere"), 404u);
  auto text
    = prometheus::TextSerializer().Serialize(metrics_->registry()->Collect());
  for (auto route : {"/read", "/append", "/v1/append", "/v1/read", "/v1/head",
                     "/healthz", "/readyz"})
    EXPECT_EQ(
      sample(text, std::string{R"(dcb_http_requests_total{code="200",route=")"}
                     + route + "\"}"),
      1)
      << route << "\n"
      << text;
  EXPECT_EQ(
    sample(text, R"(dcb_http_requests_total{code="405",route="/v1/head"})"), 1);
  EXPECT_EQ(
    sample(text, R"(dcb_http_requests_total{code="404",route="other"})"), 1);
}

} // namespace
} // namespace dcbd::test
