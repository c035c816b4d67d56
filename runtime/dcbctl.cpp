// dcbctl: a command-line client of a dcbd node over HTTP.
//
//   dcbctl [--url URL] [--json] status
//   dcbctl [--url URL] [--json] head
//   dcbctl [--url URL] [--json] append --type T [--tag K:V]... [--data D]
//                                     [--fail-if QUERY_JSON [--after N]]
//   dcbctl [--url URL] [--json] append --events EVENTS_JSON [...]
//   dcbctl [--url URL] [--json] read [--query QUERY_JSON | --type T
//                                    --tag K:V...] [--from N] [--limit N]
//                                    [--backwards]
//
// The URL defaults to $DCB_URL, else http://127.0.0.1:8080. Exit codes: 0
// ok, 1 the node answered with an error (or a failed condition), 2 usage,
// 3 the node cannot be reached.
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using json = nlohmann::json;

struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct unreachable : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct target {
  std::string host;
  std::string port;
  std::string url;
};

target parse_url(const std::string& url) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0)
    throw usage_error("--url must start with http:// (got \"" + url + "\")");
  auto rest = url.substr(scheme.size());
  rest = rest.substr(0, rest.find('/'));
  auto colon = rest.rfind(':');
  target t;
  t.url = url;
  if (colon == std::string::npos) {
    t.host = rest;
    t.port = "80";
  } else {
    t.host = rest.substr(0, colon);
    t.port = rest.substr(colon + 1);
  }
  if (t.host.empty())
    throw usage_error("--url has no host");
  return t;
}

std::string url_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

struct reply {
  unsigned status = 0;
  std::string body;
};

// One request on a fresh connection.
reply call(const target& t, http::verb verb, const std::string& path,
           const std::string& body = {}) {
  net::io_context ioc;
  tcp::resolver resolver{ioc};
  beast::tcp_stream stream{ioc};
  beast::error_code ec;
  auto endpoints = resolver.resolve(t.host, t.port, ec);
  if (ec)
    throw unreachable("cannot resolve " + t.host + ": " + ec.message());
  stream.expires_after(std::chrono::seconds{10});
  stream.connect(endpoints, ec);
  if (ec)
    throw unreachable("cannot reach the node at " + t.url + ": " + ec.message()
                      + " (is dcbd running?)");
  http::request<http::string_body> req{verb, path, 11};
  req.set(http::field::host, t.host);
  req.set(http::field::user_agent, "dcbctl");
  if (!body.empty()) {
    req.set(http::field::content_type, "application/json");
    req.body() = body;
  }
  req.prepare_payload();
  stream.expires_after(std::chrono::seconds{60});
  http::write(stream, req, ec);
  if (ec)
    throw unreachable("cannot send to " + t.url + ": " + ec.message());
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(std::uint64_t{1} << 34);
  http::read(stream, buffer, parser, ec);
  if (ec)
    throw unreachable("no answer from " + t.url + ": " + ec.message());
  reply r;
  r.status = parser.get().result_int();
  r.body = std::move(parser.get().body());
  stream.socket().shutdown(tcp::socket::shutdown_both, ec);
  return r;
}

// An error answer as one line; exit code 1.
int node_error(const reply& r, bool as_json) {
  if (as_json) {
    std::cout << r.body << std::endl;
    return 1;
  }
  auto j = json::parse(r.body, nullptr, false);
  if (j.is_object() && j.contains("message"))
    std::cerr << "dcbctl: " << r.status << " "
              << j.value("code", std::string{"error"}) << ": "
              << j.value("message", std::string{}) << std::endl;
  else
    std::cerr << "dcbctl: HTTP " << r.status << ": " << r.body << std::endl;
  return 1;
}

std::string tags_text(const json& tags) {
  std::string out;
  for (auto& t : tags) {
    if (!out.empty())
      out += ",";
    out += t.get<std::string>();
  }
  return out;
}

struct options {
  std::string url;
  bool as_json = false;
  std::string command;
  std::vector<std::string> args;
};

// The value after `args[i]`, advancing i.
std::string value(const std::vector<std::string>& args, std::size_t& i) {
  if (i + 1 >= args.size())
    throw usage_error(args[i] + " needs a value");
  return args[++i];
}

json parse_json_arg(const std::string& flag, const std::string& text) {
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded())
    throw usage_error(flag + " is not valid JSON: " + text);
  return j;
}

std::uint64_t number_arg(const std::string& flag, const std::string& text) {
  try {
    std::size_t used = 0;
    auto n = std::stoull(text, &used);
    if (used == text.size())
      return n;
  } catch (const std::exception&) {
  }
  throw usage_error(flag + " must be a non-negative integer, got " + text);
}

int cmd_status(const options& o, const target& t) {
  auto health = call(t, http::verb::get, "/healthz");
  auto ready = call(t, http::verb::get, "/readyz");
  auto j = json::parse(ready.body, nullptr, false);
  if (o.as_json) {
    std::cout << json{{"url", t.url},
                      {"healthy", health.status == 200},
                      {"ready", ready.status == 200},
                      {"readyz", j}}
                   .dump()
              << std::endl;
  } else {
    std::cout << "node    " << t.url << "\n"
              << "healthy " << (health.status == 200 ? "yes" : "no") << "\n"
              << "ready   " << (ready.status == 200 ? "yes" : "no");
    if (ready.status == 200 && j.is_object() && j.contains("head"))
      std::cout << " (head " << j["head"] << ")";
    else if (j.is_object() && j.contains("message"))
      std::cout << " (" << j["message"].get<std::string>() << ")";
    std::cout << std::endl;
  }
  return ready.status == 200 ? 0 : 1;
}

int cmd_head(const options& o, const target& t) {
  auto r = call(t, http::verb::get, "/v1/head");
  if (r.status != 200)
    return node_error(r, o.as_json);
  if (o.as_json)
    std::cout << r.body << std::endl;
  else
    std::cout << json::parse(r.body)["head"] << std::endl;
  return 0;
}

int cmd_append(const options& o, const target& t) {
  json ev = json::object();
  json events;
  json condition;
  std::vector<std::string> tags;
  for (std::size_t i = 0; i < o.args.size(); ++i) {
    auto& a = o.args[i];
    if (a == "--type")
      ev["type"] = value(o.args, i);
    else if (a == "--tag")
      tags.push_back(value(o.args, i));
    else if (a == "--data")
      ev["data"] = value(o.args, i);
    else if (a == "--events")
      events = parse_json_arg(a, value(o.args, i));
    else if (a == "--fail-if")
      condition["failIfEventsMatch"] = parse_json_arg(a, value(o.args, i));
    else if (a == "--after")
      condition["after"] = number_arg(a, value(o.args, i));
    else
      throw usage_error("append: unknown argument " + a);
  }
  if (events.is_null()) {
    if (!ev.contains("type"))
      throw usage_error("append needs --type (or --events)");
    ev["tags"] = tags;
    events = json::array({ev});
  }
  json body{{"events", events}};
  if (!condition.is_null()) {
    if (!condition.contains("failIfEventsMatch"))
      throw usage_error("--after needs --fail-if");
    body["condition"] = condition;
  }
  auto r = call(t, http::verb::post, "/v1/append", body.dump());
  if (r.status != 200)
    return node_error(r, o.as_json);
  if (o.as_json) {
    std::cout << r.body << std::endl;
  } else {
    auto j = json::parse(r.body);
    std::cout << "appended positions " << j["first_position"] << ".."
              << j["last_position"] << std::endl;
  }
  return 0;
}

int cmd_read(const options& o, const target& t) {
  json q;
  json item = json::object();
  json opts = json::object();
  for (std::size_t i = 0; i < o.args.size(); ++i) {
    auto& a = o.args[i];
    if (a == "--query")
      q = parse_json_arg(a, value(o.args, i));
    else if (a == "--type")
      item["types"].push_back(value(o.args, i));
    else if (a == "--tag")
      item["tags"].push_back(value(o.args, i));
    else if (a == "--from")
      opts["from"] = number_arg(a, value(o.args, i));
    else if (a == "--limit")
      opts["limit"] = number_arg(a, value(o.args, i));
    else if (a == "--backwards")
      opts["backwards"] = true;
    else
      throw usage_error("read: unknown argument " + a);
  }
  if (q.is_null())
    q = item.empty() ? json{{"items", json::array()}}
                     : json{{"items", json::array({item})}};
  auto path = "/v1/read?query=" + url_encode(q.dump())
              + "&options=" + url_encode(opts.dump());
  auto r = call(t, http::verb::get, path);
  if (r.status != 200)
    return node_error(r, o.as_json);
  std::istringstream lines{r.body};
  std::string line;
  int rc = 0;
  while (std::getline(lines, line)) {
    if (line.empty())
      continue;
    if (o.as_json) {
      std::cout << line << "\n";
      continue;
    }
    auto j = json::parse(line, nullptr, false);
    if (j.contains("error")) {
      std::cerr << "dcbctl: the read failed: "
                << j["error"].value("message", std::string{}) << std::endl;
      rc = 1;
    } else if (j.contains("head")) {
      std::cout << "(head " << j["head"] << ")\n";
    } else {
      std::cout << j["position"] << "  " << j["type"].get<std::string>()
                << "  [" << tags_text(j["tags"]) << "]  "
                << j.value("data", std::string{}) << "\n";
    }
  }
  std::cout << std::flush;
  return rc;
}

void usage(std::ostream& os) {
  os << "usage: dcbctl [--url URL] [--json] <command> [args]\n"
        "commands:\n"
        "  status                                   health and readiness\n"
        "  head                                     position of the last "
        "event\n"
        "  append --type T [--tag K:V]... [--data D] [--fail-if QUERY] "
        "[--after N]\n"
        "  append --events '[{\"type\":..,\"tags\":[..],\"data\":..}]' "
        "[--fail-if QUERY] [--after N]\n"
        "  read [--query QUERY | --type T --tag K:V...] [--from N] "
        "[--limit N] [--backwards]\n"
        "QUERY is JSON: {\"items\":[{\"types\":[..],\"tags\":[..]}]}\n"
        "URL defaults to $DCB_URL, else http://127.0.0.1:8080\n";
}

} // namespace

int main(int argc, char** argv) {
  options o;
  auto env = std::getenv("DCB_URL");
  o.url = env && *env ? env : "http://127.0.0.1:8080";
  try {
    std::vector<std::string> args(argv + 1, argv + argc);
    std::size_t i = 0;
    for (; i < args.size(); ++i) {
      if (args[i] == "--url")
        o.url = value(args, i);
      else if (args[i] == "--json")
        o.as_json = true;
      else if (args[i] == "--help" || args[i] == "-h") {
        usage(std::cout);
        return 0;
      } else
        break;
    }
    if (i == args.size())
      throw usage_error("no command given");
    o.command = args[i];
    o.args.assign(args.begin() + static_cast<std::ptrdiff_t>(i) + 1,
                  args.end());
    for (std::size_t k = 0; k < o.args.size(); ++k)
      if (o.args[k] == "--json")
        o.as_json = true;
    std::erase(o.args, std::string{"--json"});
    auto t = parse_url(o.url);
    if (o.command == "status")
      return cmd_status(o, t);
    if (o.command == "head")
      return cmd_head(o, t);
    if (o.command == "append")
      return cmd_append(o, t);
    if (o.command == "read")
      return cmd_read(o, t);
    throw usage_error("unknown command " + o.command);
  } catch (const usage_error& e) {
    std::cerr << "dcbctl: " << e.what() << "\n";
    usage(std::cerr);
    return 2;
  } catch (const unreachable& e) {
    std::cerr << "dcbctl: " << e.what() << std::endl;
    return 3;
  } catch (const std::exception& e) {
    std::cerr << "dcbctl: " << e.what() << std::endl;
    return 1;
  }
}
