// A small store demo: `./dev run` runs it until the node exists.
#include "store/pg_store.hpp"

#include <cstdlib>
#include <iostream>

int main() {
  using namespace dcbd;
  const char* dsn = std::getenv("DCB_POSTGRES_DSN");
  if (!dsn || !*dsn) {
    std::cerr << "dcbd_store_demo: set DCB_POSTGRES_DSN\n";
    return 2;
  }
  try {
    pg_config cfg;
    cfg.dsn = dsn;
    cfg.schema = "dcb_demo";
    pg_event_store store{cfg};
    std::cout << "store demo on schema dcb_demo, head " << store.head() << "\n";
    // Register a course with two places, unless it exists.
    query course{{query_item{{}, {"course:c1"}}}};
    auto model = store.read(course);
    if (model.events.empty())
      store.append(
        {event{"CourseDefined", {"course:c1"}, R"({"places":2})", ""}},
        append_condition{course, model.head});
    // Three students try to subscribe; the capacity rule is a DCB condition
    // on the course's subscriptions.
    for (const char* student : {"s1", "s2", "s3"}) {
      query subs{{query_item{{"StudentSubscribed"}, {"course:c1"}}}};
      auto state = store.read(subs);
      if (state.events.size() >= 2) {
        std::cout << "  " << student << ": course c1 is full ("
                  << state.events.size() << " subscribed)\n";
        continue;
      }
      try {
        auto pos = store.append(
          {event{"StudentSubscribed",
                 {"course:c1", std::string{"student:"} + student},
                 "{}",
                 ""}},
          append_condition{subs, state.head});
        std::cout << "  " << student << ": subscribed at position " << pos
                  << "\n";
      } catch (const store_error& e) {
        std::cout << "  " << student << ": " << to_string(e.code()) << ": "
                  << e.what() << "\n";
      }
    }
    std::cout << "head is now " << store.head() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "dcbd_store_demo: " << e.what() << "\n";
    return 1;
  }
}
