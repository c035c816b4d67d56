#include "runtime/http_routes.hpp"

#include "actors/engine.hpp"
#include "runtime/json_api.hpp"
#include "runtime/metrics.hpp"
#include "runtime/wire_codec.hpp"

#include <algorithm>
#include <iostream>
#include <stdexcept>
#include <utility>

namespace dcbd::http {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

// Decodes %XX and '+' of a URL query component.
std::string url_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0
               && hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else if (s[i] == '%') {
      throw store_error(errc::invalid_argument,
                        "the URL has a malformed percent-encoding");
    } else {
      out += s[i];
    }
  }
  return out;
}

// Whether `raw`, one path segment, can be a path parameter: not empty, and
// percent-decoding it works and yields neither '/' nor NUL. Allocates
// nothing: it runs for every candidate pattern.
bool valid_param(std::string_view raw) {
  if (raw.empty())
    return false;
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '\0')
      return false;
    if (raw[i] != '%')
      continue;
    if (i + 2 >= raw.size() || hex_value(raw[i + 1]) < 0
        || hex_value(raw[i + 2]) < 0)
      return false;
    auto c = hex_value(raw[i + 1]) * 16 + hex_value(raw[i + 2]);
    if (c == '/' || c == 0)
      return false;
    i += 2;
  }
  return true;
}

// Decodes %XX of a path segment that passed `valid_param` ('+' is no space
// in a path).
std::string decode_param(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '%') {
      out += static_cast<char>(hex_value(raw[i + 1]) * 16
                               + hex_value(raw[i + 2]));
      i += 2;
    } else {
      out += raw[i];
    }
  }
  return out;
}

// Calls `f(index, segment)` for each segment of `path` after its leading
// '/' while `f` returns true; returns the number of segments visited, or
// npos when `f` stopped early or `path` has no leading '/'.
template <class F>
std::size_t for_each_segment(std::string_view path, F f) {
  if (path.empty() || path.front() != '/')
    return std::string_view::npos;
  path.remove_prefix(1);
  for (std::size_t i = 0;; ++i) {
    auto slash = path.find('/');
    if (!f(i, path.substr(0, slash)))
      return std::string_view::npos;
    if (slash == std::string_view::npos)
      return i + 1;
    path.remove_prefix(slash + 1);
  }
}

bool has_type(const request& req, bhttp::field f, std::string_view type) {
  auto v = req[f];
  return std::string_view{v.data(), v.size()}.find(type)
         != std::string_view::npos;
}

} // namespace

unsigned status_of(errc code) {
  switch (code) {
    case errc::none:
      return 200;
    case errc::invalid_argument:
      return 400;
    case errc::append_condition_failed:
      return 409;
    case errc::overloaded:
    case errc::unavailable:
      return 503;
    case errc::internal:
      return 500;
  }
  return 500;
}

std::string_view path_of(std::string_view target) {
  return target.substr(0, target.find('?'));
}

// -- exchange -----------------------------------------------------------------

exchange::exchange(responder r, std::shared_ptr<node_metrics> metrics,
                   std::string route, std::size_t max_body, bool negotiate)
  : r_(std::move(r))
  , metrics_(std::move(metrics))
  , route_(std::move(route))
  , max_body_(max_body) {
  auto target = r_.req().target();
  auto q = std::string_view{target.data(), target.size()}.find('?');
  if (q != std::string_view::npos)
    query_string_ = std::string{target.substr(q + 1)};
  msgpack_out_ = negotiate
                 && has_type(r_.req(), bhttp::field::accept, msgpack_type);
}

exchange::~exchange() {
  if (answered_)
    return;
  try {
    error(500, "internal", "the handler gave no answer");
  } catch (const std::exception& e) {
    std::cerr << "dcbd http: " << route_ << ": " << e.what() << std::endl;
  }
}

bool exchange::claim() {
  if (!answered_.exchange(true))
    return true;
  std::cerr << "dcbd http: a second answer on " << route_ << " was dropped"
            << std::endl;
  return false;
}

const std::string& exchange::path_param(std::string_view name) const {
  for (auto& [key, value] : path_params_)
    if (key == name)
      return value;
  throw store_error(errc::internal, "the route " + route_
                                      + " has no path parameter {"
                                      + std::string{name} + "}");
}

std::optional<std::string> exchange::parameter(std::string_view key) const {
  std::string_view qs = query_string_;
  while (!qs.empty()) {
    auto amp = qs.find('&');
    auto pair = qs.substr(0, amp);
    auto eq = pair.find('=');
    if (url_decode(pair.substr(0, eq)) == key) {
      auto value = url_decode(eq == std::string_view::npos
                                ? std::string_view{}
                                : pair.substr(eq + 1));
      if (value.empty())
        return std::nullopt;
      return value;
    }
    if (amp == std::string_view::npos)
      break;
    qs.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

json exchange::body() const {
  if (has_type(req(), bhttp::field::content_type, msgpack_type))
    return from_msgpack(req().body(), "body", max_body_);
  return parse_json(req().body(), "body");
}

std::string exchange::line(const json& j) const {
  if (msgpack_out_)
    return to_msgpack(j);
  return dump(j) + "\n";
}

void exchange::reply(unsigned status, const json& body,
                     const std::string& allow) {
  if (!claim())
    return;
  response res{static_cast<bhttp::status>(status), 11};
  if (msgpack_out_) {
    res.set(bhttp::field::content_type, msgpack_type);
    res.body() = to_msgpack(body);
  } else {
    res.set(bhttp::field::content_type, json_type);
    res.body() = dump(body);
  }
  if (!allow.empty())
    res.set(bhttp::field::allow, allow);
  if (status == 503)
    res.set(bhttp::field::retry_after, "1");
  // Counted before the client can see the answer.
  count(status);
  r_.respond(std::move(res));
}

void exchange::reply_bytes(
  unsigned status, std::string_view content_type, std::string body,
  const std::vector<std::pair<std::string, std::string>>& headers) {
  if (!claim())
    return;
  response res{static_cast<bhttp::status>(status), 11};
  res.set(bhttp::field::content_type,
          boost::beast::string_view{content_type.data(), content_type.size()});
  for (auto& [name, value] : headers)
    res.set(name, value);
  res.body() = std::move(body);
  count(status);
  r_.respond(std::move(res));
}

void exchange::error(unsigned status, std::string code, std::string message,
                     const std::string& allow) {
  reply(status, json{{"code", std::move(code)}, {"message", message}}, allow);
}

void exchange::fail(errc code, std::string message) {
  error(status_of(code), std::string{to_string(code)}, std::move(message));
}

void exchange::fail(const caf::error& err) {
  fail(code_of(err), message_of(err));
}

void exchange::on_strand(std::function<void()> f) {
  r_.post([self = shared_from_this(), f = std::move(f)] {
    try {
      f();
    } catch (const store_error& e) {
      self->fail(e.code(), e.what());
    } catch (const std::exception& e) {
      self->fail(errc::internal, e.what());
    }
  });
}

void exchange::set_deadline(std::chrono::milliseconds after,
                            std::function<void()> on_expiry) {
  r_.set_deadline(after, [self = shared_from_this(), f = std::move(on_expiry)] {
    try {
      f();
    } catch (const store_error& e) {
      self->fail(e.code(), e.what());
    } catch (const std::exception& e) {
      self->fail(errc::internal, e.what());
    }
  });
}

std::shared_ptr<chunk_writer> exchange::open_stream(
  std::string_view content_type,
  const std::vector<std::pair<std::string, std::string>>& headers) {
  answered_ = true;
  response_head head{bhttp::status::ok, 11};
  head.set(bhttp::field::content_type, std::string{content_type});
  for (auto& [field, value] : headers)
    head.set(field, value);
  return r_.respond_chunked(std::move(head));
}

std::shared_ptr<websocket> exchange::upgrade(websocket_handlers h) {
  if (!r_.is_websocket_upgrade()) {
    error(400, std::string{to_string(errc::invalid_argument)},
          "expected a WebSocket upgrade request (GET, HTTP/1.1, "
          "Connection: Upgrade, Upgrade: websocket)");
    return nullptr;
  }
  if (!claim())
    return nullptr;
  // Counted before the client can see the answer.
  count(101);
  return r_.accept_websocket(std::move(h));
}

void exchange::count(unsigned status) {
  if (metrics_)
    metrics_->http_finished(route_, status, clock::now() - r_.started());
}

// -- stream slots -------------------------------------------------------------

stream_slots::stream_slots(std::size_t max,
                           std::shared_ptr<node_metrics> metrics,
                           std::chrono::milliseconds max_wait)
  : max_(max)
  , metrics_(std::move(metrics))
  , max_wait_(max_wait) {
  // nop
}

void stream_slots::expire_locked(clock::time_point now,
                                 std::vector<grant>& out) {
  while (!line_.empty() && line_.front().deadline <= now) {
    out.push_back(std::move(line_.front().g));
    line_.pop_front();
  }
}

stream_slots::outcome stream_slots::acquire(grant g) {
  std::vector<grant> expired;
  auto result = outcome::queued;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    auto now = clock::now();
    expire_locked(now, expired);
    if (used_ < max_) {
      ++used_;
      result = outcome::taken;
    } else if (line_.size() >= max_waiting()) {
      result = outcome::refused;
    } else {
      line_.push_back({std::move(g), now + max_wait_});
    }
  }
  for (auto& e : expired)
    e(false);
  if (result == outcome::taken && metrics_)
    metrics_->open_streams().Increment();
  return result;
}

void stream_slots::release() {
  std::vector<grant> expired;
  grant next;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    expire_locked(clock::now(), expired);
    if (!line_.empty()) {
      // The slot passes on: `used_` and the gauge stay.
      next = std::move(line_.front().g);
      line_.pop_front();
    } else if (used_ > 0) {
      --used_;
    }
  }
  for (auto& e : expired)
    e(false);
  if (next)
    next(true);
  else if (metrics_)
    metrics_->open_streams().Decrement();
}

std::size_t stream_slots::in_use() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return used_;
}

std::size_t stream_slots::waiting() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return line_.size();
}

namespace {

void refuse_stream(const stream_slots& slots, exchange& x) {
  x.error(503, "overloaded",
          "too many streaming reads (" + std::to_string(slots.max())
            + " running, up to " + std::to_string(slots.max_waiting())
            + " waiting); retry later");
}

} // namespace

void with_stream_slot(stream_slots& slots, const std::shared_ptr<exchange>& x,
                      std::function<void(std::shared_ptr<stream_slot>)> start) {
  auto r = slots.acquire([&slots, x, start](bool granted) {
    // On the thread of the release that handed the slot over: hold it
    // before anything else, so that it goes back whatever happens next.
    auto slot = granted ? std::make_shared<stream_slot>(slots) : nullptr;
    x->on_strand([&slots, x, start, slot] {
      // Answered already: the wait timed out (the slot goes back here).
      if (x->answered())
        return;
      if (!slot)
        return refuse_stream(slots, *x);
      start(slot);
    });
  });
  switch (r) {
    case stream_slots::outcome::taken:
      return start(std::make_shared<stream_slot>(slots));
    case stream_slots::outcome::refused:
      return refuse_stream(slots, *x);
    case stream_slots::outcome::queued:
      // Without this timer a waiter past its time would only learn it at
      // the next acquire or release.
      return x->set_deadline(slots.max_wait(), [&slots, x] {
        refuse_stream(slots, *x);
      });
  }
}

// -- subscription hub ---------------------------------------------------------

subscription_hub::subscription_hub(std::size_t max) : max_(max) {
  // nop
}

std::uint64_t subscription_hub::open() {
  std::lock_guard guard{mtx_};
  if (closing_ || open_.size() - let_go_.size() >= max_)
    return 0;
  auto token = next_++;
  open_.emplace(token, nullptr);
  return token;
}

void subscription_hub::arm(std::uint64_t token, std::function<void()> close) {
  {
    std::lock_guard guard{mtx_};
    auto i = open_.find(token);
    if (i == open_.end())
      return;
    if (!closing_) {
      i->second = std::move(close);
      return;
    }
  }
  close();
}

void subscription_hub::release(std::uint64_t token) {
  std::lock_guard guard{mtx_};
  open_.erase(token);
  let_go_.erase(token);
  cv_.notify_all();
}

void subscription_hub::let_go(std::uint64_t token) {
  std::lock_guard guard{mtx_};
  if (open_.count(token) > 0)
    let_go_.insert(token);
}

void subscription_hub::close_all() {
  std::vector<std::function<void()>> all;
  {
    std::lock_guard guard{mtx_};
    closing_ = true;
    for (auto& [token, close] : open_)
      if (close)
        all.push_back(close);
  }
  for (auto& close : all) {
    try {
      close();
    } catch (const std::exception& e) {
      std::cerr << "dcbd http: closing a subscription: " << e.what()
                << std::endl;
    }
  }
}

bool subscription_hub::wait_empty(std::chrono::milliseconds d) {
  std::unique_lock guard{mtx_};
  return cv_.wait_for(guard, d, [this] {
    return open_.empty();
  });
}

bool subscription_hub::closing() const {
  std::lock_guard guard{mtx_};
  return closing_;
}

std::size_t subscription_hub::in_use() const {
  std::lock_guard guard{mtx_};
  return open_.size();
}

// -- router -------------------------------------------------------------------

router::router(route_table routes, std::shared_ptr<node_metrics> metrics,
               std::size_t max_body)
  : routes_(std::move(routes))
  , metrics_(std::move(metrics))
  , max_body_(max_body) {
  for (std::size_t i = 0; i < routes_.size(); ++i) {
    auto& path = routes_[i].path;
    auto patterned = path.find_first_of("{}") != std::string::npos;
    auto& entries = patterned ? patterns_ : exact_;
    auto e = std::find_if(entries.begin(), entries.end(), [&](auto& x) {
      return x.path == path;
    });
    if (e != entries.end()) {
      e->routes.push_back(i);
      continue;
    }
    path_entry entry{path, {i}, {}};
    if (patterned) {
      auto bad = [&](const std::string& why) {
        return std::invalid_argument("route " + path + ": " + why);
      };
      auto n = for_each_segment(path, [&](std::size_t, std::string_view s) {
        auto braces = s.find_first_of("{}") != std::string_view::npos;
        if (!braces) {
          entry.segments.push_back({std::string{s}, false});
          return true;
        }
        auto name = s.size() > 2 ? s.substr(1, s.size() - 2) : "";
        if (s.front() != '{' || s.back() != '}' || name.empty()
            || name.find_first_of("{}") != std::string_view::npos)
          throw bad("a segment with '{' or '}' must be a whole {name}");
        for (auto& seen : entry.segments)
          if (seen.param && seen.text == name)
            throw bad("{" + std::string{name} + "} appears twice");
        entry.segments.push_back({std::string{name}, true});
        return true;
      });
      if (n == std::string_view::npos)
        throw bad("a path must start with '/'");
      // Patterns that differ only in their names match the same paths.
      for (auto& other : patterns_) {
        auto same = std::equal(other.segments.begin(), other.segments.end(),
                               entry.segments.begin(), entry.segments.end(),
                               [](const segment& a, const segment& b) {
                                 return a.param == b.param
                                        && (a.param || a.text == b.text);
                               });
        if (same)
          throw bad("matches the same paths as " + other.path);
      }
    }
    entries.push_back(std::move(entry));
  }
  // Most specific first: two patterns that match one path have as many
  // segments, and at the first segment where one has a literal and the
  // other a parameter, the literal one wins. Otherwise table order.
  std::stable_sort(patterns_.begin(), patterns_.end(),
                   [](const path_entry& a, const path_entry& b) {
                     if (a.segments.size() != b.segments.size())
                       return a.segments.size() < b.segments.size();
                     for (std::size_t i = 0; i < a.segments.size(); ++i)
                       if (a.segments[i].param != b.segments[i].param)
                         return !a.segments[i].param;
                     return false;
                   });
}

const router::path_entry* router::resolve(std::string_view path) const {
  // The hot routes (/append, /read) are exact: plain comparisons, first.
  for (auto& e : exact_)
    if (e.path == path)
      return &e;
  for (auto& e : patterns_) {
    auto& segs = e.segments;
    auto n = for_each_segment(path, [&](std::size_t i, std::string_view s) {
      return i < segs.size()
             && (segs[i].param ? valid_param(s) : s == segs[i].text);
    });
    if (n == segs.size())
      return &e;
  }
  return nullptr;
}

router::match router::find(std::string_view path, bhttp::verb method) const {
  match m;
  auto e = resolve(path);
  if (!e)
    return m;
  m.label = e->path;
  for (auto i : e->routes) {
    auto& r = routes_[i];
    if (r.method == method
        || (r.method == bhttp::verb::get && method == bhttp::verb::head)) {
      m.found = &r;
      m.allow.clear();
      break;
    }
    if (!m.allow.empty())
      m.allow += ", ";
    m.allow += std::string{bhttp::to_string(r.method)};
  }
  if (m.found && !e->segments.empty())
    for_each_segment(path, [&](std::size_t i, std::string_view s) {
      if (e->segments[i].param)
        m.params.emplace_back(e->segments[i].text, decode_param(s));
      return true;
    });
  return m;
}

std::string router::label_of(std::string_view path) const {
  auto e = resolve(path);
  return e ? e->path : "other";
}

std::string router::known() const {
  std::vector<std::string_view> seen;
  std::string out;
  for (auto& r : routes_) {
    if (!r.advertised
        || std::find(seen.begin(), seen.end(), r.path) != seen.end())
      continue;
    seen.push_back(r.path);
    out += (out.empty() ? "" : ", ") + r.path;
  }
  return out;
}

void router::dispatch(responder r) const {
  auto target = r.req().target();
  auto path = path_of(std::string_view{target.data(), target.size()});
  auto m = find(path, r.req().method());
  auto x = std::make_shared<exchange>(r, metrics_, std::string{m.label},
                                      max_body_);
  x->path_params_ = std::move(m.params);
  try {
    if (m.found)
      return m.found->fn(x);
    if (!m.allow.empty())
      return x->error(405, "method_not_allowed",
                      std::string{bhttp::to_string(r.req().method())} + " "
                        + std::string{path} + " is not allowed; use " + m.allow,
                      m.allow);
    x->error(404, "not_found",
             "no route " + std::string{path} + "; see " + known());
  } catch (const store_error& e) {
    x->fail(e.code(), e.what());
  } catch (const std::exception& e) {
    x->fail(errc::internal, e.what());
  }
}

void router::refuse(responder r, unsigned status, std::string code,
                    std::string message) const {
  auto target = r.req().target();
  auto path = path_of(std::string_view{target.data(), target.size()});
  auto x = std::make_shared<exchange>(r, metrics_, label_of(path), max_body_,
                                      false);
  x->error(status, std::move(code), std::move(message));
}

} // namespace dcbd::http
