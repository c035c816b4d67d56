// Commands end to end on a real PostgreSQL: the course-subscription domain,
// its rules under 100 concurrent clients (checked with SQL), retries, and
// what decide() may return. Failing user code and supervision:
// command_failure_test.cpp.
#include "tests/actors/command_support.hpp"

namespace dcbd::test {
namespace {

class Commands : public CommandsTest {
protected:
  void commands_see_the_other_node(engine& here, const engine_config& cfg);
  void ticks_lose_no_update(
    const std::function<
      std::future<caf::expected<command_outcome>>(engine&, command)>& run);
};

// -- the domain, one command at a time ----------------------------------------

TEST_F(Commands, DefineAndSubscribeAreAcceptedWithPositions) {
  auto& eng = start();
  auto def = eng.execute(courses::define_course("c1", 2));
  ASSERT_TRUE(def) << message_of(def.error());
  EXPECT_TRUE(def->accepted);
  EXPECT_EQ(def->rejection, "");
  EXPECT_EQ(def->first_position, 1u);
  EXPECT_EQ(def->last_position, 1u);
  EXPECT_EQ(def->attempts, 1u);
  auto sub = eng.execute(courses::subscribe("s1", "c1", 2));
  ASSERT_TRUE(sub) << message_of(sub.error());
  EXPECT_TRUE(sub->accepted) << sub->rejection;
  EXPECT_EQ(sub->first_position, 2u);
  EXPECT_EQ(sub->last_position, 2u);
  EXPECT_EQ(sub->attempts, 1u);
  // The events carry the typed payloads and the tags of the domain.
  auto r = eng.read(query::all());
  ASSERT_TRUE(r) << message_of(r.error());
  ASSERT_EQ(r->events.size(), 2u);
  auto& defined = r->events[0].event;
  EXPECT_EQ(defined.type, "CourseDefined");
  EXPECT_EQ(defined.tags, (std::vector<std::string>{"course:c1"}));
  auto cd = decode_payload<courses::course_defined>(defined.data);
  EXPECT_EQ(cd.course_id, "c1");
  EXPECT_EQ(cd.capacity, 2);
  auto& subscribed = r->events[1].event;
  EXPECT_EQ(subscribed.type, "StudentSubscribed");
  EXPECT_EQ(subscribed.tags,
            (std::vector<std::string>{"course:c1", "student:s1"}));
  auto ss = decode_payload<courses::student_subscribed>(subscribed.data);
  EXPECT_EQ(ss.student_id, "s1");
  EXPECT_EQ(ss.course_id, "c1");
}

TEST_F(Commands, RejectionsGiveTheReasonAndAppendNothing) {
  auto& eng = start();
  define(eng, "small", 1);
  define(eng, "big1", 5);
  define(eng, "big2", 5);
  auto accept = [&](command cmd) {
    auto r = eng.execute(std::move(cmd));
    ASSERT_TRUE(r) << message_of(r.error());
    EXPECT_TRUE(r->accepted) << r->rejection;
  };
  accept(courses::subscribe("s1", "small", 2));
  accept(courses::subscribe("s1", "big1", 2));
  auto expect_rejected = [&](command cmd, const std::string& reason) {
    auto head_before = count_events();
    auto r = eng.execute(std::move(cmd));
    ASSERT_TRUE(r) << message_of(r.error());
    EXPECT_FALSE(r->accepted);
    EXPECT_EQ(r->rejection, reason);
    EXPECT_EQ(r->first_position, 0u);
    EXPECT_EQ(r->last_position, 0u);
    EXPECT_EQ(r->attempts, 1u);
    EXPECT_EQ(count_events(), head_before);
  };
  expect_rejected(courses::subscribe("s2", "small", 2),
                  "course 'small' is full (capacity 1)");
  expect_rejected(courses::subscribe("s1", "big2", 2),
                  "student 's1' already has 2 courses (at most 2)");
  expect_rejected(courses::subscribe("s1", "big1", 2),
                  "student 's1' is already subscribed to course 'big1'");
  expect_rejected(courses::subscribe("s2", "nowhere", 2),
                  "course 'nowhere' does not exist");
  expect_rejected(courses::define_course("big1", 7),
                  "course 'big1' already exists");
  expect_rejected(courses::define_course("empty", 0),
                  "capacity must be positive");
  EXPECT_EQ(count_events(), "5");
  EXPECT_EQ(sql("SELECT count(*) FROM " + events()
                + " WHERE type = 'StudentSubscribed'"),
            "2");
}

// -- the rules under concurrency ----------------------------------------------

/// What became of one command of a client.
struct record {
  std::string student;
  std::string course;
  std::optional<command_outcome> outcome;
  caf::error error;
};

/// Collects the records of all clients; `wait` returns once all are done.
class tally {
public:
  explicit tally(std::size_t clients) : pending_(clients) {
    // nop
  }

  void add(record r) {
    std::lock_guard<std::mutex> guard{mtx_};
    records_.push_back(std::move(r));
  }

  void client_done() {
    std::lock_guard<std::mutex> guard{mtx_};
    if (--pending_ == 0)
      cv_.notify_all();
  }

  /// Returns false on timeout.
  bool wait(std::chrono::seconds timeout) {
    std::unique_lock<std::mutex> guard{mtx_};
    return cv_.wait_for(guard, timeout, [this] {
      return pending_ == 0;
    });
  }

  std::vector<record> records() {
    std::lock_guard<std::mutex> guard{mtx_};
    return records_;
  }

private:
  std::mutex mtx_;
  std::condition_variable cv_;
  std::size_t pending_;
  std::vector<record> records_;
};

/// One client's subscriptions, (student, course), in the order it tries them.
using plan = std::vector<std::pair<std::string, std::string>>;

/// Sends the subscriptions of `p` from position `i` on, one at a time, as a
/// client of the appender pool would.
void send_next(caf::event_based_actor* self, appender_actor appenders,
               std::shared_ptr<const plan> p, std::size_t i,
               std::size_t max_courses, std::shared_ptr<tally> out) {
  if (i == p->size()) {
    out->client_done();
    return;
  }
  auto student = (*p)[i].first;
  auto course = (*p)[i].second;
  auto cmd = courses::subscribe(student, course, max_courses);
  command_request req{cmd.name,
                      std::make_shared<const command>(std::move(cmd))};
  self->request(appenders, call_timeout, execute_atom::value, std::move(req))
    .then(
      [=](command_outcome& o) {
        out->add(record{student, course, std::move(o), {}});
        send_next(self, appenders, p, i + 1, max_courses, out);
      },
      [=](caf::error& err) {
        out->add(record{student, course, std::nullopt, std::move(err)});
        send_next(self, appenders, p, i + 1, max_courses, out);
      });
}

TEST_F(Commands, ConcurrentSubscriptionsNeverBreakTheRules) {
  constexpr int course_count = 4;
  constexpr int capacity = 10;
  constexpr int student_count = 50;
  constexpr int client_count = 100;
  constexpr std::size_t max_courses = 2;
  auto& eng = start();
  for (int c = 0; c < course_count; ++c)
    define(eng, "c" + std::to_string(c), capacity);
  // Two clients per student, so that the per-student rules are contended
  // too. Client k tries three courses starting at k % 4 and then its first
  // one again; its twin k + 50 starts two courses further on. Demand: 50
  // students x 2 courses = 100 subscriptions for 40 seats.
  auto out = std::make_shared<tally>(client_count);
  std::size_t total = 0;
  for (int k = 0; k < client_count; ++k) {
    auto p = std::make_shared<plan>();
    auto student = "s" + std::to_string(k % student_count);
    for (int j : {0, 1, 2, 0})
      p->emplace_back(student, "c" + std::to_string((k + j) % course_count));
    total += p->size();
    sys_->spawn(send_next, eng.appenders(), std::shared_ptr<const plan>{p},
                std::size_t{0}, max_courses, out);
  }
  ASSERT_TRUE(out->wait(std::chrono::seconds{240}))
    << "the clients did not finish";
  auto records = out->records();
  ASSERT_EQ(records.size(), total);
  // Every command ended as accepted, rejected for a rule, or conflicted on
  // all of its attempts; nothing else.
  std::size_t accepted = 0;
  std::size_t rejected = 0;
  std::size_t conflicted = 0;
  std::size_t retried = 0;
  std::map<std::uint64_t, std::string> accepted_at; // position -> tags
  for (auto& r : records) {
    if (!r.outcome) {
      ASSERT_EQ(code_of(r.error), errc::append_condition_failed)
        << message_of(r.error);
      EXPECT_TRUE(contains(message_of(r.error), "conflicted on all"));
      ++conflicted;
      continue;
    }
    auto& o = *r.outcome;
    if (o.attempts > 1)
      ++retried;
    if (o.accepted) {
      ++accepted;
      EXPECT_EQ(o.first_position, o.last_position);
      auto tags = "course:" + r.course + " student:" + r.student;
      EXPECT_TRUE(accepted_at.emplace(o.last_position, tags).second)
        << "two commands accepted at position " << o.last_position;
    } else {
      ++rejected;
      auto& why = o.rejection;
      EXPECT_TRUE(why.find("is full") != std::string::npos
                  || why.find("already has") != std::string::npos
                  || why.find("already subscribed") != std::string::npos)
        << why;
    }
  }
  EXPECT_EQ(accepted + rejected + conflicted, total);
  // The rules hold in the database itself.
  auto subs = " FROM " + events() + " WHERE type = 'StudentSubscribed'";
  auto per_tag = [&](const std::string& prefix) {
    return "(SELECT t, count(*) AS c FROM " + events()
           + ", unnest(tags) t WHERE type = 'StudentSubscribed' AND t LIKE '"
           + prefix + ":%' GROUP BY t) x";
  };
  EXPECT_EQ(sql("SELECT max(c) FROM " + per_tag("course")),
            std::to_string(capacity))
    << "a course is over capacity";
  EXPECT_EQ(sql("SELECT string_agg(t || '=' || c, ',' ORDER BY t) FROM "
                + per_tag("course")),
            "course:c0=10,course:c1=10,course:c2=10,course:c3=10")
    << "every course fills up: each is wanted by all 50 students";
  EXPECT_EQ(sql("SELECT count(*) FROM " + per_tag("student") + " WHERE c > "
                + std::to_string(max_courses)),
            "0")
    << "a student has too many courses";
  EXPECT_EQ(sql("SELECT count(*) FROM (SELECT tags" + subs
                + " GROUP BY tags HAVING count(*) > 1) d"),
            "0")
    << "a student is subscribed twice to a course";
  // The outcomes match the log row by row.
  EXPECT_EQ(sql("SELECT count(*)" + subs), std::to_string(accepted));
  std::string expected;
  for (auto& [pos, tags] : accepted_at)
    expected += (expected.empty() ? "" : ",") + std::to_string(pos) + " "
                + tags;
  EXPECT_EQ(sql("SELECT string_agg(position || ' ' || array_to_string(tags, "
                "' '), ',' ORDER BY position)"
                + subs),
            expected);
  EXPECT_EQ(accepted, std::size_t{course_count * capacity});
  // 100 clients on four boundaries: decisions must have been made again.
  EXPECT_GT(retried + conflicted, 0u);
  std::cout << "[          ] " << accepted << " accepted, " << rejected
            << " rejected, " << conflicted << " conflicted on all attempts, "
            << retried << " accepted or rejected after a retry\n";
}

// -- retries ------------------------------------------------------------------

TEST_F(Commands, ConflictBetweenProjectAndAppendIsRetried) {
  auto& eng = start();
  define(eng, "c1", 10);
  // Another writer subscribes someone to c1 while the first decision is
  // being made: the append of that decision must fail and be decided again.
  auto intruder = open_store(1);
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto sub = courses::subscribe("s1", "c1", 2);
  auto decide = sub.decide;
  sub.decide = [=, &intruder](const decision_states& s) {
    if (calls->fetch_add(1) == 0)
      intruder->append(
        {make_event("StudentSubscribed",
                    {courses::course_tag("c1"), courses::student_tag("s2")},
                    courses::student_subscribed{"s2", "c1"})});
    return decide(s);
  };
  auto r = eng.execute(std::move(sub));
  ASSERT_TRUE(r) << message_of(r.error());
  EXPECT_TRUE(r->accepted) << r->rejection;
  EXPECT_EQ(r->attempts, 2u);
  EXPECT_EQ(calls->load(), 2);
  EXPECT_EQ(r->last_position, 3u);
  // The retry saw the intruder: c1 holds two subscriptions, in order.
  EXPECT_EQ(sql("SELECT string_agg(array_to_string(tags, ' '), ',' ORDER BY "
                "position) FROM "
                + events() + " WHERE type = 'StudentSubscribed'"),
            "course:c1 student:s2,course:c1 student:s1");
}

TEST_F(Commands, ConflictOnEveryAttemptFailsAfterMaxAttempts) {
  auto cfg = config();
  cfg.max_attempts = 3;
  auto& eng = start(cfg);
  define(eng, "c1", 100);
  auto intruder = open_store(1);
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto sub = courses::subscribe("s1", "c1", 2);
  auto decide = sub.decide;
  sub.decide = [=, &intruder](const decision_states& s) {
    auto n = calls->fetch_add(1);
    auto other = "x" + std::to_string(n);
    intruder->append(
      {make_event("StudentSubscribed",
                  {courses::course_tag("c1"), courses::student_tag(other)},
                  courses::student_subscribed{other, "c1"})});
    return decide(s);
  };
  auto r = eng.execute(std::move(sub));
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::append_condition_failed);
  EXPECT_TRUE(contains(message_of(r.error()),
                       "command 'subscribe': conflicted on all 3 attempts"));
  EXPECT_EQ(calls->load(), 3);
  // Only the definition and the three intruders are in the log.
  EXPECT_EQ(count_events(), "4");
  EXPECT_EQ(
    sql("SELECT count(*) FROM " + events() + " WHERE 'student:s1' = ANY(tags)"),
    "0");
}

/// Appends a "Tick" whose data is the number of ticks before it plus one.
command tick() {
  auto counter = make_projector("ticks",
                                query{{query_item{{"Tick"}, {"counter:1"}}}}, 0,
                                [](int& n, const sequenced_event&) {
                                  ++n;
                                });
  return command{"tick", {std::move(counter)}, [](const decision_states& s) {
                   auto next = s.get<int>("ticks") + 1;
                   return verdict::accept(
                     {ev("Tick", {"counter:1"}, std::to_string(next))});
                 }};
}

/// Runs `n` ticks at once through `run` (on an engine that retries up to
/// 1,000 times); each must be decided on all the ticks before it.
void Commands::ticks_lose_no_update(
  const std::function<
    std::future<caf::expected<command_outcome>>(engine&, command)>& run) {
  constexpr int n = 40;
  auto cfg = config();
  cfg.max_attempts = 1000;
  auto& eng = start(cfg);
  std::vector<std::future<caf::expected<command_outcome>>> results;
  for (int i = 0; i < n; ++i)
    results.push_back(run(eng, tick()));
  std::uint32_t max_attempts = 0;
  for (auto& f : results) {
    auto r = f.get();
    ASSERT_TRUE(r) << message_of(r.error());
    EXPECT_TRUE(r->accepted);
    max_attempts = std::max(max_attempts, r->attempts);
  }
  EXPECT_GT(max_attempts, 1u) << "no command was ever retried";
  // Each tick was decided on all the ticks before it: 1, 2, ..., n.
  std::string expected;
  for (int i = 1; i <= n; ++i)
    expected += (i > 1 ? "," : "") + std::to_string(i);
  EXPECT_EQ(sql("SELECT string_agg(convert_from(data, 'UTF8'), ',' ORDER BY "
                "position) FROM "
                + events()),
            expected);
}

TEST_F(Commands, ConcurrentCommandsOnOneBoundaryRetryAndLoseNoUpdate) {
  ticks_lose_no_update(execute_async);
}

// Every first round on this thread, each append in flight while the next
// tick is decided on the same stale head: the conflicts continue on the
// appenders.
TEST_F(Commands, ConcurrentDirectCommandsOnOneBoundaryRetryAndLoseNoUpdate) {
  ticks_lose_no_update(execute_unbounded_async);
}

// -- the first round on the caller's thread -----------------------------------

/// `cmd` with a decide() that records the thread it runs on.
command on_thread(command cmd, std::shared_ptr<std::thread::id> where) {
  auto decide = std::move(cmd.decide);
  cmd.decide = [decide = std::move(decide),
                where = std::move(where)](const decision_states& s) {
    *where = std::this_thread::get_id();
    return decide(s);
  };
  return cmd;
}

TEST_F(Commands, FirstRoundRunsOnTheCallersThreadUpToOneProjectionChunk) {
  auto cfg = config();
  cfg.reader.project_chunking.chunk_events = 4;
  auto& eng = start(cfg);
  auto where = std::make_shared<std::thread::id>();
  // Ticks 1..5 are decided on models of 0..4 events, tick 6 on 5.
  for (int i = 1; i <= 6; ++i) {
    auto r = eng.execute(on_thread(tick(), where));
    ASSERT_TRUE(r) << message_of(r.error());
    EXPECT_TRUE(r->accepted);
    EXPECT_EQ(r->attempts, 1u);
    EXPECT_EQ(r->last_position, static_cast<std::uint64_t>(i));
    if (i <= 5)
      EXPECT_EQ(*where, std::this_thread::get_id()) << "tick " << i;
    else
      EXPECT_NE(*where, std::this_thread::get_id())
        << "a model of 5 events was projected on the caller's thread";
  }
  EXPECT_EQ(sql("SELECT string_agg(convert_from(data, 'UTF8'), ',' ORDER BY "
                "position) FROM "
                + events()),
            "1,2,3,4,5,6");
}

TEST_F(Commands, WithoutTheCacheEveryRoundRunsOnTheAppenders) {
  auto cfg = config();
  cfg.cache_bytes = 0;
  auto& eng = start(cfg);
  ASSERT_FALSE(eng.cache());
  auto where = std::make_shared<std::thread::id>();
  auto r = eng.execute(on_thread(tick(), where));
  ASSERT_TRUE(r) << message_of(r.error());
  EXPECT_TRUE(r->accepted);
  EXPECT_EQ(r->last_position, 1u);
  EXPECT_NE(*where, std::thread::id{});
  EXPECT_NE(*where, std::this_thread::get_id());
}

TEST_F(Commands, AConflictOfTheOnlyAttemptOnTheCallersThreadFails) {
  auto cfg = config();
  cfg.max_attempts = 1;
  auto& eng = start(cfg);
  define(eng, "c1", 10);
  auto intruder = open_store(1);
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto sub = courses::subscribe("s1", "c1", 2);
  auto decide = sub.decide;
  sub.decide = [=, &intruder](const decision_states& s) {
    calls->fetch_add(1);
    intruder->append(
      {make_event("StudentSubscribed",
                  {courses::course_tag("c1"), courses::student_tag("s2")},
                  courses::student_subscribed{"s2", "c1"})});
    return decide(s);
  };
  auto r = execute_unbounded_async(eng, std::move(sub)).get();
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::append_condition_failed);
  EXPECT_TRUE(contains(message_of(r.error()),
                       "command 'subscribe': conflicted on all 1 attempts"));
  EXPECT_EQ(calls->load(), 1);
  EXPECT_EQ(
    sql("SELECT count(*) FROM " + events() + " WHERE 'student:s1' = ANY(tags)"),
    "0");
}

TEST_F(Commands, FailuresOfTheFirstRoundAreAnsweredOnTheCallersThread) {
  auto& eng = start();
  auto boom = tick();
  boom.decide = [](const decision_states&) -> verdict {
    throw std::runtime_error("boom");
  };
  std::optional<std::thread::id> answered_on;
  caf::expected<command_outcome> r{command_outcome{}};
  eng.execute_unbounded(std::move(boom), [&](caf::expected<command_outcome> x) {
    answered_on = std::this_thread::get_id();
    r = std::move(x);
  });
  ASSERT_TRUE(answered_on) << "not answered before execute_unbounded returned";
  EXPECT_EQ(*answered_on, std::this_thread::get_id());
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::internal);
  EXPECT_TRUE(
    contains(message_of(r.error()), "command 'tick': decide() threw: boom"));
  EXPECT_EQ(count_events(), "0");
}

// -- what decide() returns ----------------------------------------------------

TEST_F(Commands, InvalidEventsFromDecideAreInvalidArgument) {
  auto& eng = start();
  define(eng, "c1", 10);
  command bad{
    "bad", {courses::course_projector("c1")}, [](const decision_states&) {
      return verdict::accept({ev("", {"course:c1"})});
    }};
  auto r = eng.execute(std::move(bad));
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::invalid_argument);
  EXPECT_TRUE(contains(message_of(r.error()),
                       "command 'bad': decide() returned invalid events"));
  EXPECT_EQ(count_events(), "1");
}

TEST_F(Commands, AcceptingWithoutEventsAppendsNothing) {
  auto& eng = start();
  define(eng, "c1", 10);
  command noop{
    "noop", {courses::course_projector("c1")}, [](const decision_states&) {
      return verdict::accept({});
    }};
  auto r = eng.execute(std::move(noop));
  ASSERT_TRUE(r) << message_of(r.error());
  EXPECT_TRUE(r->accepted);
  EXPECT_EQ(r->rejection, "");
  EXPECT_EQ(r->first_position, 0u);
  EXPECT_EQ(r->last_position, 0u);
  EXPECT_EQ(r->attempts, 1u);
  EXPECT_EQ(count_events(), "1");
}

// -- the optimistic first attempt --------------------------------------------

/// Appends "CourseFull" when the course is full, else nothing.
command mark_full(const std::string& course_id) {
  return command{"mark_full",
                 {courses::course_projector(course_id)},
                 [course_id](const decision_states& s) {
                   auto& c = s.get<courses::course_state>("course");
                   if (!c.defined || c.subscriptions < c.capacity)
                     return verdict::accept({});
                   return verdict::accept(
                     {ev("CourseFull", {courses::course_tag(course_id)}, "")});
                 }};
}

// A command's first attempt projects at its node's cache head, which may
// lack what another node acknowledged a moment ago (its bus has not brought
// it yet). No outcome may show that: a rejection or an empty accept is
// decided again on a linearizable model, an accept conflicts and is retried.
// Two engines on the schema, both with `cfg`.
void Commands::commands_see_the_other_node(engine& here,
                                           const engine_config& cfg) {
  other_node there{cfg};
  constexpr int rounds = 100;
  // s1 joins two courses a round.
  constexpr std::size_t most = 2 * rounds;
  int conflicted = 0;
  for (int i = 0; i < rounds; ++i) {
    SCOPED_TRACE("round " + std::to_string(i));
    auto a = "a" + std::to_string(i);
    // Defined there: a model without the definition would reject.
    auto def = there.eng.execute(courses::define_course(a, 1));
    ASSERT_TRUE(def && def->accepted);
    auto sub = here.execute(courses::subscribe("s1", a, most));
    ASSERT_TRUE(sub) << message_of(sub.error());
    ASSERT_TRUE(sub->accepted) << sub->rejection;
    // Full since here's subscription: a model without it would accept.
    auto full = there.eng.execute(courses::subscribe("s2", a, most));
    ASSERT_TRUE(full) << message_of(full.error());
    ASSERT_FALSE(full->accepted);
    EXPECT_EQ(full->rejection, "course '" + a + "' is full (capacity 1)");
    EXPECT_EQ(full->last_position, 0u);
    if (full->attempts > 1)
      ++conflicted;
    // Filled here: a model without it would append nothing.
    auto b = "b" + std::to_string(i);
    auto defb = here.execute(courses::define_course(b, 1));
    ASSERT_TRUE(defb && defb->accepted);
    auto filled = here.execute(courses::subscribe("s1", b, most));
    ASSERT_TRUE(filled && filled->accepted);
    auto marked = there.eng.execute(mark_full(b));
    ASSERT_TRUE(marked) << message_of(marked.error());
    EXPECT_TRUE(marked->accepted);
    EXPECT_GT(marked->last_position, 0u) << "decided on a model without the "
                                            "subscription acknowledged here";
  }
  EXPECT_EQ(sql("SELECT count(*) FROM " + events()
                + " WHERE type = 'StudentSubscribed'"),
            std::to_string(2 * rounds));
  EXPECT_EQ(
    sql("SELECT count(*) FROM " + events() + " WHERE type = 'CourseFull'"),
    std::to_string(rounds));
  std::cout << "[          ] " << conflicted << " of " << rounds
            << " rejections came after a conflict on a stale model\n";
}

// The cache holds the whole log: the first attempt is served from memory.
TEST_F(Commands, CommandsSeeWhatAnotherNodeAcknowledgedBeforeThem) {
  auto cfg = config();
  auto& here = start(cfg);
  commands_see_the_other_node(here, cfg);
  ASSERT_TRUE(here.cache());
  EXPECT_EQ(here.cache()->lo(), 0u);
}

// The start of the log is evicted: the first attempt reads the old part
// from the database and the rest from memory, at the cache's head.
TEST_F(Commands, CommandsSeeWhatAnotherNodeAcknowledgedWithATinyCache) {
  auto cfg = config();
  cfg.cache_bytes = 8 << 10;
  auto& here = start(cfg);
  commands_see_the_other_node(here, cfg);
  ASSERT_TRUE(here.cache());
  EXPECT_GT(here.cache()->lo(), 0u) << "the cache kept the start of the log";
}

TEST_F(Commands, VerdictJobsAreEnqueuedOnceWithTheAcceptedEvents) {
  auto& eng = start();
  define(eng, "c1", 10);
  // The first attempt conflicts (an intruder subscribes meanwhile): its
  // jobs must not exist; the second attempt's must, once.
  auto intruder = open_store(1);
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto sub = courses::subscribe("s1", "c1", 2);
  auto decide = sub.decide;
  sub.decide = [=, &intruder](const decision_states& s) {
    auto n = calls->fetch_add(1);
    if (n == 0)
      intruder->append(
        {make_event("StudentSubscribed",
                    {courses::course_tag("c1"), courses::student_tag("s2")},
                    courses::student_subscribed{"s2", "c1"})});
    auto v = decide(s);
    job_request welcome;
    welcome.queue = "mail";
    welcome.kind = "welcome";
    welcome.args = "{\"attempt\": " + std::to_string(n + 1) + "}";
    return verdict::accept(std::move(v.events), {welcome});
  };
  auto r = eng.execute(std::move(sub));
  ASSERT_TRUE(r) << message_of(r.error());
  EXPECT_TRUE(r->accepted) << r->rejection;
  EXPECT_EQ(r->attempts, 2u);
  EXPECT_EQ(sql("SELECT string_agg(queue || ' ' || kind || ' ' || args::text, "
                "',' ORDER BY id) FROM "
                + schema_ + ".jobs"),
            "mail welcome {\"attempt\": 2}");
}

TEST_F(Commands, VerdictWithJobsButNoEventsIsInvalidArgument) {
  auto& eng = start();
  define(eng, "c1", 10);
  command jobs_only{
    "jobs_only", {courses::course_projector("c1")}, [](const decision_states&) {
      job_request j;
      j.kind = "k";
      return verdict::accept({}, {j});
    }};
  auto r = eng.execute(std::move(jobs_only));
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::invalid_argument);
  EXPECT_TRUE(contains(message_of(r.error()), "command 'jobs_only'"))
    << message_of(r.error());
  EXPECT_EQ(count_events(), "1");
  EXPECT_EQ(sql("SELECT count(*) FROM " + schema_ + ".jobs"), "0");
}

TEST_F(Commands, CommandWithoutProjectorsAppendsUnconditionally) {
  auto& eng = start();
  command plain{"plain", {}, [](const decision_states& s) {
                  EXPECT_EQ(s.size(), 0u);
                  return verdict::accept({ev("Logged", {"log:1"})});
                }};
  auto r = eng.execute(std::move(plain));
  ASSERT_TRUE(r) << message_of(r.error());
  EXPECT_TRUE(r->accepted);
  EXPECT_EQ(r->last_position, 1u);
}

TEST_F(Commands, InvalidModelIsInvalidArgument) {
  auto& eng = start();
  auto twice = courses::subscribe("s1", "c1", 2);
  twice.projectors.push_back(courses::course_projector("c2"));
  auto r = eng.execute(std::move(twice));
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::invalid_argument);
  EXPECT_TRUE(contains(message_of(r.error()), "duplicate id 'course'"));
  EXPECT_EQ(count_events(), "0");
}

TEST_F(Commands, RequestWithoutCodeIsInvalidArgumentNamingTheCommand) {
  auto& eng = start();
  auto r = ask<command_outcome>(*sys_, eng.appenders(), execute_atom::value,
                                command_request{"ghost", nullptr});
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), errc::invalid_argument);
  EXPECT_TRUE(contains(message_of(r.error()), "command 'ghost'"));
  auto no_decide = eng.execute(command{"mute", {}, nullptr});
  ASSERT_FALSE(no_decide);
  EXPECT_EQ(code_of(no_decide.error()), errc::invalid_argument);
  EXPECT_TRUE(contains(message_of(no_decide.error()),
                       "command 'mute': decide must be set"));
  EXPECT_EQ(count_events(), "0");
}

} // namespace
} // namespace dcbd::test
