// The route tables and the router's lookup (runtime/http_routes): which
// routes exist, their metrics labels, 404/405 decisions, HEAD on GET; that
// the label a request is counted under comes from the table; and patterned
// paths ("/v1/projectors/{name}"): decoded parameters, precedence, what
// matches no pattern, 405, and the pattern as the label.
#include "runtime/http_routes.hpp"

#include "runtime/http_server.hpp"
#include "runtime/metrics.hpp"
#include "tests/runtime/http_test_client.hpp"
#include "tests/runtime/transport_fixture.hpp"
#include "tests/support/engine_fixture.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace dcbd::test {
namespace {

using http::bhttp::verb;
using json = nlohmann::json;

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
    {"GET", "/read"},       {"POST", "/append"},      {"POST", "/v1/append"},
    {"GET", "/v1/read"},    {"GET", "/v1/head"},      {"GET", "/healthz"},
    {"GET", "/readyz"},     {"GET", "/v1/subscribe"}, {"GET", "/v1/ws"},
    {"GET", "/v1/cluster"}, {"GET", "/v1/stats"},     {"GET", "/ui"},
    {"GET", "/ui/"},        {"GET", "/ui/{file}"}};
  EXPECT_EQ(seen, expected);
  EXPECT_EQ(r.label_of("/nope"), "other");
  EXPECT_EQ(r.label_of("/read/"), "other");
  EXPECT_EQ(r.label_of(""), "other");
  // 404 answers name the API routes, in table order, not the probes.
  // (and the console's page, not its files).
  EXPECT_EQ(r.known(), "/read, /append, /v1/append, /v1/read, /v1/head, "
                       "/v1/subscribe, /v1/ws, /v1/cluster, /v1/stats, /ui");
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

// A subscription's sink holds its connection through a hub_hold, and
// http_server::stop destroys the transport once the hub is empty. So the
// connection must be gone before the slot is given back, whichever thread
// drops the last copy: with the slot first, a WebSocket outlived the
// transport it belongs to and crashed in its destructor.
TEST(SubscriptionHub, AHoldDropsItsConnectionBeforeItsSlot) {
  http::subscription_hub hub{1};
  auto token = hub.open();
  ASSERT_NE(token, 0u);
  // Stands for the connection; notes the slots in use when it goes.
  struct connection {
    http::subscription_hub& hub;
    std::size_t& in_use_when_gone;
    ~connection() {
      in_use_when_gone = hub.in_use();
    }
  };
  std::size_t in_use_when_gone = 99;
  auto hold = std::make_shared<http::hub_hold<std::shared_ptr<connection>>>(
    hub, token, std::make_shared<connection>(hub, in_use_when_gone));
  // Both callbacks of a sink share it.
  auto other = hold;
  hold.reset();
  EXPECT_EQ(hub.in_use(), 1u);
  EXPECT_FALSE(hub.wait_empty(std::chrono::milliseconds{0}));
  other.reset();
  EXPECT_EQ(in_use_when_gone, 1u) << "the slot went before the connection";
  EXPECT_EQ(hub.in_use(), 0u);
  EXPECT_TRUE(hub.wait_empty(std::chrono::milliseconds{0}));
}

TEST_F(Route, ExtensionTablesAreServedAfterTheBuiltInAreas) {
  http_config hc;
  hc.port = 0;
  http_extensions ext;
  hc.max_body = 12345;
  ext.routes.push_back([](http::route_env& env) {
    // Built with the server's own environment.
    auto max_body = env.cfg.max_body;
    return http::route_table{
      {"/v1/things/{id}", verb::get,
       [max_body](const std::shared_ptr<http::exchange>& x) {
         x->reply(200,
                  json{{"id", x->path_param("id")}, {"max_body", max_body}});
       }}};
  });
  http_server server{*engine_, metrics_, hc, ext};
  http_support::client c{server.port()};
  auto r = c.get("/v1/things/a%2Bb");
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.j(), (json{{"id", "a+b"}, {"max_body", 12345}}));
  EXPECT_EQ(c.get("/v1/head").status, 200u);
  r = c.get("/elsewhere");
  EXPECT_EQ(r.status, 404u);
  EXPECT_NE(r.body.find("/v1/cluster, /v1/stats, /ui, /v1/things/{id}"),
            std::string::npos)
    << r.body;
}

TEST_F(Route, BadExtensionTablesStopTheServerFromStarting) {
  http_config hc;
  hc.port = 0;
  http_extensions throws;
  throws.routes.push_back([](http::route_env&) -> http::route_table {
    throw std::runtime_error("no table today");
  });
  try {
    http_server server{*engine_, metrics_, hc, throws};
    ADD_FAILURE() << "a server started without its routes";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string{e.what()}.find("no table today"), std::string::npos)
      << e.what();
  }
  http_extensions malformed;
  malformed.routes.push_back([](http::route_env&) {
    return http::route_table{
      {"/v1/x/{id", verb::get, [](const std::shared_ptr<http::exchange>&) {}}};
  });
  EXPECT_THROW((http_server{*engine_, metrics_, hc, malformed}),
               std::invalid_argument);
  // Two patterns that differ only in their names.
  http_extensions clash;
  clash.routes.push_back([](http::route_env&) {
    return http::route_table{{"/v1/{a}/{b}", verb::get,
                              [](const std::shared_ptr<http::exchange>&) {}},
                             {"/v1/{x}/{y}", verb::get,
                              [](const std::shared_ptr<http::exchange>&) {}}};
  });
  EXPECT_THROW((http_server{*engine_, metrics_, hc, clash}),
               std::invalid_argument);
}

// -- patterned paths ----------------------------------------------------------

void nop(const std::shared_ptr<http::exchange>&) {
  // nop
}

// The projector routes to come, with an exact path among the patterns.
http::router projector_router() {
  return http::router{
    http::route_table{
      {"/v1/projectors/{name}/dead-letters/{position}/retry", verb::post, nop},
      {"/v1/projectors/{name}", verb::get, nop},
      {"/v1/projectors/{name}", verb::delete_, nop},
      {"/v1/projectors/{name}/pause", verb::post, nop},
      // After the pattern that also matches it: precedence is not table
      // order.
      {"/v1/projectors/stats", verb::get, nop},
      {"/v1/projectors", verb::get, nop},
    },
    nullptr, 1024};
}

TEST(RoutePattern, MatchesOneSegmentPerParameterAndDecodesIt) {
  auto r = projector_router();
  auto m = r.find("/v1/projectors/orders", verb::get);
  ASSERT_NE(m.found, nullptr);
  EXPECT_EQ(m.found->path, "/v1/projectors/{name}");
  EXPECT_EQ(m.params, (http::path_params{{"name", "orders"}}));
  m = r.find("/v1/projectors/orders/dead-letters/42/retry", verb::post);
  ASSERT_NE(m.found, nullptr);
  EXPECT_EQ(m.params,
            (http::path_params{{"name", "orders"}, {"position", "42"}}));
  // Percent-decoded; '+' is no space in a path.
  m = r.find("/v1/projectors/order%20book%2b1+2/pause", verb::post);
  ASSERT_NE(m.found, nullptr);
  EXPECT_EQ(m.params, (http::path_params{{"name", "order book+1+2"}}));
  // HEAD is served by a patterned GET route too.
  m = r.find("/v1/projectors/orders", verb::head);
  ASSERT_NE(m.found, nullptr);
  EXPECT_EQ(m.found->method, verb::get);
}

TEST(RoutePattern, SegmentsThatCannotBeParametersMatchNothing) {
  auto r = projector_router();
  for (auto path : {
         "/v1/projectors/a%2Fb",       // decodes to a '/'
         "/v1/projectors/a%2fb/pause", // so does lower-case hex
         "/v1/projectors/a%00b",       // decodes to NUL
         "/v1/projectors/%zz",         // malformed
         "/v1/projectors/ab%4",        // cut short
         "/v1/projectors/x/",          // trailing slash: an empty segment
         "/v1/projectors/",            // the same
         "/v1/projectors//pause",      // an empty segment
         "/v1/projectors/x/pause/",    // one segment too many
         "/v1/projectors/x/pause/now", // likewise
         "/v1/projectors/x/dead-letters//retry",
         "/v1/projectors/x/dead-letters/1/2/retry",
         "v1/projectors/x", // no leading slash
         "",
       }) {
    for (auto method : {verb::get, verb::post}) {
      auto m = r.find(path, method);
      EXPECT_EQ(m.found, nullptr) << path;
      EXPECT_EQ(m.allow, "") << path << " (404, not 405)";
      EXPECT_EQ(m.label, "other") << path;
    }
    EXPECT_EQ(r.label_of(path), "other") << path;
  }
}

TEST(RoutePattern, LabelIsThePatternNeverTheRawPath) {
  auto r = projector_router();
  EXPECT_EQ(r.label_of("/v1/projectors/x/pause"),
            "/v1/projectors/{name}/pause");
  EXPECT_EQ(r.label_of("/v1/projectors/y%20z/dead-letters/7/retry"),
            "/v1/projectors/{name}/dead-letters/{position}/retry");
  EXPECT_EQ(r.find("/v1/projectors/x/pause", verb::post).label,
            "/v1/projectors/{name}/pause");
  // A pattern as a request path matches itself: "{name}" is a segment.
  for (auto& route : r.routes())
    EXPECT_EQ(r.label_of(route.path), route.path);
  // 404 answers name the patterns as written, in table order.
  EXPECT_EQ(r.known(), "/v1/projectors/{name}/dead-letters/{position}/retry, "
                       "/v1/projectors/{name}, /v1/projectors/{name}/pause, "
                       "/v1/projectors/stats, /v1/projectors");
}

TEST(RoutePattern, WrongMethodOnAPatternedPathIs405WithItsMethods) {
  auto r = projector_router();
  auto m = r.find("/v1/projectors/x/pause", verb::get);
  EXPECT_EQ(m.found, nullptr);
  EXPECT_EQ(m.allow, "POST");
  EXPECT_EQ(m.label, "/v1/projectors/{name}/pause");
  m = r.find("/v1/projectors/x", verb::post);
  EXPECT_EQ(m.found, nullptr);
  EXPECT_EQ(m.allow, "GET, DELETE");
  EXPECT_TRUE(m.params.empty()) << "no parameters without a route";
}

TEST(RoutePattern, ExactPathsAndLiteralSegmentsTakePrecedence) {
  auto r = projector_router();
  auto m = r.find("/v1/projectors/stats", verb::get);
  ASSERT_NE(m.found, nullptr);
  EXPECT_EQ(m.found->path, "/v1/projectors/stats");
  EXPECT_TRUE(m.params.empty());
  // The exact path owns it: its methods decide, the pattern is not asked.
  m = r.find("/v1/projectors/stats", verb::delete_);
  EXPECT_EQ(m.found, nullptr);
  EXPECT_EQ(m.allow, "GET");
  EXPECT_EQ(m.label, "/v1/projectors/stats");
  // Among patterns, a literal beats a parameter at the first segment where
  // they differ, whatever the table order.
  http::router p{http::route_table{
                   {"/a/{x}/{y}", verb::get, nop},
                   {"/a/{x}/c", verb::get, nop},
                   {"/a/b/{y}", verb::get, nop},
                 },
                 nullptr, 1024};
  EXPECT_EQ(p.find("/a/b/c", verb::get).found->path, "/a/b/{y}");
  EXPECT_EQ(p.find("/a/z/c", verb::get).found->path, "/a/{x}/c");
  EXPECT_EQ(p.find("/a/z/z", verb::get).found->path, "/a/{x}/{y}");
  EXPECT_EQ(p.find("/a/b/c", verb::get).params,
            (http::path_params{{"y", "c"}}));
}

TEST(RoutePattern, MalformedOrAmbiguousPatternsAreRefused) {
  auto table = [](std::vector<std::string> paths) {
    http::route_table t;
    for (auto& p : paths)
      t.push_back({p, verb::get, nop});
    return http::router{std::move(t), nullptr, 1024};
  };
  for (auto bad : {"/a/{", "/a/}", "/a/x{y}", "/a/{y}x", "/a/{}", "/a/{{x}}",
                   "/a/{x}/{x}", "a/{x}"})
    EXPECT_THROW(table({bad}), std::invalid_argument) << bad;
  // Two names for the same paths.
  EXPECT_THROW(table({"/a/{x}", "/a/{y}"}), std::invalid_argument);
  // One pattern with several methods, and patterns that differ in a
  // literal, are fine.
  EXPECT_NO_THROW(table({"/a/{x}", "/a/{x}", "/b/{x}", "/a/{x}/c"}));
}

class RoutePatternServed : public TransportTest {};

TEST_F(RoutePatternServed, HandlersReadParamsAndRequestsCountUnderThePattern) {
  serve({
    {"/v1/projectors/{name}/dead-letters/{position}/retry", verb::post,
     [](const std::shared_ptr<http::exchange>& x) {
       x->reply(200, json{{"name", x->path_param("name")},
                          {"position", x->path_param("position")},
                          {"count", x->path_params().size()}});
     }},
    {"/v1/projectors/{name}/pause", verb::post,
     [](const std::shared_ptr<http::exchange>& x) {
       x->reply(200, json{{"name", x->path_param("name")}});
     }},
    {"/v1/projectors/{name}", verb::get,
     [](const std::shared_ptr<http::exchange>& x) {
       // A name the pattern lacks: a bug in the handler, answered 500.
       x->reply(200, json{{"name", x->path_param("nom")}});
     }},
  });
  http_support::client c{port()};
  auto r = c.post("/v1/projectors/order%20book/dead-letters/17/retry",
                  json::object());
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.j(),
            (json{{"name", "order book"}, {"position", "17"}, {"count", 2}}));
  r = c.post("/v1/projectors/a/pause?x=1", json::object());
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.j()["name"], "a") << "the query string is not part of it";
  r = c.get("/v1/projectors/a/pause");
  EXPECT_EQ(r.status, 405u);
  EXPECT_EQ(r.allow, "POST");
  r = c.post("/v1/projectors/a%2Fb/pause", json::object());
  EXPECT_EQ(r.status, 404u);
  r = c.get("/v1/projectors/a");
  EXPECT_EQ(r.status, 500u);
  EXPECT_EQ(r.j()["code"], "internal");
  auto text
    = prometheus::TextSerializer().Serialize(metrics_->registry()->Collect());
  auto count = [&](std::string code, std::string route) {
    return http_support::sample(text, "dcb_http_requests_total{code=\"" + code
                                        + "\",route=\"" + route + "\"}");
  };
  EXPECT_EQ(count("200", "/v1/projectors/{name}/dead-letters/{position}/retry"),
            1)
    << text;
  EXPECT_EQ(count("200", "/v1/projectors/{name}/pause"), 1) << text;
  EXPECT_EQ(count("405", "/v1/projectors/{name}/pause"), 1) << text;
  EXPECT_EQ(count("404", "other"), 1) << text;
  EXPECT_EQ(count("500", "/v1/projectors/{name}"), 1) << text;
  // No label per raw path.
  EXPECT_EQ(text.find(R"(route="/v1/projectors/order)"), std::string::npos)
    << text;
  EXPECT_EQ(text.find(R"(route="/v1/projectors/a)"), std::string::npos) << text;
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

// The stream slots' line: taken while free, then queued (first come first
// served, the slot passed on by release), refused past the line, and a
// waiter past its time told so at the next acquire or release.
TEST(StreamSlots, TakenQueuedRefusedAndExpired) {
  using outcome = http::stream_slots::outcome;
  http::stream_slots slots{1, nullptr, std::chrono::milliseconds{200}};
  std::vector<std::string> got;
  auto waiter = [&got](std::string name) {
    return [&got, name](bool granted) {
      got.push_back(name + (granted ? "+" : "-"));
    };
  };
  EXPECT_EQ(slots.acquire(waiter("a")), outcome::taken);
  EXPECT_EQ(slots.in_use(), 1u);
  for (int i = 0; i < 8; ++i)
    EXPECT_EQ(slots.acquire(waiter("w" + std::to_string(i))), outcome::queued);
  EXPECT_EQ(slots.waiting(), 8u);
  EXPECT_EQ(slots.acquire(waiter("x")), outcome::refused);
  EXPECT_TRUE(got.empty());
  // The slot passes to the first in line; the count stays.
  slots.release();
  EXPECT_EQ(got, (std::vector<std::string>{"w0+"}));
  EXPECT_EQ(slots.in_use(), 1u);
  EXPECT_EQ(slots.waiting(), 7u);
  slots.release();
  EXPECT_EQ(got.back(), "w1+");
  // Past their time, the rest are refused at the next release, which then
  // gives the slot back.
  std::this_thread::sleep_for(std::chrono::milliseconds{250});
  slots.release();
  EXPECT_EQ(got.size(), 8u);
  for (std::size_t i = 2; i < got.size(); ++i)
    EXPECT_EQ(got[i], "w" + std::to_string(i) + "-");
  EXPECT_EQ(slots.in_use(), 0u);
  EXPECT_EQ(slots.waiting(), 0u);
  EXPECT_EQ(slots.acquire(waiter("b")), outcome::taken);
  // A held slot goes back when its holder is destroyed.
  { http::stream_slot held{slots}; }
  EXPECT_EQ(slots.in_use(), 0u);
}

} // namespace
} // namespace dcbd::test
