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
//   dcbctl [--url URL] [--json] subscribe [--query QUERY_JSON | --type T
//                                    --tag K:V...] [--after N] [--limit N]
//   dcbctl [--url URL] [--json] projectors [list]
//   dcbctl [--url URL] [--json] projectors show|pause|resume|rebuild NAME
//   dcbctl [--url URL] [--json] projectors dead-letters NAME
//                                     [retry|skip POSITION]
//
// `subscribe` follows the log like `tail -f` (GET /v1/subscribe, NDJSON):
// the matching events after N, then new ones as they are committed. When
// the connection drops it resumes after the last position it printed (an
// event or a checkpoint), so nothing is missed or printed twice. With
// --json it prints every frame as it came (events, checkpoint, caught_up,
// heartbeat); --limit stops after that many events.
//
// The URL defaults to $DCB_URL, else http://127.0.0.1:8080. Exit codes: 0
// ok, 1 the node answered with an error (or a failed condition), 2 usage,
// 3 the node cannot be reached.
#include "runtime/http_client.hpp"

#include <nlohmann/json.hpp>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using dcbd::client::response;
using json = nlohmann::json;

struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The node at --url, over one keep-alive connection.
struct node {
  explicit node(dcbd::client::endpoint e) : ep(e), conn(std::move(e)) {
    // nop
  }

  response get(const std::string& path) {
    return conn.call("GET", path);
  }

  response post(const std::string& path, const std::string& body) {
    return conn.call("POST", path, body);
  }

  dcbd::client::endpoint ep;
  dcbd::client::connection conn;
};

// An error answer as one line; exit code 1.
int node_error(const response& r, bool as_json) {
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

int cmd_status(const options& o, node& n) {
  auto health = n.get("/healthz");
  auto ready = n.get("/readyz");
  auto j = json::parse(ready.body, nullptr, false);
  if (o.as_json) {
    std::cout << json{{"url", n.ep.url},
                      {"healthy", health.status == 200},
                      {"ready", ready.status == 200},
                      {"readyz", j}}
                   .dump()
              << std::endl;
  } else {
    std::cout << "node    " << n.ep.url << "\n"
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

int cmd_head(const options& o, node& n) {
  auto r = n.get("/v1/head");
  if (r.status != 200)
    return node_error(r, o.as_json);
  if (o.as_json)
    std::cout << r.body << std::endl;
  else
    std::cout << json::parse(r.body)["head"] << std::endl;
  return 0;
}

int cmd_append(const options& o, node& n) {
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
  auto r = n.post("/v1/append", body.dump());
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

// Takes --query, --type and --tag at args[i] (true) into `q` / `item`.
bool query_arg(const std::vector<std::string>& args, std::size_t& i, json& q,
               json& item) {
  auto& a = args[i];
  if (a == "--query")
    q = parse_json_arg(a, value(args, i));
  else if (a == "--type")
    item["types"].push_back(value(args, i));
  else if (a == "--tag")
    item["tags"].push_back(value(args, i));
  else
    return false;
  return true;
}

// The query the arguments named: --query, else one item, else everything.
json query_of(const json& q, const json& item) {
  if (!q.is_null())
    return q;
  return item.empty() ? json{{"items", json::array()}}
                      : json{{"items", json::array({item})}};
}

int cmd_read(const options& o, node& n) {
  json q;
  json item = json::object();
  json opts = json::object();
  for (std::size_t i = 0; i < o.args.size(); ++i) {
    auto& a = o.args[i];
    if (query_arg(o.args, i, q, item))
      continue;
    if (a == "--from")
      opts["from"] = number_arg(a, value(o.args, i));
    else if (a == "--limit")
      opts["limit"] = number_arg(a, value(o.args, i));
    else if (a == "--backwards")
      opts["backwards"] = true;
    else
      throw usage_error("read: unknown argument " + a);
  }
  q = query_of(q, item);
  auto path = "/v1/read?query=" + dcbd::client::url_encode(q.dump())
              + "&options=" + dcbd::client::url_encode(opts.dump());
  auto r = n.get(path);
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

// Reads the subscription arguments into a query and a start position.
int cmd_subscribe(const options& o, node& n) {
  json q;
  json item = json::object();
  std::uint64_t after = 0;
  std::uint64_t limit = 0;
  for (std::size_t i = 0; i < o.args.size(); ++i) {
    auto& a = o.args[i];
    if (query_arg(o.args, i, q, item))
      continue;
    if (a == "--after")
      after = number_arg(a, value(o.args, i));
    else if (a == "--limit")
      limit = number_arg(a, value(o.args, i));
    else
      throw usage_error("subscribe: unknown argument " + a);
  }
  q = query_of(q, item);
  auto query_text = dcbd::client::url_encode(q.dump());
  std::uint64_t printed = 0;
  bool connected_once = false;
  auto backoff = std::chrono::milliseconds{500};
  for (;;) {
    auto target = "/v1/subscribe?query=" + query_text
                  + "&after=" + std::to_string(after);
    dcbd::client::streaming_get get{n.ep, target};
    unsigned status = 0;
    std::string pending;
    std::string error_body;
    bool done = false;
    try {
      get.run(
        [&](const dcbd::client::stream_head& h) {
          status = h.status;
          connected_once = true;
        },
        [&](std::string_view data) {
          if (status != 200) {
            error_body += data;
            return true;
          }
          pending += data;
          std::size_t nl;
          while ((nl = pending.find('\n')) != std::string::npos) {
            auto line = pending.substr(0, nl);
            pending.erase(0, nl + 1);
            auto j = json::parse(line, nullptr, false);
            if (!j.is_object())
              continue;
            auto kind = j.value("kind", std::string{});
            if (kind == "event" || kind == "checkpoint")
              after = j.value("position", after);
            if (kind == "error") {
              std::cerr << "dcbctl: the subscription ended: "
                        << j.value("message", std::string{}) << std::endl;
              continue;
            }
            if (o.as_json) {
              std::cout << line << "\n";
            } else if (kind == "event") {
              std::cout << j["position"] << "  " << j["type"].get<std::string>()
                        << "  [" << tags_text(j["tags"]) << "]  "
                        << j.value("data", std::string{}) << "\n";
            }
            if (kind == "event" && limit > 0 && ++printed >= limit) {
              done = true;
              break;
            }
          }
          std::cout << std::flush;
          return !done;
        });
    } catch (const dcbd::client::unreachable& e) {
      if (!connected_once)
        throw;
      std::cerr << "dcbctl: " << e.what() << std::endl;
    }
    if (done)
      return 0;
    // 503 (the node is stopping or full) is worth waiting out; any other
    // answer is final.
    if (status != 0 && status != 200 && status != 503)
      return node_error(response{status, error_body}, o.as_json);
    // The connection dropped (or the node stopped): resume where we were,
    // sooner when it had been up.
    if (status == 200)
      backoff = std::chrono::milliseconds{500};
    std::cerr << "dcbctl: connection lost; resuming after position " << after
              << " in " << backoff.count() << " ms" << std::endl;
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds{5000});
  }
}

void print_projector_header() {
  std::printf("%-24s %-10s %12s %12s %10s %6s %-20s %s\n", "NAME", "STATE",
              "POSITION", "HEAD", "LAG", "DEAD", "OWNER", "EPOCH");
}

void print_projector(const json& p) {
  std::printf("%-24s %-10s %12llu %12llu %10llu %6llu %-20s %llu\n",
              p.value("name", std::string{}).c_str(),
              p.value("state", std::string{}).c_str(),
              p.value("position", 0ull), p.value("head", 0ull),
              p.value("lag", 0ull), p.value("dead_letters", 0ull),
              p.value("owner", std::string{}).c_str(), p.value("epoch", 0ull));
  if (p.contains("error"))
    std::printf("  error: %s\n", p["error"].get<std::string>().c_str());
}

// projectors [list] | show|pause|resume|rebuild NAME | dead-letters NAME
// [retry|skip POSITION]
int cmd_projectors(const options& o, node& n) {
  auto& a = o.args;
  auto verb = a.empty() ? std::string{"list"} : a[0];
  auto need = [&](std::size_t k, const char* what) {
    if (a.size() != k)
      throw usage_error(std::string{"projectors "} + verb + ": " + what);
  };
  response r;
  if (verb == "list") {
    need(a.empty() ? 0 : 1, "takes no arguments");
    r = n.get("/v1/projectors");
  } else if (verb == "show") {
    need(2, "needs NAME");
    r = n.get("/v1/projectors/" + dcbd::client::url_encode(a[1]));
  } else if (verb == "pause" || verb == "resume" || verb == "rebuild") {
    need(2, "needs NAME");
    r = n.post("/v1/projectors/" + dcbd::client::url_encode(a[1]) + "/" + verb,
               "");
  } else if (verb == "dead-letters") {
    if (a.size() == 2) {
      r = n.get("/v1/projectors/" + dcbd::client::url_encode(a[1])
                + "/dead-letters");
    } else {
      need(4, "needs NAME, or NAME retry|skip POSITION");
      if (a[2] != "retry" && a[2] != "skip")
        throw usage_error("projectors dead-letters: expected retry or skip, "
                          "got "
                          + a[2]);
      number_arg("POSITION", a[3]);
      r = n.post("/v1/projectors/" + dcbd::client::url_encode(a[1])
                   + "/dead-letters/" + a[3] + "/" + a[2],
                 "");
    }
  } else {
    throw usage_error("projectors: unknown action " + verb);
  }
  if (r.status != 200)
    return node_error(r, o.as_json);
  if (o.as_json) {
    std::cout << r.body << std::endl;
    return 0;
  }
  auto j = json::parse(r.body);
  if (verb == "dead-letters" && a.size() == 2) {
    std::printf("%12s %8s %s\n", "POSITION", "ATTEMPTS", "ERROR");
    for (auto& d : j)
      std::printf("%12llu %8llu %s\n", d.value("position", 0ull),
                  d.value("attempts", 0ull),
                  d.value("error", std::string{}).c_str());
    return 0;
  }
  print_projector_header();
  if (j.is_array())
    for (auto& p : j)
      print_projector(p);
  else
    print_projector(j);
  return 0;
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
        "  subscribe [--query QUERY | --type T --tag K:V...] [--after N] "
        "[--limit N]\n"
        "                                           follow like tail -f\n"
        "  projectors [list]                        projectors and their "
        "state\n"
        "  projectors show|pause|resume|rebuild NAME\n"
        "  projectors dead-letters NAME [retry|skip POSITION]\n"
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
    if (std::erase(o.args, std::string{"--json"}) > 0)
      o.as_json = true;
    std::optional<node> n;
    try {
      n.emplace(dcbd::client::parse_url(o.url));
    } catch (const std::invalid_argument& e) {
      throw usage_error(std::string{"--url: "} + e.what());
    }
    if (o.command == "status")
      return cmd_status(o, *n);
    if (o.command == "head")
      return cmd_head(o, *n);
    if (o.command == "append")
      return cmd_append(o, *n);
    if (o.command == "read")
      return cmd_read(o, *n);
    if (o.command == "subscribe")
      return cmd_subscribe(o, *n);
    if (o.command == "projectors")
      return cmd_projectors(o, *n);
    throw usage_error("unknown command " + o.command);
  } catch (const usage_error& e) {
    std::cerr << "dcbctl: " << e.what() << "\n";
    usage(std::cerr);
    return 2;
  } catch (const dcbd::client::unreachable& e) {
    std::cerr << "dcbctl: " << e.what() << " (is dcbd running?)" << std::endl;
    return 3;
  } catch (const std::exception& e) {
    std::cerr << "dcbctl: " << e.what() << std::endl;
    return 1;
  }
}
