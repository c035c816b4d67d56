// dcbd_demo: the course-subscription domain against a running node, through
// the HTTP API only (the dcb.events routes), with many concurrent students.
//
// Each subscription is the DCB loop done by a client: read what the rules
// depend on (the course's definition and subscriptions, the student's
// subscriptions), decide, and append with the condition "fail if any event
// matching that read appeared after the last one I saw". On a failed
// condition the client reads and decides again. At the end the demo counts
// the stored subscriptions per course and per student and checks the rules.
//
//   dcbd_demo [--url URL] [--students N] [--courses N] [--capacity N]
//             [--max-courses N] [--tries N] [--clients N]
#include "runtime/http_client.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using dcbd::client::connection;
using dcbd::client::url_encode;
using json = nlohmann::json;
using clock_type = std::chrono::steady_clock;

struct settings {
  dcbd::client::endpoint node
    = dcbd::client::parse_url("http://127.0.0.1:8080");
  int students = 2000;
  int courses = 40;
  int capacity = 40;
  int max_courses = 3;
  int tries = 3;
  int clients = 32;
};

struct counters {
  std::atomic<long> accepted{0};
  std::atomic<long> conflicts{0};
  std::atomic<long> full{0};
  std::atomic<long> too_many{0};
  std::atomic<long> already{0};
  std::atomic<long> gave_up{0};
  std::atomic<long> errors{0};
  std::atomic<long> done{0};
};

json tagged(std::vector<std::string> types, std::string tag) {
  return json{{"types", std::move(types)}, {"tags", {std::move(tag)}}};
}

std::string course_tag(const std::string& c) {
  return "course:" + c;
}

std::string student_tag(const std::string& s) {
  return "student:" + s;
}

// Defines a course unless it exists (the condition makes that atomic).
bool define_course(connection& conn, const std::string& course, int capacity) {
  json query{{"items", {tagged({"CourseDefined"}, course_tag(course))}}};
  json body{
    {"events",
     {{{"type", "CourseDefined"},
       {"tags", {course_tag(course)}},
       {"data", json{{"course", course}, {"capacity", capacity}}.dump()}}}},
    {"condition", {{"failIfEventsMatch", query}}}};
  auto [status, text] = conn.call("POST", "/append", body.dump());
  return status == 200;
}

// The DCB loop for one subscription.
void subscribe(connection& conn, const settings& s, counters& n,
               const std::string& student, const std::string& course) {
  json query{
    {"items",
     {tagged({"CourseDefined", "StudentSubscribed"}, course_tag(course)),
      tagged({"StudentSubscribed"}, student_tag(student))}}};
  auto read_target = "/read?query=" + url_encode(query.dump());
  for (int attempt = 0; attempt < 20; ++attempt) {
    auto [status, text] = conn.call("GET", read_target);
    if (status != 200) {
      ++n.errors;
      return;
    }
    auto events = json::parse(text);
    int capacity = 0;
    int taken = 0;
    int mine = 0;
    bool here = false;
    std::optional<std::uint64_t> last;
    for (auto& e : events) {
      last = e["position"].get<std::uint64_t>();
      auto data = json::parse(e["data"].get<std::string>());
      if (e["type"] == "CourseDefined") {
        capacity = data["capacity"];
        continue;
      }
      if (data["course"] == course)
        ++taken;
      if (data["student"] == student) {
        ++mine;
        here = here || data["course"] == course;
      }
    }
    if (here) {
      ++n.already;
      return;
    }
    if (taken >= capacity) {
      ++n.full;
      return;
    }
    if (mine >= s.max_courses) {
      ++n.too_many;
      return;
    }
    json condition{{"failIfEventsMatch", query}};
    if (last)
      condition["after"] = *last;
    json body{
      {"events",
       {{{"type", "StudentSubscribed"},
         {"tags", {course_tag(course), student_tag(student)}},
         {"data", json{{"student", student}, {"course", course}}.dump()}}}},
      {"condition", condition}};
    auto [st, reply] = conn.call("POST", "/append", body.dump());
    if (st != 200) {
      ++n.errors;
      return;
    }
    if (!json::parse(reply)["appendConditionFailed"].get<bool>()) {
      ++n.accepted;
      return;
    }
    ++n.conflicts;
  }
  ++n.gave_up;
}

int usage() {
  std::cerr << "usage: dcbd_demo [--url http://HOST:PORT] [--students N] "
               "[--courses N] [--capacity N] [--max-courses N] [--tries N] "
               "[--clients N]\n";
  return 2;
}

} // namespace

namespace {

// The node's `course_seats` projector (dcbd-courses) against the demo's own
// count: waits until the projector has applied the head, then compares
// every course. A node without the projector (plain dcbd) skips this.
bool check_projection(const settings& s,
                      const std::vector<std::string>& courses,
                      std::map<std::string, int>& counted) {
  try {
    connection conn{s.node};
    auto [hs, head_text] = conn.call("GET", "/v1/head");
    if (hs != 200)
      throw std::runtime_error("GET /v1/head: HTTP " + std::to_string(hs));
    auto head = json::parse(head_text)["head"].get<std::uint64_t>();
    auto until = clock_type::now() + std::chrono::seconds{30};
    json status;
    for (;;) {
      auto [st, text] = conn.call("GET", "/v1/projectors/course_seats");
      if (st == 404) {
        std::cout << "\n(no course_seats projector on this node: run "
                     "dcbd-courses to compare its read model)\n";
        return true;
      }
      if (st == 200) {
        status = json::parse(text);
        if (status["position"].get<std::uint64_t>() >= head)
          break;
      }
      if (clock_type::now() > until) {
        std::cout << "\nprojector course_seats: did not reach the head " << head
                  << " within 30 s: " << text << "\n";
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{50});
    }
    auto [rs, rm_text] = conn.call("GET", "/v1/course-seats");
    if (rs != 200)
      throw std::runtime_error("GET /v1/course-seats: HTTP "
                               + std::to_string(rs) + ": " + rm_text);
    auto seats = json::parse(rm_text)["seats"];
    int mismatches = 0;
    for (auto& c : courses) {
      auto projected = seats.contains(c) ? seats[c].get<int>() : 0;
      if (projected != counted[c]) {
        ++mismatches;
        std::printf("  %-24s projected %d, counted %d  MISMATCH\n", c.c_str(),
                    projected, counted[c]);
      }
    }
    std::printf(
      "\nprojector course_seats (%s on %s, position %llu, %llu "
      "dead letters): %zu courses equal the demo's count  %s\n",
      status["state"].get<std::string>().c_str(),
      status["owner"].get<std::string>().c_str(),
      static_cast<unsigned long long>(status["position"].get<std::uint64_t>()),
      static_cast<unsigned long long>(
        status["dead_letters"].get<std::uint64_t>()),
      courses.size() - static_cast<std::size_t>(mismatches),
      mismatches == 0 ? "ok" : "MISMATCH");
    return mismatches == 0;
  } catch (const std::exception& e) {
    std::cerr << "demo: cannot compare the projection: " << e.what() << "\n";
    return false;
  }
}

// The confirmations of dcbd-courses (its trigger makes one
// send_confirmation job per StudentSubscribed event): waits until the
// queue has nothing left to do, then checks that each of this run's
// `stored` subscriptions has exactly one completed job. A node without the
// trigger skips this.
bool check_confirmations(const settings& s, const std::string& run,
                         long stored) {
  try {
    connection conn{s.node};
    auto until = clock_type::now() + std::chrono::seconds{30};
    for (;;) {
      auto [st, text] = conn.call("GET", "/v1/triggers");
      if (st == 404 || text.find("confirm_subscription") == std::string::npos) {
        std::cout << "(no confirm_subscription trigger on this node: run "
                     "dcbd-courses to check the confirmation jobs)\n";
        return true;
      }
      auto [qs, qtext] = conn.call("GET", "/v1/queues");
      if (qs != 200)
        throw std::runtime_error("GET /v1/queues: HTTP " + std::to_string(qs));
      long pending = 0;
      for (auto& q : json::parse(qtext))
        if (q["queue"] == "confirmations")
          for (const char* state :
               {"available", "scheduled", "running", "retryable"})
            pending += q[state].get<long>();
      if (pending == 0)
        break;
      if (clock_type::now() > until) {
        std::cout << "confirmations: " << pending
                  << " jobs still to do after 30 s\n";
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{100});
    }
    // This run's jobs, newest first, a page at a time.
    std::map<std::uint64_t, int> per_event;
    long completed = 0, other = 0;
    std::string before;
    for (;;) {
      auto [st, text] = conn.call("GET", "/v1/jobs?queue=confirmations&limit="
                                         "1000"
                                           + before);
      if (st != 200)
        throw std::runtime_error("GET /v1/jobs: HTTP " + std::to_string(st));
      auto page = json::parse(text);
      if (page.empty())
        break;
      for (auto& j : page) {
        before = "&before=" + std::to_string(j["id"].get<long>());
        auto& args = j["args"];
        if (!args.is_object() || !args.contains("event"))
          continue;
        auto data = json::parse(args["event"]["data"].get<std::string>(),
                                nullptr, false);
        if (!data.is_object() || !data.contains("course")
            || data["course"].get<std::string>().rfind("r" + run + "-", 0) != 0)
          continue;
        ++per_event[args["event"]["position"].get<std::uint64_t>()];
        (j["state"] == "completed" ? completed : other) += 1;
      }
    }
    long doubles = 0;
    for (auto& [pos, n] : per_event)
      doubles += n > 1 ? 1 : 0;
    bool ok = static_cast<long>(per_event.size()) == stored && doubles == 0
              && other == 0 && completed == stored;
    std::printf("confirmation jobs: %ld completed for %ld subscriptions, %ld "
                "not completed, %ld events with more than one  %s\n",
                completed, stored, other, doubles, ok ? "ok" : "MISMATCH");
    return ok;
  } catch (const std::exception& e) {
    std::cerr << "demo: cannot check the confirmations: " << e.what() << "\n";
    return false;
  }
}

} // namespace

int main(int argc, char** argv) {
  settings s;
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    for (std::size_t i = 0; i < args.size(); ++i) {
      auto next = [&]() -> std::string {
        if (i + 1 >= args.size())
          throw std::invalid_argument(args[i] + " needs a value");
        return args[++i];
      };
      auto number = [&]() {
        auto n = std::stoi(next());
        if (n <= 0)
          throw std::invalid_argument(args[i - 1] + " must be positive");
        return n;
      };
      if (args[i] == "--url") {
        s.node = dcbd::client::parse_url(next());
      } else if (args[i] == "--students") {
        s.students = number();
      } else if (args[i] == "--courses") {
        s.courses = number();
      } else if (args[i] == "--capacity") {
        s.capacity = number();
      } else if (args[i] == "--max-courses") {
        s.max_courses = number();
      } else if (args[i] == "--tries") {
        s.tries = number();
      } else if (args[i] == "--clients") {
        s.clients = number();
      } else {
        return usage();
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "dcbd_demo: " << e.what() << "\n";
    return usage();
  }

  // A run id keeps the courses of this run apart from earlier runs.
  auto run
    = std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count());
  std::vector<std::string> courses;
  for (int c = 0; c < s.courses; ++c)
    courses.push_back("r" + run + "-c" + std::to_string(c));

  std::cout << "demo: " << s.students << " students, " << s.courses
            << " courses of " << s.capacity << " seats, at most "
            << s.max_courses << " courses per student, " << s.tries
            << " tries each, " << s.clients << " concurrent clients\n"
            << "demo: " << s.students * s.tries << " subscription attempts for "
            << s.courses * s.capacity << " seats (run " << run << ")\n";
  try {
    connection conn{s.node};
    for (auto& c : courses)
      if (!define_course(conn, c, s.capacity)) {
        std::cerr << "demo: cannot define course " << c << "\n";
        return 1;
      }
  } catch (const std::exception& e) {
    std::cerr << "demo: " << e.what() << "\n";
    return 1;
  }

  // The work: every student tries `tries` courses, in random order.
  std::vector<std::pair<std::string, std::string>> work;
  std::mt19937 rng{42};
  std::uniform_int_distribution<int> pick(0, s.courses - 1);
  for (int t = 0; t < s.tries; ++t)
    for (int st = 0; st < s.students; ++st)
      work.emplace_back("r" + run + "-s" + std::to_string(st),
                        courses[static_cast<std::size_t>(pick(rng))]);
  std::shuffle(work.begin(), work.end(), rng);

  counters n;
  std::atomic<std::size_t> next{0};
  auto t0 = clock_type::now();
  std::vector<std::thread> clients;
  for (int k = 0; k < s.clients; ++k)
    clients.emplace_back([&] {
      connection conn{s.node};
      for (;;) {
        auto i = next++;
        if (i >= work.size())
          return;
        try {
          subscribe(conn, s, n, work[i].first, work[i].second);
        } catch (const std::exception&) {
          ++n.errors;
        }
        ++n.done;
      }
    });
  std::atomic<bool> finished{false};
  std::thread progress([&] {
    long last_accepted = 0;
    auto last_t = clock_type::now();
    // Confirmation jobs done (dcbd-courses), from GET /v1/queues.
    std::optional<connection> queues;
    try {
      queues.emplace(s.node);
    } catch (const std::exception&) {
      // shown without jobs
    }
    auto jobs_done = [&]() -> long {
      try {
        if (!queues)
          return -1;
        auto [st, text] = queues->call("GET", "/v1/queues");
        if (st != 200)
          return -1;
        for (auto& q : json::parse(text))
          if (q["queue"] == "confirmations")
            return q["completed"].get<long>();
      } catch (const std::exception&) {
        queues.reset();
      }
      return -1;
    };
    long last_jobs = jobs_done();
    while (!finished) {
      std::this_thread::sleep_for(std::chrono::milliseconds{500});
      auto now = clock_type::now();
      auto secs = std::chrono::duration<double>(now - last_t).count();
      auto acc = n.accepted.load();
      auto jobs = jobs_done();
      char line[320];
      std::snprintf(line, sizeof line,
                    "\r  %5.1f s  %5ld/%zu done  %6.0f events/s  subscribed "
                    "%ld  conflicts (retried) %ld  rejected %ld  ",
                    std::chrono::duration<double>(now - t0).count(),
                    n.done.load(), work.size(), (acc - last_accepted) / secs,
                    acc, n.conflicts.load(),
                    n.full.load() + n.too_many.load() + n.already.load());
      std::cout << line;
      if (jobs >= 0 && last_jobs >= 0)
        std::printf("%6.0f confirmations/s  ", (jobs - last_jobs) / secs);
      std::cout << std::flush;
      last_jobs = jobs;
      last_accepted = acc;
      last_t = now;
    }
  });
  for (auto& c : clients)
    c.join();
  finished = true;
  progress.join();
  auto secs = std::chrono::duration<double>(clock_type::now() - t0).count();
  std::cout << "\n\ndemo: " << work.size() << " attempts in " << secs
            << " s: " << n.accepted << " subscribed, " << n.conflicts
            << " conflicts retried, rejected: " << n.full << " course full, "
            << n.too_many << " student at the limit, " << n.already
            << " already subscribed; " << n.gave_up << " gave up, " << n.errors
            << " errors\n";

  // The invariant check, on what is stored.
  std::map<std::string, int> per_course;
  std::map<std::string, int> per_student;
  std::map<std::pair<std::string, std::string>, int> pairs;
  try {
    connection conn{s.node};
    json query{{"items", {{{"types", {"StudentSubscribed"}}}}}};
    auto [status, text]
      = conn.call("GET", "/v1/read?query=" + url_encode(query.dump()));
    if (status != 200)
      throw std::runtime_error("HTTP " + std::to_string(status) + ": " + text);
    std::istringstream lines{text};
    std::string line;
    while (std::getline(lines, line)) {
      auto j = json::parse(line);
      if (!j.contains("type"))
        continue;
      auto data = json::parse(j["data"].get<std::string>());
      std::string course = data["course"];
      std::string student = data["student"];
      if (course.rfind("r" + run + "-", 0) != 0)
        continue;
      ++per_course[course];
      ++per_student[student];
      ++pairs[{student, course}];
    }
  } catch (const std::exception& e) {
    std::cerr << "demo: cannot read the subscriptions back: " << e.what()
              << "\n";
    return 1;
  }
  bool ok = true;
  std::cout << "\ninvariant check (from the stored events):\n";
  for (auto& c : courses) {
    auto taken = per_course[c];
    bool fine = taken <= s.capacity;
    ok = ok && fine;
    std::printf("  %-24s %3d / %3d seats  %s\n", c.c_str(), taken, s.capacity,
                fine ? "ok" : "OVER CAPACITY");
  }
  int worst = 0;
  for (auto& [student, count] : per_student)
    worst = std::max(worst, count);
  int doubles = 0;
  for (auto& [pair, count] : pairs)
    doubles += count > 1 ? 1 : 0;
  long stored = 0;
  for (auto& [c, count] : per_course)
    stored += count;
  std::printf("  most courses of one student: %d (limit %d)  %s\n", worst,
              s.max_courses, worst <= s.max_courses ? "ok" : "OVER THE LIMIT");
  std::printf("  double subscriptions: %d  %s\n", doubles,
              doubles == 0 ? "ok" : "BROKEN");
  std::printf("  stored subscriptions: %ld, acknowledged: %ld  %s\n", stored,
              n.accepted.load(), stored == n.accepted ? "ok" : "MISMATCH");
  ok = ok && worst <= s.max_courses && doubles == 0 && stored == n.accepted;
  ok = check_projection(s, courses, per_course) && ok;
  ok = check_confirmations(s, run, stored) && ok;
  std::cout << (ok ? "demo: every rule holds\n" : "demo: A RULE IS BROKEN\n");
  return ok ? 0 : 1;
}
