// Test support: the example node `dcbd-courses` (projector course_seats) as
// seen over HTTP and in its schema, shared by the projector and cluster
// tests.
#pragma once

#include "store/pg_projector.hpp"
#include "tests/runtime/http_test_client.hpp"
#include "tests/support/pg_fixture.hpp"

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

namespace dcbd::test::course_node {

using http_support::client;
using http_support::json;
using namespace std::chrono_literals;

inline json subscribe_event(const std::string& student,
                            const std::string& course) {
  return http_support::ev(
    "StudentSubscribed", {"student:" + student, "course:" + course},
    json{{"student", student}, {"course", course}}.dump());
}

/// The projector's status on a node, or null.
inline json status(std::uint16_t port) {
  try {
    client c{port};
    auto r = c.get("/v1/projectors/course_seats");
    return r.status == 200 ? json::parse(r.body) : json{};
  } catch (const std::exception&) {
    return json{};
  }
}

/// Waits until the node's projector runs and has applied the head.
inline bool caught_up(std::uint16_t port,
                      std::chrono::seconds d = std::chrono::seconds{30}) {
  auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
    try {
      client c{port};
      auto head
        = json::parse(c.get("/v1/head").body)["head"].get<std::uint64_t>();
      auto s = status(port);
      if (s.is_object() && s["state"] == "running"
          && s["position"].get<std::uint64_t>() >= head)
        return true;
    } catch (const std::exception&) {
      // not up yet
    }
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

/// The read model: "course=n,..." in course order.
inline std::string seats(const std::string& schema) {
  return exec_sql("SELECT coalesce(string_agg(course || '=' || subscribed, "
                  "',' ORDER BY course), '') FROM "
                  + schema + ".course_seats");
}

/// Subscriptions per course counted from the events themselves (data that
/// is not a JSON object with a string "course" counts for none; CASE keeps
/// the cast away from data that is no JSON at all).
inline std::string recount(const std::string& schema) {
  return exec_sql(
    "SELECT coalesce(string_agg(course || '=' || n, ',' ORDER BY course), "
    "'') FROM (SELECT course, count(*) AS n FROM (SELECT CASE WHEN "
    "convert_from(data, 'UTF8') LIKE '{%' THEN CASE WHEN "
    "jsonb_typeof(convert_from(data, 'UTF8')::jsonb -> 'course') = "
    "'string' THEN convert_from(data, 'UTF8')::jsonb ->> 'course' END END "
    "AS course FROM "
    + schema
    + ".events WHERE type = 'StudentSubscribed') e WHERE course IS NOT "
      "NULL GROUP BY course) c");
}

/// The application names of the sessions holding the projector's advisory
/// lock, comma-separated (other tests' locks are not counted).
inline std::string lock_holders(const std::string& schema) {
  auto key = projector_lock_key(schema, "course_seats");
  return exec_sql(
    "SELECT coalesce(string_agg(a.application_name, ',' ORDER BY "
    "a.application_name), '') FROM pg_locks l JOIN pg_stat_activity a USING "
    "(pid) WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND ((l.classid::bigint << 32) | l.objid::bigint) = "
    + std::to_string(key));
}

} // namespace dcbd::test::course_node
