// JSON forms of the DCB model for the HTTP API (the dcb.events contract and
// /v1). Parsing checks shapes and types and names the offending field;
// limits and normalization are the store's validation (store/validation).
// Binary (msgpack) bodies become the same documents in runtime/wire_codec.
//
//   query          {"items": [{"types": [str...], "tags": [str...]}...]}
//   read options   {"from": uint, "limit": uint, "backwards": bool}
//   event          {"type": str, "tags": [str...], "data": str,
//                   "metadata": str}           (tags, data, metadata optional)
//   append         {"events": [event...],
//                   "condition": {"failIfEventsMatch": query, "after": uint},
//                   "jobs": [job...]}              (condition, jobs optional)
//   job            {"queue": str, "kind": str, "args": any JSON value,
//                   "priority": int, "run_at": RFC 3339 str,
//                   "delay_ms": int, "max_attempts": int,
//                   "unique_key": str}             (only kind required;
//                                                   run_at and delay_ms are
//                                                   lower bounds: the later)
//   sequenced      {"type", "tags", "data", "position"}
#pragma once

#include "store/model.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace dcbd::http {

using json = nlohmann::json;

/// Parses JSON text. Throws `store_error(invalid_argument)` naming `field`
/// and the parser's reason on malformed input.
json parse_json(std::string_view text, std::string_view field);

/// The parsers below throw `store_error(invalid_argument)` naming the field
/// (e.g. "query.items[1].tags[0] must be a string").
query parse_query(const json& j, std::string_view field);
read_options parse_read_options(const json& j, std::string_view field);
event parse_event(const json& j, std::string_view field);
/// A job's fields (args serialized to JSON text, run_at parsed), for the
/// jobs of an append (`field` "jobs[0]": "jobs[0].kind ...") and the body
/// of POST /v1/jobs (`field` empty: "kind ..."). `run_at` and `delay_ms`
/// may come together: each is a lower bound of when the job may run.
/// Integers are clamped to their C++ type; bounds are checked by the
/// store's validation (store/job_model.hpp), which names the range.
job_request parse_job(const json& j, std::string_view field);
append_request parse_append(const json& j);

/// `{type, tags, data, position}`; with `metadata` when `with_metadata` and
/// the event has some. With `binary`, data and metadata are binary values
/// (for msgpack); otherwise strings, where bytes that are not UTF-8 become
/// U+FFFD when dumped (use msgpack for binary data).
json to_json(const sequenced_event& e, bool with_metadata = false,
             bool binary = false);

/// Serializes `j` compactly, replacing invalid UTF-8 instead of throwing.
std::string dump(const json& j);

/// Appends to `out` exactly `dump(to_json(e, with_metadata))`, without
/// building the json: the read paths format thousands of events a second.
/// With `prev`, that key too (as a subscription's event frame has it).
void append_json(std::string& out, const sequenced_event& e,
                 bool with_metadata = false,
                 std::optional<std::uint64_t> prev = std::nullopt);

/// The keys `append_json` may add to an event's object besides its own.
struct event_json_keys {
  bool metadata = false;
  std::optional<std::uint64_t> prev;
  /// "kind" (a subscription's NDJSON / WebSocket frame), when not empty.
  std::string_view kind;
  /// "sub" (a WebSocket frame: the subscription's name), when given.
  std::optional<std::string_view> sub;
};

/// Appends exactly `dump` of `to_json(e, keys.metadata)` with the other
/// keys of `keys` set, without building the json.
void append_json(std::string& out, const sequenced_event& e,
                 const event_json_keys& keys);

/// Appends `s` to `out` as a JSON string, exactly as `dump(json(s))`.
void append_json_string(std::string& out, std::string_view s);

} // namespace dcbd::http
