// The cluster (API.md §9, issue 14) with three real `dcbd-courses`
// processes on 127.0.0.1 and one schema: the mesh at a cold start with one
// owner of the projector and management from any node acting on the owner;
// SIGKILL of the owner under load (a survivor takes over, the read model
// equals the recount); SIGSTOP of the owner for 10 s (a survivor takes over,
// the woken node is fenced and rejoins); SIGKILL of a non-owner (nothing
// moves); a restart of PostgreSQL (every node recovers, one owner); a node
// restarted on the same ports rejoins with a new incarnation, one restarted
// on a new address is listed once; nodes with other middleman settings, of
// another cluster or with a name already up are refused.
//
// Times (takeover, mesh) are printed, not asserted: `./dev bench cluster`
// measures them. These tests run alone (RUN_SERIAL): one restarts the
// database, and the others measure failover on a shared, noisy machine.
#include "tests/runtime/courses_support.hpp"
#include "tests/runtime/http_test_client.hpp"
#include "tests/runtime/node_process.hpp"

#include <array>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#ifndef DCBD_COURSES_BINARY
#  error "DCBD_COURSES_BINARY must name the dcbd-courses executable"
#endif
#ifndef DCBCTL_BINARY
#  error "DCBCTL_BINARY must name the dcbctl executable"
#endif

namespace dcbd::test {
namespace {

using namespace http_support;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

long long ms_since(steady::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(steady::now()
                                                               - t0)
    .count();
}

template <class F>
bool eventually(F&& f, std::chrono::milliseconds within) {
  auto until = steady::now() + within;
  while (steady::now() < until) {
    if (f())
      return true;
    std::this_thread::sleep_for(20ms);
  }
  return f();
}

std::string file_text(const std::string& path) {
  std::ifstream in{path};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class Cluster : public PgSchemaTest {
protected:
  struct member {
    std::string name;
    std::uint16_t http = 0;
    std::uint16_t cluster = 0;
    std::unique_ptr<node_process> proc;
  };

  void SetUp() override {
    PgSchemaTest::SetUp();
    for (int i = 0; i < 3; ++i) {
      member m;
      m.name = "n" + std::to_string(i + 1);
      // The HTTP port is picked when the node first starts (a port picked
      // long before it is bound may be taken meanwhile); the cluster ports
      // go into every node's seeds, so they are picked now.
      m.cluster = free_tcp_port();
      nodes_.push_back(std::move(m));
    }
    for (auto& m : nodes_)
      seeds_ += (seeds_.empty() ? "" : ",") + addr(m);
  }

  void TearDown() override {
    for (auto& m : nodes_)
      if (m.proc) {
        m.proc->process().signal(SIGCONT);
        m.proc->process().signal(SIGTERM);
      }
    for (auto& m : nodes_)
      m.proc.reset();
    PgSchemaTest::TearDown();
  }

  static std::string addr(const member& m) {
    return "127.0.0.1:" + std::to_string(m.cluster);
  }

  // Starts node `i` (again) on its ports.
  void start(std::size_t i, std::vector<std::string> args = {},
             std::vector<std::pair<std::string, std::string>> extra = {}) {
    auto& m = nodes_[i];
    if (m.http == 0)
      m.http = free_tcp_port();
    std::vector<std::pair<std::string, std::string>> env{
      {"DCB_NODE_NAME", m.name},
      {"DCB_CLUSTER_ADDR", addr(m)},
      {"DCB_CLUSTER_SEEDS", seeds_}};
    for (auto& e : extra)
      env.push_back(e);
    m.proc = std::make_unique<node_process>(
      schema_, std::move(args), m.http, std::move(env), DCBD_COURSES_BINARY);
    ASSERT_TRUE(m.proc->up()) << file_text(m.proc->log());
  }

  void start_all() {
    for (std::size_t i = 0; i < nodes_.size(); ++i)
      start(i);
  }

  static json cluster_of(std::uint16_t port) {
    try {
      client c{port};
      auto r = c.get("/v1/cluster");
      return r.status == 200 ? json::parse(r.body) : json{};
    } catch (const std::exception&) {
      return json{};
    }
  }

  // name -> status as node `i` sees it.
  std::map<std::string, std::string> view(std::size_t i) {
    std::map<std::string, std::string> out;
    auto j = cluster_of(nodes_[i].http);
    if (!j.is_object())
      return out;
    for (auto& m : j["members"])
      out[m["name"].get<std::string>()] = m["status"].get<std::string>();
    return out;
  }

  // Whether each of `live` sees each of `live` up.
  bool mesh(const std::vector<std::size_t>& live) {
    for (auto i : live) {
      auto v = view(i);
      for (auto j : live)
        if (v[nodes_[j].name] != "up")
          return false;
    }
    return true;
  }

  std::size_t index_of(const std::string& name) const {
    for (std::size_t i = 0; i < nodes_.size(); ++i)
      if (nodes_[i].name == name)
        return i;
    return nodes_.size();
  }

  // The owner every node in `live` names, or "" while they disagree.
  std::string agreed_owner(const std::vector<std::size_t>& live) {
    std::set<std::string> owners;
    for (auto i : live) {
      auto s = course_node::status(nodes_[i].http);
      owners.insert(s.is_object() ? s["owner"].get<std::string>() : "");
    }
    return owners.size() == 1 ? *owners.begin() : std::string{};
  }

  // The owner every node names, once it runs the projector ("" before).
  std::string running_owner() {
    auto owner = agreed_owner({0, 1, 2});
    if (owner.empty()
        || course_node::status(nodes_[index_of(owner)].http)["state"]
             != "running")
      return {};
    return owner;
  }

  std::uint64_t epoch_on(std::size_t i) {
    auto s = course_node::status(nodes_[i].http);
    return s.is_object() ? s["epoch"].get<std::uint64_t>() : 0;
  }

  // Waits until node `i` runs the projector under an epoch above `above`.
  bool runs(std::size_t i, std::uint64_t above, std::chrono::milliseconds d) {
    return eventually(
      [&] {
        auto s = course_node::status(nodes_[i].http);
        return s.is_object() && s["state"] == "running"
               && s["owner"] == nodes_[i].name
               && s["epoch"].get<std::uint64_t>() > above;
      },
      d);
  }

  // Appends subscriptions through `port` until it acknowledges `n`.
  void append(std::uint16_t port, int n, const std::string& prefix) {
    int done = 0;
    auto until = steady::now() + 30s;
    while (done < n && steady::now() < until) {
      try {
        client c{port};
        while (done < n) {
          auto r = c.post("/v1/append",
                          json{{"events",
                                {course_node::subscribe_event(
                                  prefix + std::to_string(done),
                                  "c" + std::to_string(done % 3))}}});
          if (r.closed)
            break;
          if (r.status == 200)
            ++done;
        }
      } catch (const std::exception&) {
        std::this_thread::sleep_for(100ms);
      }
    }
    ASSERT_EQ(done, n) << "appends through port " << port;
  }

  std::string seats() {
    return course_node::seats(schema_);
  }

  std::string recount() {
    return course_node::recount(schema_);
  }

  // A metric's value on node `i` ("" when absent).
  std::string metric(std::size_t i, const std::string& series) {
    try {
      client c{nodes_[i].proc->metrics_port()};
      auto body = c.get("/metrics").body;
      auto at = body.find("\n" + series + " ");
      if (at == std::string::npos)
        return {};
      at += series.size() + 2;
      return body.substr(at, body.find('\n', at) - at);
    } catch (const std::exception&) {
      return {};
    }
  }

  // Starts the three with `writer` as the cluster's writer and waits until
  // the others forward to it.
  void start_forwarding(const std::string& writer) {
    for (std::size_t i = 0; i < nodes_.size(); ++i)
      start(i, {"--dcbd.cluster-writer=" + writer});
    ASSERT_TRUE(eventually(
      [&] {
        return mesh({0, 1, 2});
      },
      10s));
    for (auto& m : nodes_) {
      if (m.name == writer)
        continue;
      ASSERT_TRUE(eventually(
        [&] {
          return file_text(m.proc->log())
                   .find("forwarding appends to " + writer)
                 != std::string::npos;
        },
        10s))
        << file_text(m.proc->log());
    }
  }

  // `dcb_appends_forwarded_total{result}` on node `i` (0 when absent).
  long forwarded(std::size_t i, const std::string& result) {
    auto v = metric(i,
                    "dcb_appends_forwarded_total{result=\"" + result + "\"}");
    return v.empty() ? 0 : std::stol(v);
  }

  // `dcb_append_forward_batch_size_<what>` ("sum" or "count") on node `i`
  // (0 when absent).
  long batch_metric(std::size_t i, const std::string& what) {
    auto v = metric(i, "dcb_append_forward_batch_size_" + what);
    return v.empty() ? 0 : std::lround(std::stod(v));
  }

  // Rows of StudentSubscribed events, and distinct students among them.
  std::pair<long, long> subscriptions(const std::string& prefix) {
    auto where = " FROM " + schema_
                 + ".events WHERE type = 'StudentSubscribed' AND "
                   "convert_from(data, 'UTF8')::jsonb ->> 'student' LIKE '"
                 + prefix + "%'";
    return {std::stol(exec_sql("SELECT count(*)" + where)),
            std::stol(exec_sql(
              "SELECT count(DISTINCT convert_from(data, 'UTF8')::jsonb ->> "
              "'student')"
              + where))};
  }

  std::vector<member> nodes_;
  std::string seeds_;
};

TEST_F(Cluster, ColdStartMeshOneOwnerAndManagementOnTheOwner) {
  start_all();
  auto t0 = steady::now();
  ASSERT_TRUE(eventually(
    [&] {
      return mesh({0, 1, 2});
    },
    10s))
    << cluster_of(nodes_[0].http).dump();
  std::cout << "[          ] mesh complete " << ms_since(t0)
            << " ms after the last node listened\n";
  // Each lists the three, itself first, with addresses and incarnations.
  for (std::size_t i = 0; i < 3; ++i) {
    auto j = cluster_of(nodes_[i].http);
    EXPECT_EQ(j["self"], nodes_[i].name);
    ASSERT_EQ(j["members"].size(), 3u) << j.dump();
    EXPECT_EQ(j["members"][0]["name"], nodes_[i].name);
    for (auto& m : j["members"]) {
      auto k = index_of(m["name"].get<std::string>());
      ASSERT_LT(k, 3u) << j.dump();
      EXPECT_EQ(m["addr"], addr(nodes_[k]));
      EXPECT_EQ(m["incarnation"].get<std::string>().size(), 32u);
    }
    // The gauges follow within the node's poll (a second).
    EXPECT_TRUE(eventually(
      [&] {
        return metric(i, "dcb_cluster_members{status=\"up\"}") == "2"
               && metric(i, "dcb_cluster_members{status=\"unreachable\"}")
                    == "0";
      },
      5s))
      << metric(i, "dcb_cluster_members{status=\"up\"}");
  }
  // One owner, the same for every node, holding the only lock.
  std::string owner;
  ASSERT_TRUE(eventually(
    [&] {
      owner = agreed_owner({0, 1, 2});
      return !owner.empty();
    },
    10s));
  ASSERT_TRUE(eventually(
    [&] {
      return course_node::lock_holders(schema_) == "dcbd:" + owner;
    },
    10s))
    << course_node::lock_holders(schema_);
  auto o = index_of(owner);
  ASSERT_LT(o, 3u);
  auto other = (o + 1) % 3;
  auto third = (o + 2) % 3;

  // Pause on a non-owner: the owner pauses at once and answers.
  client c{nodes_[other].http};
  auto r = c.post("/v1/projectors/course_seats/pause", "");
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.j()["state"], "paused") << r.body;
  EXPECT_EQ(r.j()["owner"], owner);
  EXPECT_EQ(course_node::status(nodes_[o].http)["state"], "paused");
  // Others report the owner's paused state.
  EXPECT_EQ(course_node::status(nodes_[third].http)["state"], "paused");
  // Paused again through the third node: the owner changes nothing, 200.
  client c3{nodes_[third].http};
  auto epoch = epoch_on(o);
  r = c3.post("/v1/projectors/course_seats/pause", "");
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.j()["state"], "paused") << r.body;
  EXPECT_EQ(r.j()["owner"], owner) << r.body;
  EXPECT_EQ(r.j()["epoch"], epoch) << r.body;
  // Paused: appends wait.
  append(nodes_[third].http, 5, "p");
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(seats(), "");
  // Resume through the third node.
  r = c3.post("/v1/projectors/course_seats/resume", "");
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.j()["state"], "running") << r.body;
  ASSERT_TRUE(course_node::caught_up(nodes_[o].http));
  EXPECT_EQ(seats(), recount());
  EXPECT_EQ(seats(), "c0=2,c1=2,c2=1");
  // Resuming a running projector through a non-owner: the owner changes
  // nothing and answers its status (idempotent, as on one node).
  r = c.post("/v1/projectors/course_seats/resume", "");
  ASSERT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(r.j()["state"], "running") << r.body;
  EXPECT_EQ(r.j()["owner"], owner) << r.body;
  EXPECT_EQ(r.j()["epoch"], epoch) << r.body;
  // A conflict on the owner comes back as one: retrying a dead letter whose
  // data is still no course.
  r = c3.post("/v1/append",
              json{{"events", {ev("StudentSubscribed", {}, "not json")}}});
  ASSERT_EQ(r.status, 200u) << r.body;
  auto bad = r.j()["first_position"].get<std::uint64_t>();
  ASSERT_TRUE(course_node::caught_up(nodes_[o].http));
  ASSERT_EQ(course_node::status(nodes_[o].http)["dead_letters"], 1);
  r = c.post("/v1/projectors/course_seats/dead-letters/" + std::to_string(bad)
               + "/retry",
             "");
  EXPECT_EQ(r.status, 409u) << r.body;
  EXPECT_NE(r.body.find("failed again"), std::string::npos) << r.body;
}

TEST_F(Cluster, SigkillOfTheOwnerUnderLoad) {
  start_all();
  ASSERT_TRUE(eventually(
    [&] {
      return mesh({0, 1, 2});
    },
    10s));
  std::string owner;
  ASSERT_TRUE(eventually(
    [&] {
      return !(owner = running_owner()).empty();
    },
    10s));
  auto o = index_of(owner);
  std::vector<std::size_t> survivors;
  for (std::size_t i = 0; i < 3; ++i)
    if (i != o)
      survivors.push_back(i);
  auto epoch = epoch_on(o);

  // Writers on the survivors, all the time.
  std::atomic<bool> writing{true};
  std::atomic<int> acknowledged{0};
  std::vector<std::thread> writers;
  for (auto i : survivors)
    writers.emplace_back([&, port = nodes_[i].http, i] {
      int k = 0;
      while (writing) {
        try {
          client c{port};
          while (writing) {
            auto r = c.post(
              "/v1/append",
              json{{"events",
                    {course_node::subscribe_event(
                      "w" + std::to_string(i) + "-" + std::to_string(k),
                      "c" + std::to_string(k % 4))}}});
            if (r.closed)
              break;
            if (r.status == 200)
              ++acknowledged;
            ++k;
          }
        } catch (const std::exception&) {
          std::this_thread::sleep_for(20ms);
        }
      }
    });
  std::this_thread::sleep_for(500ms);
  auto t0 = steady::now();
  nodes_[o].proc->process().signal(SIGKILL);
  nodes_[o].proc->process().wait();
  std::size_t taker = 3;
  ASSERT_TRUE(eventually(
    [&] {
      for (auto i : survivors) {
        auto s = course_node::status(nodes_[i].http);
        if (s.is_object() && s["state"] == "running"
            && s["owner"] == nodes_[i].name
            && s["epoch"].get<std::uint64_t>() > epoch)
          taker = i;
      }
      return taker < 3;
    },
    20s));
  std::cout << "[          ] a survivor runs the projector " << ms_since(t0)
            << " ms after SIGKILL of its owner\n";
  // The survivors see the dead node as unreachable, still listed.
  ASSERT_TRUE(eventually(
    [&] {
      return view(survivors[0])[owner] == "unreachable"
             && view(survivors[1])[owner] == "unreachable";
    },
    10s))
    << cluster_of(nodes_[survivors[0]].http).dump();
  EXPECT_TRUE(eventually(
    [&] {
      return metric(survivors[0], "dcb_cluster_members{status=\"unreachable\"}")
             == "1";
    },
    5s));
  std::this_thread::sleep_for(500ms);
  writing = false;
  for (auto& t : writers)
    t.join();
  ASSERT_GT(acknowledged.load(), 20);
  ASSERT_TRUE(course_node::caught_up(nodes_[taker].http));
  EXPECT_EQ(seats(), recount());
  EXPECT_EQ(course_node::lock_holders(schema_), "dcbd:" + nodes_[taker].name);
  EXPECT_EQ(agreed_owner(survivors), nodes_[taker].name);
}

TEST_F(Cluster, SigstopOfTheOwnerFencedOnWake) {
  start_all();
  ASSERT_TRUE(eventually(
    [&] {
      return mesh({0, 1, 2});
    },
    10s));
  std::string owner;
  ASSERT_TRUE(eventually(
    [&] {
      return !(owner = running_owner()).empty();
    },
    10s));
  auto o = index_of(owner);
  std::vector<std::size_t> survivors;
  for (std::size_t i = 0; i < 3; ++i)
    if (i != o)
      survivors.push_back(i);
  auto epoch = epoch_on(o);
  append(nodes_[survivors[0]].http, 10, "before");
  ASSERT_TRUE(course_node::caught_up(nodes_[o].http));

  auto t0 = steady::now();
  nodes_[o].proc->process().signal(SIGSTOP);
  std::size_t taker = 3;
  ASSERT_TRUE(eventually(
    [&] {
      for (auto i : survivors)
        if (runs(i, epoch, 0ms))
          taker = i;
      return taker < 3;
    },
    20s));
  std::cout << "[          ] a survivor runs the projector " << ms_since(t0)
            << " ms after SIGSTOP of its owner\n";
  ASSERT_TRUE(eventually(
    [&] {
      return view(survivors[0])[owner] == "unreachable";
    },
    10s));
  // Writes go on while the old owner sleeps.
  append(nodes_[survivors[1]].http, 10, "during");
  auto frozen = 10s - (steady::now() - t0);
  if (frozen > 0s)
    std::this_thread::sleep_for(frozen);
  nodes_[o].proc->process().signal(SIGCONT);

  // On wake it has lost its lease and its lock session: it stops its
  // instance and writes nothing under its old epoch; it rejoins the mesh.
  ASSERT_TRUE(eventually(
    [&] {
      return mesh({0, 1, 2});
    },
    20s))
    << cluster_of(nodes_[o].http).dump();
  ASSERT_TRUE(eventually(
    [&] {
      return file_text(nodes_[o].proc->log())
               .find("projectors on node " + owner + " stop")
             != std::string::npos;
    },
    10s))
    << file_text(nodes_[o].proc->log());
  append(nodes_[o].http, 10, "after");
  ASSERT_TRUE(course_node::caught_up(nodes_[taker].http));
  EXPECT_EQ(seats(), recount());
  EXPECT_EQ(course_node::lock_holders(schema_), "dcbd:" + nodes_[taker].name);
  EXPECT_EQ(agreed_owner({0, 1, 2}), nodes_[taker].name);
  auto s = course_node::status(nodes_[o].http);
  EXPECT_EQ(s["state"], "standby") << s.dump();
  EXPECT_GT(s["epoch"].get<std::uint64_t>(), epoch);
}

TEST_F(Cluster, SigkillOfANonOwnerMovesNothing) {
  start_all();
  ASSERT_TRUE(eventually(
    [&] {
      return mesh({0, 1, 2});
    },
    10s));
  std::string owner;
  ASSERT_TRUE(eventually(
    [&] {
      return !(owner = running_owner()).empty();
    },
    10s));
  auto o = index_of(owner);
  auto victim = (o + 1) % 3;
  auto third = (o + 2) % 3;
  auto epoch = epoch_on(o);
  nodes_[victim].proc->process().signal(SIGKILL);
  nodes_[victim].proc->process().wait();
  ASSERT_TRUE(eventually(
    [&] {
      return view(o)[nodes_[victim].name] == "unreachable"
             && view(third)[nodes_[victim].name] == "unreachable";
    },
    10s));
  // The fast path tried the dead node's locks: it held none, nothing moves.
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(agreed_owner({o, third}), owner);
  EXPECT_EQ(epoch_on(o), epoch);
  EXPECT_EQ(course_node::status(nodes_[o].http)["state"], "running");
  EXPECT_EQ(course_node::lock_holders(schema_), "dcbd:" + owner);
  EXPECT_TRUE(mesh({o, third}));
}

TEST_F(Cluster, PostgresRestartEveryNodeRecoversWithOneOwner) {
  auto restart = std::getenv("DCBD_TEST_PG_RESTART");
  if (!restart || !*restart) {
    if (std::getenv("CI"))
      FAIL() << "DCBD_TEST_PG_RESTART is not set (run through ./dev test)";
    GTEST_SKIP() << "DCBD_TEST_PG_RESTART is not set (run through ./dev test)";
  }
  start_all();
  ASSERT_TRUE(eventually(
    [&] {
      return mesh({0, 1, 2});
    },
    10s));
  ASSERT_TRUE(eventually(
    [&] {
      return !agreed_owner({0, 1, 2}).empty();
    },
    10s));
  append(nodes_[0].http, 10, "before");
  auto epoch = epoch_on(index_of(agreed_owner({0, 1, 2})));
  ASSERT_EQ(std::system(restart), 0) << restart;
  // Each node appends again (after its reconnects), one owner runs it.
  for (std::size_t i = 0; i < 3; ++i)
    append(nodes_[i].http, 5, "after" + std::to_string(i) + "-");
  std::string owner;
  ASSERT_TRUE(eventually(
    [&] {
      owner = agreed_owner({0, 1, 2});
      return !owner.empty()
             && course_node::lock_holders(schema_) == "dcbd:" + owner;
    },
    30s))
    << course_node::lock_holders(schema_);
  auto o = index_of(owner);
  ASSERT_LT(o, 3u);
  ASSERT_TRUE(course_node::caught_up(nodes_[o].http));
  EXPECT_GT(epoch_on(o), epoch);
  EXPECT_EQ(seats(), recount());
  // The mesh does not depend on the database.
  EXPECT_TRUE(mesh({0, 1, 2}));
}

TEST_F(Cluster, ANodeRestartedOnTheSamePortsRejoins) {
  start_all();
  ASSERT_TRUE(eventually(
    [&] {
      return mesh({0, 1, 2});
    },
    10s));
  auto incarnation_of = [&](std::size_t seen_by, const std::string& name) {
    auto j = cluster_of(nodes_[seen_by].http);
    for (auto& m : j["members"])
      if (m["name"] == name)
        return m["incarnation"].get<std::string>();
    return std::string{};
  };
  auto before = incarnation_of(0, "n2");
  ASSERT_FALSE(before.empty());
  nodes_[1].proc->process().signal(SIGKILL);
  nodes_[1].proc->process().wait();
  ASSERT_TRUE(eventually(
    [&] {
      return view(0)["n2"] == "unreachable";
    },
    10s));
  auto t0 = steady::now();
  start(1);
  ASSERT_TRUE(eventually(
    [&] {
      return mesh({0, 1, 2});
    },
    15s))
    << cluster_of(nodes_[0].http).dump();
  std::cout << "[          ] the restarted node rejoined " << ms_since(t0)
            << " ms after it listened\n";
  auto after = incarnation_of(0, "n2");
  EXPECT_NE(after, before);
  EXPECT_EQ(incarnation_of(2, "n2"), after);
  // Once: the old incarnation is gone from every list.
  for (std::size_t i = 0; i < 3; ++i)
    EXPECT_EQ(cluster_of(nodes_[i].http)["members"].size(), 3u);
}

// A node restarted under its name on another cluster address is listed
// once, at the new address, not also as an unreachable ghost of the old
// one; `dcbctl cluster` shows the same.
TEST_F(Cluster, ANodeRestartedOnANewAddressIsListedOnce) {
  start_all();
  ASSERT_TRUE(eventually(
    [&] {
      return mesh({0, 1, 2});
    },
    10s));
  nodes_[1].proc->process().signal(SIGKILL);
  nodes_[1].proc->process().wait();
  ASSERT_TRUE(eventually(
    [&] {
      return view(0)["n2"] == "unreachable";
    },
    10s));
  auto old_addr = addr(nodes_[1]);
  nodes_[1].cluster = free_tcp_port();
  auto new_addr = addr(nodes_[1]);
  // Also told which HTTP address to show (a published port, say).
  start(1, {}, {{"DCB_HTTP_ADVERTISE", "n2.example:18082"}});
  // n1 and n3 list three members, n2 up at its new address. (n2 itself
  // still dials its old address, a configured seed nobody answers at.)
  auto listed_once = [&](std::size_t i) {
    auto j = cluster_of(nodes_[i].http);
    if (!j.contains("members") || j["members"].size() != 3)
      return false;
    for (auto& m : j["members"])
      if (m["name"] == "n2")
        return m["addr"] == new_addr && m["status"] == "up"
               && m["http"] == "n2.example:18082";
    return false;
  };
  EXPECT_TRUE(eventually(
    [&] {
      return listed_once(0) && listed_once(2);
    },
    15s))
    << cluster_of(nodes_[0].http).dump() << "\n"
    << cluster_of(nodes_[2].http).dump();
  auto v = view(1);
  EXPECT_EQ(v["n1"], "up");
  EXPECT_EQ(v["n3"], "up");
  // dcbctl cluster on n1: n2 once, at the new address.
  child_process ctl{{DCBCTL_BINARY, "--url",
                     "http://127.0.0.1:" + std::to_string(nodes_[0].http),
                     "cluster"},
                    {}};
  EXPECT_EQ(WEXITSTATUS(ctl.wait()), 0) << ctl.output();
  auto out = ctl.output();
  EXPECT_NE(out.find("n1 (self)"), std::string::npos) << out;
  EXPECT_NE(out.find(new_addr), std::string::npos) << out;
  EXPECT_EQ(out.find(old_addr), std::string::npos) << out;
  EXPECT_NE(out.find("up"), std::string::npos) << out;
}

TEST_F(Cluster, OtherSettingsOrAnotherClusterAreRefused) {
  start(0);
  start(1);
  ASSERT_TRUE(eventually(
    [&] {
      return mesh({0, 1});
    },
    10s));
  // Other heartbeat settings: the handshake refuses it.
  start(2, {"--middleman.heartbeat-interval=200ms"});
  ASSERT_TRUE(eventually(
    [&] {
      return file_text(nodes_[2].proc->log()).find("refused")
             != std::string::npos;
    },
    10s))
    << file_text(nodes_[2].proc->log());
  std::this_thread::sleep_for(2s);
  EXPECT_NE(view(0)["n3"], "up");
  EXPECT_NE(view(1)["n3"], "up");
  EXPECT_NE(view(2)["n1"], "up");
  EXPECT_TRUE(eventually(
    [&] {
      auto refused = metric(0, "dcb_cluster_handshakes_refused_total");
      return !refused.empty() && refused != "0";
    },
    5s));
  EXPECT_TRUE(mesh({0, 1}));
  nodes_[2].proc.reset();

  // Another connection timeout (the other setting failure detection rests
  // on): refused the same way.
  auto refused_by_n1 = metric(0, "dcb_cluster_handshakes_refused_total");
  start(2, {"--middleman.connection-timeout=5s"});
  EXPECT_TRUE(eventually(
    [&] {
      return metric(0, "dcb_cluster_handshakes_refused_total") != refused_by_n1;
    },
    10s))
    << file_text(nodes_[2].proc->log());
  EXPECT_NE(view(0)["n3"], "up");
  EXPECT_NE(view(2)["n1"], "up");
  EXPECT_TRUE(mesh({0, 1}));
  nodes_[2].proc.reset();

  // Another cluster name: CAF's application identifier keeps it out.
  start(2, {}, {{"DCB_CLUSTER_NAME", "elsewhere"}});
  std::this_thread::sleep_for(3s);
  EXPECT_NE(view(0)["n3"], "up");
  EXPECT_NE(view(2)["n1"], "up");
  EXPECT_NE(file_text(nodes_[2].proc->log()).find("another cluster"),
            std::string::npos)
    << file_text(nodes_[2].proc->log());
  EXPECT_TRUE(mesh({0, 1}));
  nodes_[2].proc.reset();

  // A second node named n1 while n1 is up: both n1 and n2 refuse it, and
  // n2 still lists the real n1.
  auto refused_before = metric(1, "dcb_cluster_handshakes_refused_total");
  start(2, {}, {{"DCB_NODE_NAME", "n1"}});
  EXPECT_TRUE(eventually(
    [&] {
      return metric(1, "dcb_cluster_handshakes_refused_total")
             != refused_before;
    },
    10s))
    << file_text(nodes_[1].proc->log());
  EXPECT_NE(file_text(nodes_[1].proc->log()).find("the name n1 is taken"),
            std::string::npos)
    << file_text(nodes_[1].proc->log());
  // (The two n1s take turns at the membership row, so the impostor's
  // address may be listed too, but never as up.)
  auto board = cluster_of(nodes_[1].http);
  int up_n1 = 0;
  for (auto& m : board["members"])
    if (m["name"] == "n1" && m["status"] == "up") {
      ++up_n1;
      EXPECT_EQ(m["addr"], addr(nodes_[0])) << board.dump();
    }
  EXPECT_EQ(up_n1, 1) << board.dump();
  nodes_[2].proc.reset();
  EXPECT_TRUE(eventually(
    [&] {
      return mesh({0, 1});
    },
    10s))
    << cluster_of(nodes_[1].http).dump();
}

TEST_F(Cluster, BadClusterSettingsStopTheNodeWithAClearError) {
  struct bad_case {
    std::vector<std::string> args;
    std::vector<std::pair<std::string, std::string>> env;
    std::string says;
  };
  std::vector<bad_case> cases{
    {{}, {{"DCB_CLUSTER_ADDR", "nonsense"}}, "DCB_CLUSTER_ADDR must be"},
    {{}, {{"DCB_CLUSTER_ADDR", "127.0.0.1:0"}}, "DCB_CLUSTER_ADDR must be"},
    {{},
     {{"DCB_CLUSTER_ADDR", addr(nodes_[0])},
      {"DCB_CLUSTER_SEEDS", "127.0.0.1:1,bad seed"}},
     "DCB_CLUSTER_SEEDS must be"},
    {{}, {{"DCB_CLUSTER_SEEDS", addr(nodes_[0])}}, "needs DCB_CLUSTER_ADDR"},
    {{"--middleman.heartbeat-interval=0s"},
     {{"DCB_CLUSTER_ADDR", addr(nodes_[0])}},
     "heartbeat-interval must be set"},
    {{"--middleman.connection-timeout=500ms"},
     {{"DCB_CLUSTER_ADDR", addr(nodes_[0])}},
     "must be longer than"},
  };
  for (auto& c : cases) {
    auto log = "/tmp/dcbd-cluster-bad-" + std::to_string(::getpid()) + ".log";
    std::vector<std::string> argv{DCBD_BINARY};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    auto env = c.env;
    env.emplace_back("DCB_POSTGRES_DSN", test_dsn());
    env.emplace_back("DCB_SCHEMA", schema_);
    env.emplace_back("DCB_HTTP_ADDR",
                     "127.0.0.1:" + std::to_string(free_tcp_port()));
    env.emplace_back("DCB_METRICS_ADDR",
                     "127.0.0.1:" + std::to_string(free_tcp_port()));
    child_process p{argv, env, log};
    auto status = p.wait();
    auto text = file_text(log);
    ::unlink(log.c_str());
    ASSERT_TRUE(WIFEXITED(status)) << text;
    EXPECT_EQ(WEXITSTATUS(status), 2) << text;
    EXPECT_NE(text.find(c.says), std::string::npos) << text;
  }
}

} // namespace
} // namespace dcbd::test

namespace dcbd::test {
namespace {

// -- forwarded appends (issue 14 item 4) --------------------------------------

// n2 and n3 forward their appends to n1's store actor: appends through
// every node are committed exactly once, two nodes racing on one condition
// yield one winner, and a node reads its own forwarded appends at once.
TEST_F(Cluster, ForwardedAppendsOnceConflictsAndReadYourWrites) {
  start_forwarding("n1");
  // Appends through the three at once.
  std::vector<std::thread> writers;
  for (std::size_t i = 0; i < 3; ++i)
    writers.emplace_back([&, i] {
      append(nodes_[i].http, 150, "f" + std::to_string(i) + "-");
    });
  for (auto& t : writers)
    t.join();
  EXPECT_EQ(subscriptions("f"), std::make_pair(450L, 450L));
  // The others forwarded theirs, the writer forwarded nothing.
  ASSERT_TRUE(eventually(
    [&] {
      return forwarded(1, "acked") >= 150 && forwarded(2, "acked") >= 150;
    },
    5s))
    << forwarded(1, "acked") << " " << forwarded(2, "acked");
  EXPECT_EQ(forwarded(1, "local"), 0);
  EXPECT_EQ(forwarded(2, "unavailable"), 0);
  EXPECT_EQ(forwarded(0, "acked"), 0);

  // Eight callers on each forwarding node at once: their appends share
  // batches (fewer batches than appends), and every forwarded append went
  // in exactly one batch.
  std::vector<std::thread> crowd;
  for (std::size_t i : {1, 2})
    for (int t = 0; t < 8; ++t)
      crowd.emplace_back([&, i, t] {
        append(nodes_[i].http, 40,
               "g" + std::to_string(i) + "-" + std::to_string(t) + "-");
      });
  for (auto& t : crowd)
    t.join();
  EXPECT_EQ(subscriptions("g"), std::make_pair(640L, 640L));
  for (std::size_t i : {1, 2}) {
    auto ended = forwarded(i, "acked") + forwarded(i, "rejected")
                 + forwarded(i, "unavailable");
    EXPECT_EQ(ended, 150 + 320) << nodes_[i].name;
    EXPECT_EQ(batch_metric(i, "sum"), ended) << nodes_[i].name;
    EXPECT_LT(batch_metric(i, "count"), ended) << nodes_[i].name;
    EXPECT_GT(batch_metric(i, "count"), 0) << nodes_[i].name;
  }

  // n2 and n3 race on the same condition, 20 times: one wins each.
  for (int k = 0; k < 20; ++k) {
    auto tag = "race:" + std::to_string(k);
    auto body = json{{"events", {ev("Raced", {tag})}},
                     {"condition", {{"failIfEventsMatch", items({}, {tag})}}}};
    std::atomic<int> won{0};
    std::atomic<int> lost{0};
    std::vector<std::thread> racers;
    for (std::size_t i : {1, 2})
      racers.emplace_back([&, i] {
        client c{nodes_[i].http};
        auto r = c.post("/v1/append", body);
        if (r.status == 200)
          ++won;
        else if (r.status == 409)
          ++lost;
      });
    for (auto& t : racers)
      t.join();
    EXPECT_EQ(won.load(), 1) << tag;
    EXPECT_EQ(lost.load(), 1) << tag;
    EXPECT_EQ(exec_sql("SELECT count(*) FROM " + schema_
                       + ".events WHERE type = 'Raced' AND '" + tag
                       + "' = ANY(tags)"),
              "1")
      << tag;
  }
  EXPECT_GE(forwarded(1, "rejected") + forwarded(2, "rejected"), 20);

  // Read your writes through the forwarding node, at once.
  client c{nodes_[1].http};
  for (int k = 0; k < 30; ++k) {
    auto tag = "ryw:" + std::to_string(k);
    auto r = c.post("/v1/append", json{{"events", {ev("Mine", {tag})}}});
    ASSERT_EQ(r.status, 200u) << r.body;
    auto pos = r.j()["last_position"].get<std::uint64_t>();
    auto read = c.get(read_target("/v1/read", items({}, {tag})));
    ASSERT_EQ(read.status, 200u) << read.body;
    EXPECT_NE(read.body.find("\"position\":" + std::to_string(pos)),
              std::string::npos)
      << tag << " at " << pos << ": " << read.body;
  }
}

// SIGKILL of the writer while the others append through it: they fall back
// to local appends; every acknowledged append is in the database once.
TEST_F(Cluster, SigkillOfTheWriterAppendsFallBackToLocal) {
  start_forwarding("n1");
  std::atomic<bool> writing{true};
  std::mutex mtx;
  std::set<std::string> acked;
  std::atomic<int> after_kill{0};
  std::atomic<bool> killed{false};
  std::vector<std::thread> writers;
  for (std::size_t i : {1, 2})
    writers.emplace_back([&, i] {
      int k = 0;
      while (writing) {
        try {
          client c{nodes_[i].http};
          while (writing) {
            auto student = "k" + std::to_string(i) + "-" + std::to_string(k++);
            auto r = c.post(
              "/v1/append",
              json{{"events", {course_node::subscribe_event(student, "c1")}}});
            if (r.closed)
              break;
            if (r.status == 200) {
              std::lock_guard guard{mtx};
              acked.insert(student);
              if (killed)
                ++after_kill;
            }
          }
        } catch (const std::exception&) {
          std::this_thread::sleep_for(20ms);
        }
      }
    });
  ASSERT_TRUE(eventually(
    [&] {
      return forwarded(1, "acked") > 50 && forwarded(2, "acked") > 50;
    },
    10s));
  nodes_[0].proc->process().signal(SIGKILL);
  nodes_[0].proc->process().wait();
  killed = true;
  // The others keep appending, locally.
  EXPECT_TRUE(eventually(
    [&] {
      return after_kill.load() > 100 && forwarded(1, "local") > 0
             && forwarded(2, "local") > 0;
    },
    10s))
    << after_kill.load();
  writing = false;
  for (auto& t : writers)
    t.join();
  std::cout << "[          ] " << acked.size() << " acknowledged, "
            << after_kill.load() << " after the kill; unavailable: "
            << forwarded(1, "unavailable") + forwarded(2, "unavailable")
            << "\n";
  // Each acknowledged append is there; nothing is there twice.
  auto [rows, distinct] = subscriptions("k");
  EXPECT_EQ(rows, distinct);
  EXPECT_GE(rows, static_cast<long>(acked.size()));
  std::string missing;
  for (auto& student : acked)
    if (exec_sql("SELECT count(*) FROM " + schema_
                 + ".events WHERE type = 'StudentSubscribed' AND "
                   "convert_from(data, 'UTF8')::jsonb ->> 'student' = '"
                 + student + "'")
        != "1")
      missing += student + " ";
  EXPECT_EQ(missing, "");
}

// Each node's store actor announces its commits to the peers' buses, so the
// nodes follow each other's appends without reading them back. A long
// grace and no polling make any read of the log visible: every event a
// node did not commit itself must have come from a peer's announcement.
TEST_F(Cluster, NodesFollowEachOthersCommitsFromAnnouncementsWithoutReading) {
  for (std::size_t i = 0; i < nodes_.size(); ++i)
    start(i, {"--dcbd.bus-feed-grace-ms=3000", "--dcbd.bus-poll-ms=600000"});
  ASSERT_TRUE(eventually(
    [&] {
      return mesh({0, 1, 2});
    },
    10s));
  // Once a node has read its peers' rows in the membership table, they
  // get its bus.
  for (auto& m : nodes_)
    ASSERT_TRUE(eventually(
      [&] {
        auto log = file_text(m.proc->log());
        for (auto& other : nodes_)
          if (other.name != m.name
              && log.find("announcing commits to " + other.name + "'s bus")
                   == std::string::npos)
            return false;
        return true;
      },
      15s))
      << file_text(m.proc->log());
  auto fed = [&](std::size_t i, const std::string& source) {
    auto v = metric(i, "dcb_bus_events_fed_total{source=\"" + source + "\"}");
    return v.empty() ? -1L : std::stol(v);
  };
  auto head = [&] {
    return std::stol(exec_sql("SELECT position FROM " + schema_ + ".head"));
  };
  // Every node has applied the log as it is now.
  auto settled = [&] {
    auto h = std::to_string(head());
    for (std::size_t i = 0; i < nodes_.size(); ++i)
      if (metric(i, "dcb_head_position") != h)
        return false;
    return true;
  };
  ASSERT_TRUE(eventually(settled, 10s));
  std::vector<std::array<long, 3>> before;
  for (std::size_t i = 0; i < nodes_.size(); ++i)
    before.push_back({fed(i, "store"), fed(i, "peer"), fed(i, "read")});
  // Two writers at once, so that the announcements of n1 and n2 reach n3
  // interleaved and out of order.
  std::thread other{[&] {
    append(nodes_[1].http, 60, "b");
  }};
  append(nodes_[0].http, 90, "a");
  other.join();
  ASSERT_TRUE(eventually(settled, 10s)) << head();
  std::array<long, 3> own{90, 60, 0};
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    EXPECT_EQ(fed(i, "store") - before[i][0], own[i]) << nodes_[i].name;
    EXPECT_EQ(fed(i, "peer") - before[i][1], 150 - own[i]) << nodes_[i].name;
    EXPECT_EQ(fed(i, "read") - before[i][2], 0) << nodes_[i].name;
  }
  // What they deliver is the log: n3 (which committed nothing) streams the
  // same 150 events as the database holds, in order.
  auto from = head() - 149;
  auto db = exec_sql(
    "SELECT string_agg(position || ' ' || type || ' ' || convert_from(data, "
    "'UTF8'), ',' ORDER BY position) FROM "
    + schema_ + ".events WHERE position >= " + std::to_string(from));
  client c{nodes_[2].http};
  auto r = c.get("/read?options=" + url_encode(json{{"from", from}}.dump()));
  ASSERT_EQ(r.status, 200u) << r.body;
  std::string got;
  for (auto& e : json::parse(r.body))
    got += (got.empty() ? "" : ",") + std::to_string(e["position"].get<long>())
           + " " + e["type"].get<std::string>() + " "
           + e["data"].get<std::string>();
  EXPECT_EQ(got, db);

  // A link that drops and comes back (the same incarnation, frozen past the
  // connection timeout) takes the announcements up again.
  auto announced_to_n3 = [&] {
    auto log = file_text(nodes_[0].proc->log());
    std::size_t n = 0;
    for (auto at = log.find("announcing commits to n3's bus");
         at != std::string::npos;
         at = log.find("announcing commits to n3's bus", at + 1))
      ++n;
    return n;
  };
  ASSERT_EQ(announced_to_n3(), 1u);
  nodes_[2].proc->process().signal(SIGSTOP);
  ASSERT_TRUE(eventually(
    [&] {
      return view(0)["n3"] == "unreachable";
    },
    10s));
  nodes_[2].proc->process().signal(SIGCONT);
  ASSERT_TRUE(eventually(
    [&] {
      return mesh({0, 1, 2}) && announced_to_n3() == 2;
    },
    15s))
    << file_text(nodes_[0].proc->log());
  ASSERT_TRUE(eventually(settled, 10s));
  auto read_before = fed(2, "read");
  auto peer_before = fed(2, "peer");
  append(nodes_[0].http, 30, "c");
  ASSERT_TRUE(eventually(settled, 10s)) << head();
  EXPECT_EQ(fed(2, "peer") - peer_before, 30);
  EXPECT_EQ(fed(2, "read") - read_before, 0);
}

// A node gives its bus only to peers in its own membership table: a node
// of the same cluster on another schema (its own log) is linked but never
// announces its commits there.
TEST_F(Cluster, APeerOnAnotherSchemaAnnouncesNothing) {
  auto other_schema = schema_ + "_other";
  start(0);
  {
    auto& m = nodes_[1];
    m.http = free_tcp_port();
    m.proc = std::make_unique<node_process>(
      other_schema, std::vector<std::string>{}, m.http,
      std::vector<std::pair<std::string, std::string>>{
        {"DCB_NODE_NAME", m.name},
        {"DCB_CLUSTER_ADDR", addr(m)},
        {"DCB_CLUSTER_SEEDS", seeds_}},
      DCBD_COURSES_BINARY);
    ASSERT_TRUE(m.proc->up()) << file_text(m.proc->log());
  }
  ASSERT_TRUE(eventually(
    [&] {
      return mesh({0, 1});
    },
    10s));
  // Past a few rounds of the membership table and of asking.
  std::this_thread::sleep_for(5s);
  append(nodes_[0].http, 20, "x");
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(metric(1, "dcb_bus_events_fed_total{source=\"peer\"}"), "0");
  EXPECT_EQ(metric(1, "dcb_head_position"), "0");
  EXPECT_EQ(file_text(nodes_[0].proc->log()).find("announcing commits to n2"),
            std::string::npos);
  nodes_[1].proc.reset();
  exec_sql("DROP SCHEMA IF EXISTS " + other_schema + " CASCADE");
}

} // namespace
} // namespace dcbd::test
