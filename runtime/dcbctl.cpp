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
//   dcbctl [--url URL] [--json] jobs enqueue KIND [--queue Q] [--args JSON]
//                                     [--priority N] [--delay-ms N]
//                                     [--run-at RFC3339] [--max-attempts N]
//                                     [--unique-key K]
//   dcbctl [--url URL] [--json] jobs [list] [--queue Q] [--state S]
//                                     [--kind K] [--limit N] [--before ID]
//   dcbctl [--url URL] [--json] jobs show|cancel|retry ID
//   dcbctl [--url URL] [--json] jobs queues
//   dcbctl [--url URL] [--json] jobs triggers [list]
//   dcbctl [--url URL] [--json] jobs triggers create NAME --kind K
//                                     [--query QUERY_JSON | --types T1,T2
//                                     --tags K:V,K:V] [--queue Q]
//                                     [--from now|P]
//   dcbctl [--url URL] [--json] jobs triggers delete NAME
//   dcbctl [--url URL] [--json] cluster
//   dcbctl [--url URL] [--json] commands
//   dcbctl [--url URL] [--json] run NAME [--args JSON]
//
// `run` runs a command the node registered (POST /v1/commands/NAME) and
// prints its outcome; a rejection exits 1, as an error answer does.
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

  response del(const std::string& path) {
    return conn.call("DELETE", path);
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

// -- commands -----------------------------------------------------------------

// commands: what the node registered (GET /v1/commands).
int cmd_commands(const options& o, node& n) {
  if (!o.args.empty())
    throw usage_error("commands: takes no arguments");
  auto r = n.get("/v1/commands");
  if (r.status != 200)
    return node_error(r, o.as_json);
  if (o.as_json) {
    std::cout << r.body << std::endl;
    return 0;
  }
  for (auto& c : json::parse(r.body))
    std::printf("%-32s %s\n", c.value("name", std::string{}).c_str(),
                c.value("description", std::string{}).c_str());
  return 0;
}

// run NAME [--args JSON]: one command; exit 1 when it was rejected.
int cmd_run(const options& o, node& n) {
  auto& a = o.args;
  if (a.empty() || a[0].rfind("--", 0) == 0)
    throw usage_error("run: needs NAME");
  json args = json::object();
  for (std::size_t i = 1; i < a.size(); ++i) {
    if (a[i] == "--args")
      args = parse_json_arg(a[i], value(a, i));
    else
      throw usage_error("run: unknown argument " + a[i]);
  }
  auto r = n.post("/v1/commands/" + dcbd::client::url_encode(a[0]),
                  args.dump());
  if (r.status != 200)
    return node_error(r, o.as_json);
  auto j = json::parse(r.body);
  auto accepted = j.value("accepted", false);
  if (o.as_json)
    std::cout << r.body << std::endl;
  else if (accepted)
    std::cout << "accepted: positions " << j.value("first_position", 0ull)
              << ".." << j.value("last_position", 0ull)
              << " (attempts: " << j.value("attempts", 0ull) << ")"
              << std::endl;
  else
    std::cout << "rejected: " << j.value("rejection", std::string{})
              << std::endl;
  return accepted ? 0 : 1;
}

// -- cluster ------------------------------------------------------------------

// cluster: the members as the node sees them (GET /v1/cluster).
int cmd_cluster(const options& o, node& n) {
  if (!o.args.empty())
    throw usage_error("cluster: takes no arguments");
  auto r = n.get("/v1/cluster");
  if (r.status != 200)
    return node_error(r, o.as_json);
  if (o.as_json) {
    std::cout << r.body << std::endl;
    return 0;
  }
  auto j = json::parse(r.body);
  auto self = j.value("self", std::string{});
  std::printf("%-24s %-12s %-22s %-22s %s\n", "NAME", "STATUS", "CLUSTER ADDR",
              "HTTP", "SINCE");
  for (auto& m : j.value("members", json::array())) {
    auto name = m.value("name", std::string{});
    if (name == self)
      name += " (self)";
    std::printf("%-24s %-12s %-22s %-22s %s\n", name.c_str(),
                m.value("status", std::string{}).c_str(),
                m.value("addr", std::string{}).c_str(),
                m.value("http", std::string{}).c_str(),
                m.value("since", std::string{}).c_str());
  }
  return 0;
}

// -- jobs ---------------------------------------------------------------------

// A string member, "" when absent or null.
std::string text(const json& j, const char* key) {
  auto i = j.find(key);
  if (i == j.end() || i->is_null())
    return {};
  return i->is_string() ? i->get<std::string>() : i->dump();
}

long long integer(const json& j, const char* key) {
  auto i = j.find(key);
  return i != j.end() && i->is_number_integer() ? i->get<long long>() : 0;
}

// A positive integer argument (a job id).
std::string id_arg(const std::string& text) {
  if (number_arg("ID", text) == 0)
    throw usage_error("ID must be a positive integer, got " + text);
  return text;
}

// "a,b,c" as a JSON array of strings (empty parts dropped).
json list_arg(const std::string& text) {
  auto out = json::array();
  std::size_t at = 0;
  while (at <= text.size()) {
    auto comma = text.find(',', at);
    if (comma == std::string::npos)
      comma = text.size();
    if (comma > at)
      out.push_back(text.substr(at, comma - at));
    at = comma + 1;
  }
  return out;
}

void print_job_header() {
  std::printf("%10s  %-10s  %-16s  %-24s  %8s  %4s  %s\n", "ID", "STATE",
              "QUEUE", "KIND", "ATTEMPT", "PRIO", "SCHEDULED_AT");
}

void print_job_row(const json& j) {
  auto attempts = std::to_string(integer(j, "attempt")) + "/"
                  + std::to_string(integer(j, "max_attempts"));
  std::printf("%10lld  %-10s  %-16s  %-24s  %8s  %4lld  %s\n", integer(j, "id"),
              text(j, "state").c_str(), text(j, "queue").c_str(),
              text(j, "kind").c_str(), attempts.c_str(), integer(j, "priority"),
              text(j, "scheduled_at").c_str());
}

void print_job(const json& j) {
  auto line = [&](const char* label, const std::string& v) {
    if (!v.empty())
      std::printf("%-17s %s\n", label, v.c_str());
  };
  line("id", std::to_string(integer(j, "id")));
  line("queue", text(j, "queue"));
  line("kind", text(j, "kind"));
  line("state", text(j, "state"));
  line("attempt", std::to_string(integer(j, "attempt")) + " of "
                    + std::to_string(integer(j, "max_attempts")));
  line("priority", std::to_string(integer(j, "priority")));
  line("args", j.contains("args") ? j["args"].dump() : "");
  line("created_at", text(j, "created_at"));
  line("scheduled_at", text(j, "scheduled_at"));
  line("attempted_at", text(j, "attempted_at"));
  line("finalized_at", text(j, "finalized_at"));
  line("lease_expires_at", text(j, "lease_expires_at"));
  line("worker", text(j, "worker"));
  line("unique_key", text(j, "unique_key"));
  if (!text(j, "trigger").empty())
    line("trigger", text(j, "trigger") + " (event "
                      + std::to_string(integer(j, "trigger_position")) + ")");
  if (j.contains("errors") && j["errors"].is_array())
    for (auto& e : j["errors"])
      std::printf("error             attempt %lld at %s: %s\n",
                  integer(e, "attempt"), text(e, "at").c_str(),
                  text(e, "error").c_str());
}

void print_trigger_header() {
  std::printf("%-24s  %-16s  %-24s  %10s  %-27s  %s\n", "NAME", "QUEUE", "KIND",
              "POSITION", "CREATED_AT", "QUERY");
}

void print_trigger(const json& t) {
  std::printf("%-24s  %-16s  %-24s  %10lld  %-27s  %s\n",
              text(t, "name").c_str(), text(t, "queue").c_str(),
              text(t, "kind").c_str(), integer(t, "position"),
              text(t, "created_at").c_str(),
              t.contains("query") ? t["query"].dump().c_str() : "");
}

int cmd_jobs_enqueue(const options& o, node& n) {
  auto& a = o.args;
  if (a.size() < 2 || a[1].rfind("--", 0) == 0)
    throw usage_error("jobs enqueue: needs KIND");
  json body{{"kind", a[1]}};
  for (std::size_t i = 2; i < a.size(); ++i) {
    auto& f = a[i];
    if (f == "--queue")
      body["queue"] = value(a, i);
    else if (f == "--args")
      body["args"] = parse_json_arg(f, value(a, i));
    else if (f == "--priority")
      body["priority"] = number_arg(f, value(a, i));
    else if (f == "--delay-ms")
      body["delay_ms"] = number_arg(f, value(a, i));
    else if (f == "--run-at")
      body["run_at"] = value(a, i);
    else if (f == "--max-attempts")
      body["max_attempts"] = number_arg(f, value(a, i));
    else if (f == "--unique-key")
      body["unique_key"] = value(a, i);
    else
      throw usage_error("jobs enqueue: unknown argument " + f);
  }
  auto r = n.post("/v1/jobs", body.dump());
  if (r.status != 201 && r.status != 200)
    return node_error(r, o.as_json);
  if (o.as_json) {
    std::cout << r.body << std::endl;
    return 0;
  }
  auto j = json::parse(r.body);
  if (j.value("duplicate", false))
    std::cout << "job " << integer(j, "id") << " (" << text(j, "state")
              << ") already has unique key " << text(j, "unique_key")
              << "; nothing enqueued" << std::endl;
  else
    std::cout << "enqueued job " << integer(j, "id") << " (" << text(j, "state")
              << ")" << std::endl;
  return 0;
}

int cmd_jobs_list(const options& o, node& n, std::size_t first) {
  auto& a = o.args;
  std::string query;
  auto add = [&](const char* key, const std::string& v) {
    query += (query.empty() ? "?" : "&") + std::string{key} + "="
             + dcbd::client::url_encode(v);
  };
  for (std::size_t i = first; i < a.size(); ++i) {
    auto& f = a[i];
    if (f == "--queue")
      add("queue", value(a, i));
    else if (f == "--state")
      add("state", value(a, i));
    else if (f == "--kind")
      add("kind", value(a, i));
    else if (f == "--limit")
      add("limit", std::to_string(number_arg(f, value(a, i))));
    else if (f == "--before")
      add("before", id_arg(value(a, i)));
    else
      throw usage_error("jobs list: unknown argument " + f);
  }
  auto r = n.get("/v1/jobs" + query);
  if (r.status != 200)
    return node_error(r, o.as_json);
  if (o.as_json) {
    std::cout << r.body << std::endl;
    return 0;
  }
  print_job_header();
  for (auto& j : json::parse(r.body))
    print_job_row(j);
  return 0;
}

int cmd_jobs_triggers(const options& o, node& n) {
  auto& a = o.args;
  auto verb = a.size() < 2 ? std::string{"list"} : a[1];
  response r;
  if (verb == "list") {
    if (a.size() > 2)
      throw usage_error("jobs triggers list: takes no arguments");
    r = n.get("/v1/triggers");
  } else if (verb == "create") {
    if (a.size() < 3 || a[2].rfind("--", 0) == 0)
      throw usage_error("jobs triggers create: needs NAME");
    json body{{"name", a[2]}};
    json q;
    json item = json::object();
    for (std::size_t i = 3; i < a.size(); ++i) {
      auto& f = a[i];
      if (f == "--kind")
        body["kind"] = value(a, i);
      else if (f == "--queue")
        body["queue"] = value(a, i);
      else if (f == "--query")
        q = parse_json_arg(f, value(a, i));
      else if (f == "--types")
        item["types"] = list_arg(value(a, i));
      else if (f == "--tags")
        item["tags"] = list_arg(value(a, i));
      else if (f == "--from") {
        auto from = value(a, i);
        body["from"] = from == "now" ? json(from) : json(number_arg(f, from));
      } else
        throw usage_error("jobs triggers create: unknown argument " + f);
    }
    if (!body.contains("kind"))
      throw usage_error("jobs triggers create: needs --kind");
    body["query"] = query_of(q, item);
    r = n.post("/v1/triggers", body.dump());
  } else if (verb == "delete") {
    if (a.size() != 3)
      throw usage_error("jobs triggers delete: needs NAME");
    r = n.del("/v1/triggers/" + dcbd::client::url_encode(a[2]));
  } else {
    throw usage_error("jobs triggers: unknown action " + verb);
  }
  if (r.status != 200 && r.status != 201)
    return node_error(r, o.as_json);
  if (o.as_json) {
    std::cout << r.body << std::endl;
    return 0;
  }
  if (verb == "delete") {
    std::cout << "deleted trigger " << a[2] << std::endl;
    return 0;
  }
  auto j = json::parse(r.body);
  print_trigger_header();
  if (j.is_array())
    for (auto& t : j)
      print_trigger(t);
  else
    print_trigger(j);
  return 0;
}

// jobs [list ...] | enqueue KIND ... | show|cancel|retry ID | queues |
// triggers ...
int cmd_jobs(const options& o, node& n) {
  auto& a = o.args;
  if (a.empty() || a[0].rfind("--", 0) == 0)
    return cmd_jobs_list(o, n, 0);
  auto& verb = a[0];
  if (verb == "list")
    return cmd_jobs_list(o, n, 1);
  if (verb == "enqueue")
    return cmd_jobs_enqueue(o, n);
  if (verb == "triggers")
    return cmd_jobs_triggers(o, n);
  response r;
  if (verb == "show" || verb == "cancel" || verb == "retry") {
    if (a.size() != 2)
      throw usage_error("jobs " + verb + ": needs ID");
    auto path = "/v1/jobs/" + id_arg(a[1]);
    r = verb == "show" ? n.get(path) : n.post(path + "/" + verb, "");
  } else if (verb == "queues") {
    if (a.size() != 1)
      throw usage_error("jobs queues: takes no arguments");
    r = n.get("/v1/queues");
  } else {
    throw usage_error("jobs: unknown action " + verb);
  }
  if (r.status != 200)
    return node_error(r, o.as_json);
  if (o.as_json) {
    std::cout << r.body << std::endl;
    return 0;
  }
  auto j = json::parse(r.body);
  if (verb == "queues") {
    std::printf("%-16s %10s %10s %10s %10s %10s %10s %10s\n", "QUEUE",
                "AVAILABLE", "SCHEDULED", "RUNNING", "RETRYABLE", "COMPLETED",
                "DISCARDED", "CANCELLED");
    for (auto& q : j)
      std::printf("%-16s %10lld %10lld %10lld %10lld %10lld %10lld %10lld\n",
                  text(q, "queue").c_str(), integer(q, "available"),
                  integer(q, "scheduled"), integer(q, "running"),
                  integer(q, "retryable"), integer(q, "completed"),
                  integer(q, "discarded"), integer(q, "cancelled"));
    return 0;
  }
  print_job(j);
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
        "  jobs enqueue KIND [--queue Q] [--args JSON] [--priority N] "
        "[--delay-ms N]\n"
        "               [--run-at RFC3339] [--max-attempts N] "
        "[--unique-key K]\n"
        "  jobs [list] [--queue Q] [--state S] [--kind K] [--limit N] "
        "[--before ID]\n"
        "  jobs show|cancel|retry ID\n"
        "  jobs queues                              jobs per queue and "
        "state\n"
        "  jobs triggers [list]\n"
        "  jobs triggers create NAME --kind K [--query QUERY | --types "
        "T1,T2\n"
        "               --tags K:V,K:V] [--queue Q] [--from now|P]\n"
        "  jobs triggers delete NAME\n"
        "  cluster                                  the members and their "
        "status\n"
        "  commands                                 the commands the node "
        "runs\n"
        "  run NAME [--args JSON]                   run one; exit 1 when "
        "rejected\n"
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
    if (o.command == "jobs")
      return cmd_jobs(o, *n);
    if (o.command == "cluster")
      return cmd_cluster(o, *n);
    if (o.command == "commands")
      return cmd_commands(o, *n);
    if (o.command == "run")
      return cmd_run(o, *n);
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
