// The web console (issue 15): a single page of plain HTML, CSS and
// JavaScript under runtime/ui/, embedded in the binary at build time
// (cmake/embed_assets.cmake, runtime/ui_assets.hpp) and served as it is:
//
//   GET /ui, /ui/          the page (runtime/ui/index.html)
//   GET /ui/{file}         its scripts and styles
//
// The page talks to the node through the public HTTP API only (API.md):
// it is also a living example of it. Every answer forbids loading anything
// from elsewhere (Content-Security-Policy: 'self' only), so the console works
// air-gapped and cannot be made to call out; a browser revalidates with the
// ETag (304) instead of keeping a stale console after an upgrade.
#include "runtime/http_routes.hpp"
#include "runtime/ui_assets.hpp"

#include <string>
#include <utility>
#include <vector>

namespace dcbd::http {

namespace {

constexpr const char* content_security_policy
  = "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'";

const ui_asset* find_asset(std::string_view name) {
  for (auto& a : ui_assets())
    if (a.name == name)
      return &a;
  return nullptr;
}

void serve(const std::shared_ptr<exchange>& x, const ui_asset& a) {
  std::vector<std::pair<std::string, std::string>> headers{
    {"ETag", std::string{a.etag}},
    {"Cache-Control", "no-cache"},
    {"Content-Security-Policy", content_security_policy},
    {"X-Content-Type-Options", "nosniff"},
    {"Referrer-Policy", "no-referrer"},
  };
  auto& req = x->req();
  if (auto it = req.find(bhttp::field::if_none_match); it != req.end()) {
    auto v = it->value();
    if (std::string_view{v.data(), v.size()} == a.etag)
      return x->reply_bytes(304, a.content_type, {}, headers);
  }
  x->reply_bytes(200, a.content_type, std::string{a.bytes}, headers);
}

handler page() {
  return [](const std::shared_ptr<exchange>& x) {
    auto a = find_asset("index.html");
    if (!a)
      return x->error(500, "internal", "the console was built without a page");
    serve(x, *a);
  };
}

} // namespace

route_table ui_routes(route_env&) {
  return {
    {"/ui", bhttp::verb::get, page()},
    {"/ui/", bhttp::verb::get, page(), false},
    {"/ui/{file}", bhttp::verb::get,
     [](const std::shared_ptr<exchange>& x) {
       auto& name = x->path_param("file");
       auto a = find_asset(name);
       if (!a)
         return x->error(404, "not_found",
                         "the console has no file \"" + name + "\"");
       serve(x, *a);
     },
     false},
  };
}

} // namespace dcbd::http
