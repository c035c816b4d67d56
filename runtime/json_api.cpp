#include "runtime/json_api.hpp"

#include "store/error.hpp"
#include "store/job_model.hpp"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <limits>
#include <utility>

namespace dcbd::http {

namespace {

[[noreturn]] void bad(std::string_view field, std::string_view what) {
  throw store_error(errc::invalid_argument,
                    std::string{field} + " " + std::string{what});
}

std::string at(std::string_view field, std::string_view key) {
  return std::string{field} + "." + std::string{key};
}

std::string at(std::string_view field, std::size_t i) {
  return std::string{field} + "[" + std::to_string(i) + "]";
}

const json& object(const json& j, std::string_view field) {
  if (!j.is_object())
    bad(field, "must be an object");
  return j;
}

// The member `key` of object `j`, or null when absent.
const json* member(const json& j, std::string_view key) {
  auto i = j.find(key);
  if (i == j.end() || i->is_null())
    return nullptr;
  return &*i;
}

std::string string_of(const json& j, std::string_view field) {
  if (!j.is_string())
    bad(field, "must be a string");
  return j.get<std::string>();
}

// A string, or binary bytes (from msgpack).
std::string bytes_of(const json& j, std::string_view field) {
  if (j.is_binary()) {
    auto& b = j.get_binary();
    return std::string(b.begin(), b.end());
  }
  if (!j.is_string())
    bad(field, "must be a string");
  return j.get<std::string>();
}

json binary_of(const std::string& s) {
  return json::binary(json::binary_t::container_type(s.begin(), s.end()));
}

std::vector<std::string> strings_of(const json& j, std::string_view field) {
  if (!j.is_array())
    bad(field, "must be an array of strings");
  std::vector<std::string> xs;
  xs.reserve(j.size());
  for (std::size_t i = 0; i < j.size(); ++i)
    xs.push_back(string_of(j[i], at(field, i)));
  return xs;
}

std::uint64_t position_of(const json& j, std::string_view field) {
  if (!j.is_number_integer())
    bad(field, "must be a non-negative integer");
  if (j.is_number_unsigned())
    return j.get<std::uint64_t>();
  auto v = j.get<std::int64_t>();
  if (v < 0)
    bad(field, "must be a non-negative integer");
  return static_cast<std::uint64_t>(v);
}

// An integer, clamped to the range of `T`: a job's bounds are narrower, and
// the store's validation names them ("priority must be 1-100 ...").
template <class T>
T clamped_integer_of(const json& j, std::string_view field) {
  if (!j.is_number_integer())
    bad(field, "must be an integer");
  if (j.is_number_unsigned())
    return static_cast<T>(std::min<std::uint64_t>(
      j.get<std::uint64_t>(),
      static_cast<std::uint64_t>(std::numeric_limits<T>::max())));
  return static_cast<T>(std::clamp<std::int64_t>(
    j.get<std::int64_t>(),
    static_cast<std::int64_t>(std::numeric_limits<T>::min()),
    static_cast<std::int64_t>(std::numeric_limits<T>::max())));
}

} // namespace

json parse_json(std::string_view text, std::string_view field) {
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded())
    bad(field, "is not valid JSON");
  return j;
}

query parse_query(const json& j, std::string_view field) {
  object(j, field);
  auto items = member(j, "items");
  auto items_field = at(field, "items");
  if (!items)
    bad(items_field, "is required (an empty array matches every event)");
  if (!items->is_array())
    bad(items_field, "must be an array");
  query q;
  q.items.reserve(items->size());
  for (std::size_t i = 0; i < items->size(); ++i) {
    auto f = at(items_field, i);
    object((*items)[i], f);
    query_item item;
    if (auto types = member((*items)[i], "types"))
      item.types = strings_of(*types, at(f, "types"));
    if (auto tags = member((*items)[i], "tags"))
      item.tags = strings_of(*tags, at(f, "tags"));
    q.items.push_back(std::move(item));
  }
  return q;
}

read_options parse_read_options(const json& j, std::string_view field) {
  object(j, field);
  read_options options;
  if (auto from = member(j, "from"))
    options.from = position_of(*from, at(field, "from"));
  if (auto limit = member(j, "limit"))
    options.limit = position_of(*limit, at(field, "limit"));
  if (auto backwards = member(j, "backwards")) {
    if (!backwards->is_boolean())
      bad(at(field, "backwards"), "must be a boolean");
    options.backwards = backwards->get<bool>();
  }
  return options;
}

event parse_event(const json& j, std::string_view field) {
  object(j, field);
  event e;
  auto type = member(j, "type");
  if (!type)
    bad(at(field, "type"), "is required");
  e.type = string_of(*type, at(field, "type"));
  if (auto tags = member(j, "tags"))
    e.tags = strings_of(*tags, at(field, "tags"));
  if (auto data = member(j, "data"))
    e.data = bytes_of(*data, at(field, "data"));
  if (auto metadata = member(j, "metadata"))
    e.metadata = bytes_of(*metadata, at(field, "metadata"));
  return e;
}

job_request parse_job(const json& j, std::string_view field) {
  // A job of an append is "jobs[i]"; the body of POST /v1/jobs has none.
  auto name = [field](std::string_view key) {
    return field.empty() ? std::string{key} : at(field, key);
  };
  object(j, field.empty() ? std::string_view{"body"} : field);
  job_request job;
  auto kind = member(j, "kind");
  if (!kind)
    bad(name("kind"), "is required");
  job.kind = string_of(*kind, name("kind"));
  if (auto queue = member(j, "queue"))
    job.queue = string_of(*queue, name("queue"));
  // Any JSON value; stored as jsonb.
  if (auto args = member(j, "args"))
    job.args = dump(*args);
  if (auto priority = member(j, "priority"))
    job.priority = clamped_integer_of<int>(*priority, name("priority"));
  // Both are lower bounds of when it may run (the store takes the later).
  if (auto run_at = member(j, "run_at")) {
    auto f = name("run_at");
    auto text = string_of(*run_at, f);
    job.run_at_us = parse_rfc3339(text);
    if (!job.run_at_us)
      bad(f, "must be an RFC 3339 date-time such as "
             "\"2026-12-01T12:00:00Z\", got \""
               + text + "\"");
  }
  if (auto delay = member(j, "delay_ms"))
    job.delay_ms = clamped_integer_of<std::int64_t>(*delay, name("delay_ms"));
  if (auto attempts = member(j, "max_attempts"))
    job.max_attempts = clamped_integer_of<int>(*attempts, name("max_attempts"));
  if (auto key = member(j, "unique_key"))
    job.unique_key = string_of(*key, name("unique_key"));
  return job;
}

append_request parse_append(const json& j) {
  object(j, "body");
  append_request req;
  auto events = member(j, "events");
  if (!events)
    bad("events", "is required");
  if (!events->is_array())
    bad("events", "must be an array");
  req.events.reserve(events->size());
  for (std::size_t i = 0; i < events->size(); ++i)
    req.events.push_back(parse_event((*events)[i], at("events", i)));
  if (auto c = member(j, "condition")) {
    object(*c, "condition");
    append_condition cond;
    auto q = member(*c, "failIfEventsMatch");
    if (!q)
      bad("condition.failIfEventsMatch", "is required");
    cond.fail_if_events_match = parse_query(*q, "condition.failIfEventsMatch");
    if (auto after = member(*c, "after"))
      cond.after = position_of(*after, "condition.after");
    req.condition = std::move(cond);
  }
  if (auto jobs = member(j, "jobs")) {
    if (!jobs->is_array())
      bad("jobs", "must be an array");
    req.jobs.reserve(jobs->size());
    for (std::size_t i = 0; i < jobs->size(); ++i)
      req.jobs.push_back(parse_job((*jobs)[i], at("jobs", i)));
  }
  return req;
}

json to_json(const sequenced_event& e, bool with_metadata, bool binary) {
  json j = json::object();
  j["type"] = e.event.type;
  j["tags"] = e.event.tags;
  j["data"] = binary ? binary_of(e.event.data) : json(e.event.data);
  j["position"] = e.position;
  if (with_metadata && !e.event.metadata.empty())
    j["metadata"] = binary ? binary_of(e.event.metadata)
                           : json(e.event.metadata);
  return j;
}

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

void append_json_string(std::string& out, std::string_view s) {
  // Bytes past ASCII may be invalid UTF-8, which the dump replaces in its
  // own way: leave those strings to it.
  for (unsigned char c : s)
    if (c >= 0x80) {
      out += dump(json(s));
      return;
    }
  out += '"';
  auto clean = s.begin();
  auto flush = [&](std::string_view::iterator to) {
    out.append(clean, to);
  };
  for (auto i = s.begin(); i != s.end(); ++i) {
    auto c = static_cast<unsigned char>(*i);
    if (c >= 0x20 && c != '"' && c != '\\')
      continue;
    flush(i);
    clean = i + 1;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default: {
        static constexpr char hex[] = "0123456789abcdef";
        out += "\\u00";
        out += hex[c >> 4];
        out += hex[c & 0xF];
      }
    }
  }
  flush(s.end());
  out += '"';
}

void append_json(std::string& out, const sequenced_event& e, bool with_metadata,
                 std::optional<std::uint64_t> prev) {
  append_json(out, e, event_json_keys{with_metadata, prev, {}, std::nullopt});
}

void append_json(std::string& out, const sequenced_event& e,
                 const event_json_keys& keys) {
  // The keys in the order the dump sorts them.
  out += "{\"data\":";
  append_json_string(out, e.event.data);
  if (!keys.kind.empty()) {
    out += ",\"kind\":";
    append_json_string(out, keys.kind);
  }
  if (keys.metadata && !e.event.metadata.empty()) {
    out += ",\"metadata\":";
    append_json_string(out, e.event.metadata);
  }
  char digits[24];
  auto number = [&](std::uint64_t n) {
    out.append(digits, std::to_chars(digits, digits + sizeof digits, n).ptr);
  };
  out += ",\"position\":";
  number(e.position);
  if (keys.prev) {
    out += ",\"prev\":";
    number(*keys.prev);
  }
  if (keys.sub) {
    out += ",\"sub\":";
    append_json_string(out, *keys.sub);
  }
  out += ",\"tags\":[";
  for (std::size_t i = 0; i < e.event.tags.size(); ++i) {
    if (i > 0)
      out += ',';
    append_json_string(out, e.event.tags[i]);
  }
  out += "],\"type\":";
  append_json_string(out, e.event.type);
  out += '}';
}

} // namespace dcbd::http
