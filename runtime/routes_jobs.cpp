// Jobs over HTTP (API.md §7):
//
//   POST   /v1/jobs                 enqueue: 201 {"id","state"}; when a live
//                                   job holds the unique_key, 200 with that
//                                   job and "duplicate": true
//   GET    /v1/jobs?queue=&state=&kind=&limit=&before=
//                                   newest first (limit 1-1000, default 100;
//                                   before: ids below it, for paging); an
//                                   empty parameter is an absent one
//   GET    /v1/jobs/{id}            one job; 404 unknown
//   POST   /v1/jobs/{id}/cancel     200 with the job; 404; 409 conflict when
//   POST   /v1/jobs/{id}/retry      its state does not allow it
//   POST   /v1/jobs/fetch           external workers: take due jobs, waiting
//                                   up to wait_ms for some (long-poll)
//   POST   /v1/jobs/{id}/complete   {"lease"}
//   POST   /v1/jobs/{id}/fail       {"lease","error","retry_in_ms","discard"}
//   POST   /v1/jobs/{id}/heartbeat  {"lease","lease_ms"}
//                                   200 {"id","state"}; 409 lease_lost when
//                                   the lease is not current; 404 when there
//                                   is no such job
//   POST   /v1/triggers             201 with the trigger; 409 name taken
//   GET    /v1/triggers
//   DELETE /v1/triggers/{name}      200 {"name","deleted"}; 404
//   GET    /v1/queues               jobs per queue and state
//
// A job is {"id","queue","kind","args","state","attempt","max_attempts",
// "priority","scheduled_at","errors","created_at","attempted_at",
// "finalized_at","worker","unique_key","trigger","trigger_position",
// "lease_expires_at"}: args and errors as JSON values, times in RFC 3339
// (UTC), null when unset. The lease token is never shown: only the worker
// that fetched the job knows it.
//
// Every call of the job service answers asynchronously (from one of its
// threads), so no HTTP thread waits, not even for a long-poll. Bad input is
// 400 naming the field, before anything changes.
#include "actors/engine.hpp"
#include "actors/inspect.hpp"
#include "actors/jobs.hpp"
#include "runtime/http_routes.hpp"
#include "runtime/routes_common.hpp"
#include "store/job_model.hpp"
#include "store/validation.hpp"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace dcbd::http {

namespace {

// -- reading requests ---------------------------------------------------------

[[noreturn]] void bad(const std::string& field, const std::string& what) {
  throw store_error{errc::invalid_argument, field + " " + what};
}

// The member `key` of `j`, or null when absent or null.
const json* member(const json& j, const char* key) {
  auto i = j.find(key);
  if (i == j.end() || i->is_null())
    return nullptr;
  return &*i;
}

const json& object(const json& j) {
  if (!j.is_object())
    bad("body", "must be a JSON object");
  return j;
}

std::string string_field(const json& v, const std::string& field) {
  if (!v.is_string())
    bad(field, "must be a string");
  return v.get<std::string>();
}

constexpr auto max_int64 = std::numeric_limits<std::int64_t>::max();

// An integer, clamped to the range of int64.
std::int64_t any_integer(const json& v, const std::string& field) {
  if (!v.is_number_integer())
    bad(field, "must be an integer");
  if (v.is_number_unsigned()
      && v.get<std::uint64_t>() > static_cast<std::uint64_t>(max_int64))
    return max_int64;
  return v.get<std::int64_t>();
}

// An integer in [lo, hi].
std::int64_t integer_field(const json& v, const std::string& field,
                           std::int64_t lo, std::int64_t hi) {
  auto n = any_integer(v, field);
  if (n < lo || n > hi)
    bad(field, "must be an integer from " + std::to_string(lo) + " to "
                 + std::to_string(hi));
  return n;
}

bool bool_field(const json& v, const std::string& field) {
  if (!v.is_boolean())
    bad(field, "must be true or false");
  return v.get<bool>();
}

// A decimal integer in [lo, hi] from a URL.
std::int64_t integer_text(const std::string& text, const std::string& field,
                          std::int64_t lo, std::int64_t hi) {
  std::int64_t n = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc{} || ptr != text.data() + text.size() || n < lo || n > hi)
    bad(field, "must be an integer from " + std::to_string(lo) + " to "
                 + std::to_string(hi) + ", got \"" + text + "\"");
  return n;
}

// The job id of the path.
std::int64_t id_of(const exchange& x) {
  return integer_text(x.path_param("id"), "id", 1, max_int64);
}

// Runs the store's validation of `j`, naming fields as the body does
// ("priority", not "job.priority").
void check(job_request& j, const job_limits& lim) {
  try {
    validate(j, "job", lim);
  } catch (const store_error& e) {
    std::string what = e.what();
    if (what.rfind("job.", 0) == 0)
      what.erase(0, 4);
    throw store_error{e.code(), what};
  }
}

// The body of POST /v1/jobs: a job as in an append (runtime/json_api), its
// fields named bare ("priority", not "jobs[0].priority").
job_request job_of_body(const json& body, const job_limits& lim) {
  auto j = parse_job(body, "");
  check(j, lim);
  return j;
}

// Bounds of the worker calls (API.md §7).
constexpr std::int64_t max_fetch = 1000;
constexpr std::int64_t min_lease_ms = 1000;
constexpr std::int64_t max_lease_ms = 3'600'000;
constexpr std::int64_t default_lease_ms = 30'000;
constexpr std::int64_t max_wait_ms = 60'000;
constexpr std::size_t max_kinds = 1000;
constexpr std::size_t max_worker_bytes = 255;

// The body of POST /v1/jobs/fetch, and how long to wait.
std::pair<job_fetch, std::chrono::milliseconds>
fetch_of_body(const json& body, const exchange& x) {
  object(body);
  job_fetch f;
  if (auto v = member(body, "queue"))
    f.queue = string_field(*v, "queue");
  if (!valid_queue_name(f.queue))
    bad("queue", "must be 1-128 characters: letters, digits, '_', '-', '.'");
  if (auto v = member(body, "kinds")) {
    if (!v->is_array() || v->size() > max_kinds)
      bad("kinds", "must be an array of at most " + std::to_string(max_kinds)
                     + " strings");
    for (std::size_t i = 0; i < v->size(); ++i) {
      auto field = "kinds[" + std::to_string(i) + "]";
      f.kinds.push_back(string_field((*v)[i], field));
      validate_job_kind(f.kinds.back(), field);
    }
  }
  f.max = 1;
  if (auto v = member(body, "max"))
    f.max = static_cast<std::size_t>(integer_field(*v, "max", 1, max_fetch));
  f.lease_ms = default_lease_ms;
  if (auto v = member(body, "lease_ms"))
    f.lease_ms = integer_field(*v, "lease_ms", min_lease_ms, max_lease_ms);
  std::chrono::milliseconds wait{0};
  if (auto v = member(body, "wait_ms"))
    wait
      = std::chrono::milliseconds{integer_field(*v, "wait_ms", 0, max_wait_ms)};
  if (auto v = member(body, "worker")) {
    f.worker = string_field(*v, "worker");
    if (f.worker.empty() || f.worker.size() > max_worker_bytes
        || f.worker.find('\0') != std::string::npos || !is_utf8(f.worker))
      bad("worker", "must be 1-" + std::to_string(max_worker_bytes)
                      + " bytes of UTF-8 without NUL");
  } else {
    // Who fetched it, for `GET /v1/jobs/{id}`: the client's address.
    f.worker = x.remote().empty() ? std::string{"http"} : "http " + x.remote();
  }
  return {std::move(f), wait};
}

// At most `n` bytes of the UTF-8 text `s`, cut between characters.
std::string utf8_prefix(std::string s, std::size_t n) {
  if (s.size() <= n)
    return s;
  auto cut = n;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80)
    --cut;
  s.resize(cut);
  return s;
}

std::int64_t lease_of_body(const json& body) {
  object(body);
  auto v = member(body, "lease");
  if (!v)
    bad("lease", "is required (the lease of the fetch)");
  return integer_field(*v, "lease", 1, max_int64);
}

// -- writing answers ----------------------------------------------------------

// A JSON value stored as text (args, errors), or `fallback` if it is none.
json value_of(const std::string& text, json fallback) {
  auto j = json::parse(text, nullptr, false);
  return j.is_discarded() ? std::move(fallback) : j;
}

json time_or_null(std::int64_t us) {
  return us != 0 ? json(format_rfc3339(us)) : json(nullptr);
}

json text_or_null(const std::string& s) {
  return s.empty() ? json(nullptr) : json(s);
}

json job_json(const job& j) {
  json out = json::object();
  out["id"] = j.id;
  out["queue"] = j.queue;
  out["kind"] = j.kind;
  out["args"] = value_of(j.args, j.args);
  out["state"] = to_string(j.state);
  out["attempt"] = j.attempt;
  out["max_attempts"] = j.max_attempts;
  out["priority"] = j.priority;
  out["scheduled_at"] = format_rfc3339(j.scheduled_at_us);
  out["errors"] = value_of(j.errors, json::array());
  out["created_at"] = time_or_null(j.created_at_us);
  out["attempted_at"] = time_or_null(j.attempted_at_us);
  out["finalized_at"] = time_or_null(j.finalized_at_us);
  out["worker"] = text_or_null(j.worker);
  out["unique_key"] = text_or_null(j.unique_key);
  out["trigger"] = text_or_null(j.trigger);
  out["trigger_position"] = j.trigger.empty() ? json(nullptr)
                                              : json(j.trigger_position);
  out["lease_expires_at"] = j.state == job_state::running
                              ? time_or_null(j.lease_expires_at_us)
                              : json(nullptr);
  return out;
}

// A fetched job, as its worker sees it (with the lease).
json fetched_json(const job& j) {
  json out = json::object();
  out["id"] = j.id;
  out["queue"] = j.queue;
  out["kind"] = j.kind;
  out["args"] = value_of(j.args, j.args);
  out["attempt"] = j.attempt;
  out["max_attempts"] = j.max_attempts;
  out["priority"] = j.priority;
  out["lease"] = j.lease;
  out["lease_expires_at"] = time_or_null(j.lease_expires_at_us);
  return out;
}

json query_json(const query& q) {
  auto items = json::array();
  for (auto& i : q.items)
    items.push_back(json{{"types", i.types}, {"tags", i.tags}});
  return json{{"items", std::move(items)}};
}

json trigger_json(const job_trigger& t) {
  json out = json::object();
  out["name"] = t.name;
  out["query"] = query_json(t.query);
  out["queue"] = t.queue;
  out["kind"] = t.kind;
  out["priority"] = t.priority;
  out["max_attempts"] = t.max_attempts;
  out["position"] = t.position;
  out["created_at"] = time_or_null(t.created_at_us);
  return out;
}

json counts_json(const queue_counts& c) {
  json out = json::object();
  out["queue"] = c.queue;
  for (std::size_t i = 0; i < std::size(all_job_states); ++i)
    out[to_string(all_job_states[i])] = c.by_state[i];
  return out;
}

// A complete, fail or heartbeat that changed nothing: 404 when there is no
// such job (one more query, on this path only), else 409 lease_lost.
void lease_lost(job_service& jobs, const std::shared_ptr<exchange>& x,
                std::int64_t id) {
  jobs.get(id, [x, id](caf::expected<std::optional<job>> r) {
    if (r && !*r)
      return x->error(404, "not_found", "no job with id " + std::to_string(id));
    x->error(409, "lease_lost",
             "the lease of job " + std::to_string(id)
               + " is not current: the job was cancelled, finished, or its "
                 "lease expired and it was given to another worker");
  });
}

// -- management ---------------------------------------------------------------

handler change(job_service& jobs, bool cancel) {
  return [&jobs, cancel](const std::shared_ptr<exchange>& x) {
    auto id = id_of(*x);
    auto done = [x, id, cancel](caf::expected<job_change> r) {
      if (!r)
        return x->fail(r.error());
      switch (r->what) {
        case job_change::code::ok:
          return x->reply(200, job_json(r->after));
        case job_change::code::not_found:
          return x->error(404, "not_found",
                          "no job with id " + std::to_string(id));
        case job_change::code::conflict:
          break;
      }
      std::string state = to_string(r->after.state);
      x->error(409, "conflict",
               cancel ? "job " + std::to_string(id) + " is " + state
                          + ": only available, scheduled, running and "
                            "retryable jobs can be cancelled"
                      : "job " + std::to_string(id) + " is " + state
                          + ": a running job cannot be retried (cancel it, "
                            "or wait for its attempt to end)");
    };
    if (cancel)
      jobs.cancel(id, std::move(done));
    else
      jobs.retry(id, std::move(done));
  };
}

void enqueue(job_service& jobs, const std::shared_ptr<exchange>& x) {
  auto req = job_of_body(body_of(*x), jobs.config().limits);
  std::vector<job_request> batch;
  batch.push_back(std::move(req));
  jobs.enqueue(
    std::move(batch), [x, &jobs](caf::expected<std::vector<enqueued_job>> r) {
      if (!r)
        return x->fail(r.error());
      if (r->size() != 1)
        return x->error(500, "internal", "enqueue answered no job");
      auto e = r->front();
      if (!e.duplicate)
        return x->reply(201, json{{"id", e.id}, {"state", to_string(e.state)}});
      // The existing job, as GET shows it.
      jobs.get(e.id, [x, e](caf::expected<std::optional<job>> got) {
        json out = got && *got
                     ? job_json(**got)
                     : json{{"id", e.id}, {"state", to_string(e.state)}};
        out["duplicate"] = true;
        x->reply(200, out);
      });
    });
}

void list(job_service& jobs, const std::shared_ptr<exchange>& x) {
  job_filter f;
  if (auto v = x->parameter("queue"))
    f.queue = *v;
  if (auto v = x->parameter("kind"))
    f.kind = *v;
  if (auto v = x->parameter("state")) {
    f.state = parse_job_state(*v);
    if (!f.state)
      bad("state", "must be one of available, scheduled, running, "
                   "retryable, completed, cancelled, discarded; got \""
                     + *v + "\"");
  }
  if (auto v = x->parameter("limit"))
    f.limit = static_cast<std::size_t>(integer_text(*v, "limit", 1, 1000));
  if (auto v = x->parameter("before"))
    f.before_id = integer_text(*v, "before", 1, max_int64);
  jobs.list(std::move(f), [x](caf::expected<std::vector<job>> r) {
    if (!r)
      return x->fail(r.error());
    auto out = json::array();
    for (auto& j : *r)
      out.push_back(job_json(j));
    x->reply(200, out);
  });
}

// -- external workers ---------------------------------------------------------

void fetch(job_service& jobs, const std::shared_ptr<exchange>& x) {
  auto [f, wait] = fetch_of_body(body_of(*x), *x);
  jobs.fetch(std::move(f), wait, [x](caf::expected<std::vector<job>> r) {
    if (!r)
      return x->fail(r.error());
    auto out = json::array();
    for (auto& j : *r)
      out.push_back(fetched_json(j));
    x->reply(200, json{{"jobs", std::move(out)}});
  });
}

void finish(job_service& jobs, const std::shared_ptr<exchange>& x,
            job_outcome::kind what) {
  auto id = id_of(*x);
  auto body = body_of(*x);
  job_outcome o;
  o.id = id;
  o.lease = lease_of_body(body);
  o.what = what;
  if (what == job_outcome::kind::fail) {
    if (auto v = member(body, "error")) {
      // Too long an error is kept in part rather than refused: the worker
      // failed and should not fail at reporting it.
      o.error = string_field(*v, "error");
      if (!is_utf8(o.error) || o.error.find('\0') != std::string::npos)
        bad("error", "must be UTF-8 without NUL");
      o.error = utf8_prefix(std::move(o.error),
                            jobs.config().limits.max_error_bytes);
    }
    auto discard = member(body, "discard");
    if (discard && bool_field(*discard, "discard"))
      o.what = job_outcome::kind::discard;
    if (auto v = member(body, "retry_in_ms")) {
      if (o.what == job_outcome::kind::discard)
        bad("retry_in_ms", "cannot go with \"discard\": true");
      o.delay_ms = integer_field(*v, "retry_in_ms", 0,
                                 jobs.config().limits.max_delay_ms);
    }
  }
  jobs.finish(std::move(o),
              [&jobs, x, id](caf::expected<std::optional<job_state>> r) {
                if (!r)
                  return x->fail(r.error());
                if (!*r)
                  return lease_lost(jobs, x, id);
                x->reply(200, json{{"id", id}, {"state", to_string(**r)}});
              });
}

void heartbeat(job_service& jobs, const std::shared_ptr<exchange>& x) {
  auto id = id_of(*x);
  auto body = body_of(*x);
  auto lease = lease_of_body(body);
  // Without lease_ms: the length the fetch (or the latest heartbeat) asked
  // for, so a worker that leased for an hour is not cut to 30 s.
  std::int64_t lease_ms = 0;
  if (auto v = member(body, "lease_ms"))
    lease_ms = integer_field(*v, "lease_ms", min_lease_ms, max_lease_ms);
  jobs.heartbeat(id, lease, lease_ms, [&jobs, x, id](caf::expected<bool> r) {
    if (!r)
      return x->fail(r.error());
    if (!*r)
      return lease_lost(jobs, x, id);
    x->reply(200, json{{"id", id}, {"state", to_string(job_state::running)}});
  });
}

// -- triggers -----------------------------------------------------------------

// The body of POST /v1/triggers, and its start (nullopt: now).
std::pair<job_trigger, std::optional<std::uint64_t>>
trigger_of_body(const json& body, const job_limits& lim,
                const limits& store_limits) {
  object(body);
  job_trigger t;
  auto name = member(body, "name");
  if (!name)
    bad("name", "is required");
  t.name = string_field(*name, "name");
  validate_job_name(t.name, "name");
  if (auto q = member(body, "query")) {
    t.query = parse_query(*q, "query");
    validate(t.query, store_limits, "query");
  }
  // Kind, queue, priority and attempts as a job's (the trigger's other
  // fields are no job's).
  auto job_fields = json::object();
  for (auto key : {"kind", "queue", "priority", "max_attempts"})
    if (auto v = member(body, key))
      job_fields[key] = *v;
  auto probe = job_of_body(job_fields, lim);
  t.kind = probe.kind;
  t.queue = probe.queue;
  t.priority = probe.priority;
  t.max_attempts = probe.max_attempts;
  std::optional<std::uint64_t> from;
  if (auto v = member(body, "from")) {
    auto now = v->is_string() && v->get<std::string>() == "now";
    auto position = v->is_number_unsigned()
                    || (v->is_number_integer() && v->get<std::int64_t>() >= 0);
    if (!now && !position)
      bad("from", "must be \"now\" or a position (an integer from 0)");
    if (position)
      from = v->get<std::uint64_t>();
  }
  return {std::move(t), from};
}

void create_trigger(job_service& jobs, const limits& store_limits,
                    const std::shared_ptr<exchange>& x) {
  auto [t, from] = trigger_of_body(body_of(*x), jobs.config().limits,
                                   store_limits);
  auto asked = t;
  jobs.create_trigger(
    std::move(t), from, [x, &jobs, asked](caf::expected<bool> r) {
      if (!r)
        return x->fail(r.error());
      if (!*r)
        return x->error(409, "conflict",
                        "a trigger named " + asked.name + " exists");
      // As stored: with its start position and creation time.
      jobs.triggers([x, asked](caf::expected<std::vector<job_trigger>> all) {
        if (all)
          for (auto& t : *all)
            if (t.name == asked.name)
              return x->reply(201, trigger_json(t));
        x->reply(201, trigger_json(asked));
      });
    });
}

// The {name} of the path when it can name a trigger (else it cannot exist).
std::optional<std::string> trigger_name_of(const exchange& x) {
  auto& name = x.path_param("name");
  try {
    validate_job_name(name, "name");
  } catch (const store_error&) {
    return std::nullopt;
  }
  return name;
}

} // namespace

route_table job_routes(route_env& env) {
  if (!env.jobs)
    return {};
  using bhttp::verb;
  auto& jobs = *env.jobs;
  // The store's bounds of a query, as /v1/read applies them.
  auto store_limits = env.eng.config().store.limits;
  return {
    {"/v1/jobs", verb::post,
     [&jobs](const std::shared_ptr<exchange>& x) {
       enqueue(jobs, x);
     }},
    {"/v1/jobs", verb::get,
     [&jobs](const std::shared_ptr<exchange>& x) {
       list(jobs, x);
     }},
    {"/v1/jobs/fetch", verb::post,
     [&jobs](const std::shared_ptr<exchange>& x) {
       fetch(jobs, x);
     }},
    {"/v1/jobs/{id}", verb::get,
     [&jobs](const std::shared_ptr<exchange>& x) {
       auto id = id_of(*x);
       jobs.get(id, [x, id](caf::expected<std::optional<job>> r) {
         if (!r)
           return x->fail(r.error());
         if (!*r)
           return x->error(404, "not_found",
                           "no job with id " + std::to_string(id));
         x->reply(200, job_json(**r));
       });
     }},
    {"/v1/jobs/{id}/cancel", verb::post, change(jobs, true)},
    {"/v1/jobs/{id}/retry", verb::post, change(jobs, false)},
    {"/v1/jobs/{id}/complete", verb::post,
     [&jobs](const std::shared_ptr<exchange>& x) {
       finish(jobs, x, job_outcome::kind::complete);
     }},
    {"/v1/jobs/{id}/fail", verb::post,
     [&jobs](const std::shared_ptr<exchange>& x) {
       finish(jobs, x, job_outcome::kind::fail);
     }},
    {"/v1/jobs/{id}/heartbeat", verb::post,
     [&jobs](const std::shared_ptr<exchange>& x) {
       heartbeat(jobs, x);
     }},
    {"/v1/triggers", verb::post,
     [&jobs, store_limits](const std::shared_ptr<exchange>& x) {
       create_trigger(jobs, store_limits, x);
     }},
    {"/v1/triggers", verb::get,
     [&jobs](const std::shared_ptr<exchange>& x) {
       jobs.triggers([x](caf::expected<std::vector<job_trigger>> r) {
         if (!r)
           return x->fail(r.error());
         auto out = json::array();
         for (auto& t : *r)
           out.push_back(trigger_json(t));
         x->reply(200, out);
       });
     }},
    {"/v1/triggers/{name}", verb::delete_,
     [&jobs](const std::shared_ptr<exchange>& x) {
       auto known = trigger_name_of(*x);
       if (!known)
         return x->error(404, "not_found",
                         "no trigger named " + x->path_param("name"));
       auto name = *known;
       jobs.delete_trigger(name, [x, name](caf::expected<bool> r) {
         if (!r)
           return x->fail(r.error());
         if (!*r)
           return x->error(404, "not_found", "no trigger named " + name);
         x->reply(200, json{{"name", name}, {"deleted", true}});
       });
     }},
    {"/v1/queues", verb::get,
     [&jobs](const std::shared_ptr<exchange>& x) {
       jobs.counts([x](caf::expected<std::vector<queue_counts>> r) {
         if (!r)
           return x->fail(r.error());
         auto out = json::array();
         for (auto& c : *r)
           out.push_back(counts_json(c));
         x->reply(200, out);
       });
     }},
  };
}

} // namespace dcbd::http
