// The course-subscription example of Dynamic Consistency Boundaries
// (dcb.events, go-crablet) as dcbd commands.
//
// Events, with msgpack payloads:
//   CourseDefined      tags course:<id>                {course_id, capacity}
//   StudentSubscribed  tags course:<id>, student:<id>  {student_id, course_id}
//
// A command reads only what its rules need: the course's definition and
// subscriptions, and the student's subscriptions. The engine appends the
// command's events only if no event matching those reads was appended since
// they were made, and otherwise decides again on fresh state. So the rules hold
// however many commands run at once, without aggregates or locks.
#pragma once

#include "store/decision.hpp"
#include "store/payload.hpp"

#include <cstddef>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace courses {

// -- events -------------------------------------------------------------------

/// Payload of "CourseDefined".
struct course_defined {
  std::string course_id;
  int capacity = 0;
  MSGPACK_DEFINE_MAP(course_id, capacity);
};

/// Payload of "StudentSubscribed".
struct student_subscribed {
  std::string student_id;
  std::string course_id;
  MSGPACK_DEFINE_MAP(student_id, course_id);
};

inline std::string course_tag(const std::string& course_id) {
  return "course:" + course_id;
}

inline std::string student_tag(const std::string& student_id) {
  return "student:" + student_id;
}

/// Matches the events of `types` that carry `tag`.
inline dcbd::query tagged(std::vector<std::string> types, std::string tag) {
  return dcbd::query{{dcbd::query_item{std::move(types), {std::move(tag)}}}};
}

// -- projectors ---------------------------------------------------------------

/// What the rules need to know about one course.
struct course_state {
  bool defined = false;
  int capacity = 0;
  int subscriptions = 0;
};

/// Folds a course's definition and its subscriptions into a `course_state`.
inline dcbd::projector course_projector(const std::string& course_id) {
  return dcbd::make_projector(
    "course",
    tagged({"CourseDefined", "StudentSubscribed"}, course_tag(course_id)),
    course_state{}, [](course_state& s, const dcbd::sequenced_event& e) {
      if (e.event.type == "CourseDefined") {
        s.defined = true;
        s.capacity
          = dcbd::decode_payload<course_defined>(e.event.data).capacity;
      } else {
        ++s.subscriptions;
      }
    });
}

/// The courses one student is subscribed to.
struct student_state {
  std::set<std::string> courses;
};

/// Folds a student's subscriptions into a `student_state`.
inline dcbd::projector student_projector(const std::string& student_id) {
  return dcbd::make_projector(
    "student", tagged({"StudentSubscribed"}, student_tag(student_id)),
    student_state{}, [](student_state& s, const dcbd::sequenced_event& e) {
      auto sub = dcbd::decode_payload<student_subscribed>(e.event.data);
      s.courses.insert(sub.course_id);
    });
}

// -- commands -----------------------------------------------------------------

/// Defines a course with room for `capacity` students. Rejected if the course
/// exists already.
inline dcbd::command define_course(std::string course_id, int capacity) {
  return dcbd::command{
    "define_course",
    {course_projector(course_id)},
    [=](const dcbd::decision_states& s) {
      if (capacity <= 0)
        return dcbd::verdict::reject("capacity must be positive");
      if (s.get<course_state>("course").defined)
        return dcbd::verdict::reject("course '" + course_id
                                     + "' already exists");
      return dcbd::verdict::accept(
        {dcbd::make_event("CourseDefined", {course_tag(course_id)},
                          course_defined{course_id, capacity})});
    }};
}

/// Subscribes a student to a course. Rejected unless the course exists, the
/// student is not subscribed to it yet, it has a free seat, and the student
/// has fewer than `max_courses_per_student` courses.
inline dcbd::command subscribe(std::string student_id, std::string course_id,
                               std::size_t max_courses_per_student) {
  return dcbd::command{
    "subscribe",
    {course_projector(course_id), student_projector(student_id)},
    [=](const dcbd::decision_states& s) {
      auto& course = s.get<course_state>("course");
      auto& student = s.get<student_state>("student");
      if (!course.defined)
        return dcbd::verdict::reject("course '" + course_id
                                     + "' does not exist");
      if (student.courses.count(course_id) > 0)
        return dcbd::verdict::reject("student '" + student_id
                                     + "' is already subscribed to course '"
                                     + course_id + "'");
      if (course.subscriptions >= course.capacity)
        return dcbd::verdict::reject("course '" + course_id
                                     + "' is full (capacity "
                                     + std::to_string(course.capacity) + ")");
      if (student.courses.size() >= max_courses_per_student)
        return dcbd::verdict::reject(
          "student '" + student_id + "' already has "
          + std::to_string(student.courses.size()) + " courses (at most "
          + std::to_string(max_courses_per_student) + ")");
      return dcbd::verdict::accept({dcbd::make_event(
        "StudentSubscribed", {course_tag(course_id), student_tag(student_id)},
        student_subscribed{student_id, course_id})});
    }};
}

} // namespace courses
