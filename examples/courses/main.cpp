// dcbd-courses: a full dcbd node plus one projector, `course_seats` (API.md
// §6). It is the template for embedding dcbd: copy it, change the query and
// the handler.
//
// For each StudentSubscribed event whose data is a JSON object with a
// string "course", the projector adds 1 to
// <schema>.course_seats(course text primary key, subscribed bigint), in the
// transaction that also moves its checkpoint (exactly_once): a crash at any
// point neither loses nor repeats a subscription. Data that is not such an
// object makes the handler throw: the batch is rolled back and retried,
// then the event is isolated and parked in the dead letters, and the
// projector goes on with the next one.
//
// A trigger makes one `send_confirmation` job per subscription, and four
// in-process workers "send" each by recording it in
// <schema>.confirmations(job, position) in the job's own transaction.
//
// The node also serves the read model: GET /v1/course-seats ->
// {"position": P, "seats": {"course": n, ...}}, where every subscription at
// or below P is counted.
//
// And the rules, as commands for HTTP clients (POST /v1/commands/{name}):
// `define_course` {"course", "capacity"} (once per course) and `subscribe`
// {"student", "course"} (a defined course with a free seat, once per
// student). Each decides on the events of its course (and student) and
// appends under their condition, so concurrent clients never overfill a
// course.
//
// Same environment and options as dcbd (`dcbd-courses --help`).
#include "actors/jobs.hpp"
#include "actors/projector.hpp"
#include "runtime/command_registry.hpp"
#include "runtime/http_routes.hpp"
#include "runtime/node.hpp"

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <map>
#include <optional>
#include <stdexcept>
#include <string>

namespace {

using json = nlohmann::json;

// The course a StudentSubscribed event names; throws when it names none.
std::string course_of(const dcbd::sequenced_event& e) {
  auto data = json::parse(e.event.data, nullptr, false);
  if (!data.is_object() || !data.contains("course")
      || !data["course"].is_string())
    throw std::invalid_argument("event " + std::to_string(e.position)
                                + ": data is not an object with a string "
                                  "\"course\"");
  return data["course"].get<std::string>();
}

dcbd::projector_spec course_seats(const std::string& schema) {
  auto table = schema + ".course_seats";
  dcbd::projector_spec spec;
  spec.name = "course_seats";
  spec.query = dcbd::query{{dcbd::query_item{{"StudentSubscribed"}, {}}}};
  spec.mode = dcbd::projector_delivery::exactly_once;
  // Runs once per instance start, on the owner only.
  spec.on_start = [table](pqxx::work& tx) {
    tx.exec("CREATE TABLE IF NOT EXISTS " + table
            + " (course text PRIMARY KEY, subscribed bigint NOT NULL)");
  };
  spec.handle = [table](pqxx::work& tx, const dcbd::event_batch& events,
                        const dcbd::projector_context&) {
    // One statement per batch: the counts of the batch, added up.
    std::map<std::string, long> added;
    for (auto& e : events)
      ++added[course_of(e)];
    std::string courses, counts;
    for (auto& [course, n] : added) {
      courses += (courses.empty() ? "" : ",") + tx.quote(course);
      counts += (counts.empty() ? "" : ",") + std::to_string(n);
    }
    tx.exec("INSERT INTO " + table
            + " (course, subscribed) SELECT * FROM unnest(ARRAY[" + courses
            + "]::text[], ARRAY[" + counts
            + "]::bigint[]) ON CONFLICT (course) DO UPDATE SET subscribed = "
            + table + ".subscribed + excluded.subscribed");
  };
  spec.on_reset = [table](pqxx::work& tx) {
    tx.exec("CREATE TABLE IF NOT EXISTS " + table
            + " (course text PRIMARY KEY, subscribed bigint NOT NULL)");
    tx.exec("TRUNCATE " + table);
  };
  return spec;
}

// A confirmation per subscription: the trigger `confirm_subscription` makes
// one `send_confirmation` job (queue "confirmations") per StudentSubscribed
// event, also across crashes; the worker "sends" it by recording it in
// <schema>.confirmations(job, position) in the job's own transaction, so the
// record and the job's completion commit together (exactly-once effect).
dcbd::job_worker_spec confirmations(const std::string& table) {
  dcbd::job_worker_spec w;
  w.kind = "send_confirmation";
  w.queue = "confirmations";
  w.concurrency = 4;
  w.handle_tx = [table](pqxx::work& tx, const dcbd::job& j) {
    auto args = json::parse(j.args, nullptr, false);
    std::optional<long> position;
    if (args.is_object() && args.contains("event")
        && args["event"].contains("position"))
      position = args["event"]["position"].get<long>();
    if (position)
      tx.exec_params("INSERT INTO " + table
                       + " (job, position) VALUES ($1, $2)",
                     j.id, *position);
    else
      tx.exec_params("INSERT INTO " + table + " (job) VALUES ($1)", j.id);
    return dcbd::job_result::ok();
  };
  return w;
}

dcbd::job_trigger confirm_subscription() {
  dcbd::job_trigger t;
  t.name = "confirm_subscription";
  t.query = dcbd::query{{dcbd::query_item{{"StudentSubscribed"}, {}}}};
  t.queue = "confirmations";
  t.kind = "send_confirmation";
  return t;
}

// -- the rules, as commands ---------------------------------------------------

std::string course_tag(const std::string& course) {
  return "course:" + course;
}

std::string student_tag(const std::string& student) {
  return "student:" + student;
}

// A non-empty string argument; throws for the client's 400.
std::string text_arg(const json& args, const char* key) {
  auto i = args.find(key);
  if (i == args.end() || !i->is_string() || i->get<std::string>().empty())
    throw std::invalid_argument(std::string{"\""} + key
                                + "\" must be a non-empty string");
  return i->get<std::string>();
}

struct course_state {
  bool defined = false;
  long capacity = 0;
  long subscribed = 0;
};

// A course's definition and its subscriptions.
dcbd::projector course_projector(const std::string& course) {
  return dcbd::make_projector(
    "course",
    dcbd::query{{dcbd::query_item{{"CourseDefined", "StudentSubscribed"},
                                  {course_tag(course)}}}},
    course_state{}, [](course_state& s, const dcbd::sequenced_event& e) {
      if (e.event.type == "CourseDefined") {
        s.defined = true;
        s.capacity = json::parse(e.event.data).value("capacity", 0L);
      } else {
        ++s.subscribed;
      }
    });
}

dcbd::command define_course(const json& args) {
  auto course = text_arg(args, "course");
  auto i = args.find("capacity");
  if (i == args.end() || !i->is_number_integer() || i->get<long>() < 1)
    throw std::invalid_argument("\"capacity\" must be a positive integer");
  auto capacity = i->get<long>();
  return dcbd::command{
    "define_course",
    {course_projector(course)},
    [course, capacity](const dcbd::decision_states& s) {
      if (s.get<course_state>("course").defined)
        return dcbd::verdict::reject("course '" + course + "' exists");
      return dcbd::verdict::accept(
        {dcbd::event{"CourseDefined",
                     {course_tag(course)},
                     json{{"course", course}, {"capacity", capacity}}.dump(),
                     {}}});
    }};
}

dcbd::command subscribe(const json& args) {
  auto student = text_arg(args, "student");
  auto course = text_arg(args, "course");
  auto already = dcbd::make_projector(
    "already",
    dcbd::query{{dcbd::query_item{{"StudentSubscribed"},
                                  {course_tag(course), student_tag(student)}}}},
    false, [](bool& yes, const dcbd::sequenced_event&) {
      yes = true;
    });
  return dcbd::command{
    "subscribe",
    {course_projector(course), std::move(already)},
    [student, course](const dcbd::decision_states& s) {
      auto& c = s.get<course_state>("course");
      if (!c.defined)
        return dcbd::verdict::reject("course '" + course + "' does not exist");
      if (s.get<bool>("already"))
        return dcbd::verdict::reject("student '" + student
                                     + "' is subscribed to '" + course
                                     + "' already");
      if (c.subscribed >= c.capacity)
        return dcbd::verdict::reject("course '" + course + "' is full");
      return dcbd::verdict::accept(
        {dcbd::event{"StudentSubscribed",
                     {course_tag(course), student_tag(student)},
                     json{{"course", course}, {"student", student}}.dump(),
                     {}}});
    }};
}

} // namespace

int main(int argc, char** argv) {
  return dcbd::run_node(argc, argv, [](dcbd::node& n) {
    n.projectors().add(course_seats(n.schema()));
    n.commands().add("define_course", define_course,
                     "defines a course: {\"course\", \"capacity\"}");
    n.commands().add("subscribe", subscribe,
                     "subscribes a student to a course with a free seat: "
                     "{\"student\", \"course\"}");
    {
      pqxx::connection conn{n.dsn()};
      pqxx::work tx{conn};
      // Nodes that start together would race on the catalog (IF NOT EXISTS
      // is no lock): one at a time.
      tx.exec("SELECT pg_advisory_xact_lock(hashtext('" + n.schema()
              + ".confirmations'))");
      tx.exec("CREATE TABLE IF NOT EXISTS " + n.schema()
              + ".confirmations (job bigint PRIMARY KEY, position bigint "
                "UNIQUE, at timestamptz NOT NULL DEFAULT now())");
      tx.commit();
    }
    n.jobs().add_worker(confirmations(n.schema() + ".confirmations"));
    // From position 0: every subscription ever gets its confirmation. A
    // trigger that exists already (another node made it) stays as it is.
    n.jobs().store().create_trigger(confirm_subscription(), 0);
    // GET /v1/course-seats: the read model with the checkpoint it is at.
    n.add_routes([&n](dcbd::http::route_env&) {
      return dcbd::http::route_table{
        {"/v1/course-seats", dcbd::http::bhttp::verb::get,
         [&n](const std::shared_ptr<dcbd::http::exchange>& x) {
           // A connection per request keeps the example short; a real read
           // model would use a pool (and not block an HTTP thread).
           pqxx::connection conn{n.dsn()};
           // One snapshot: the counts are exactly those at `position`.
           pqxx::transaction<pqxx::repeatable_read, pqxx::read_only> tx{conn};
           auto pos = tx.exec1("SELECT position FROM " + n.schema()
                               + ".projectors WHERE name = 'course_seats'")[0]
                        .as<long>();
           json seats = json::object();
           if (tx.exec1("SELECT to_regclass('" + n.schema()
                        + ".course_seats') IS NOT NULL")[0]
                 .as<bool>())
             for (auto row :
                  tx.exec("SELECT course, subscribed FROM " + n.schema()
                          + ".course_seats ORDER BY course"))
               seats[row[0].as<std::string>()] = row[1].as<long>();
           x->reply(200, {{"position", pos}, {"seats", seats}});
         }}};
    });
  });
}
