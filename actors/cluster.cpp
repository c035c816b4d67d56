// The cluster's agent and membership (see actors/cluster.hpp).
//
// Two actors per node:
//   agent     scheduled; published on the cluster address: handshakes,
//             links and their DOWNs, dialing, forwarded management calls
//   registry  detached (blocks on PostgreSQL): this node's row in the
//             membership table, and the rows of the others for the agent
// The members list goes through a board (a mutex), so HTTP and metrics read
// it without messaging.
//
// Forwarded appends (issue 14 item 4; opt-in with `cluster_config::writer`,
// `--dcbd.cluster-writer`). Two more actors per node:
//   ingress    scheduled; every node has one and its agent hands it out
//              (`(cl_store_atom) -> actor`): takes `(cl_append_atom, id,
//              forward_batch)` from a peer's forwarder, validates each
//              append again and appends it through this node's own store
//              actor (`engine::append_local`), and answers `(cl_acked_atom,
//              id, forward_answers)` once the whole batch is answered.
//   forwarder  scheduled; only on a node whose writer is another node: the
//              engine's route hands it each valid append while the writer's
//              ingress is known; it sends them to the writer in batches, at
//              most `forward_batches` in flight (what arrives meanwhile
//              waits and goes as the next batch, so batches grow with the
//              load like the writer's groups, and an append costs a share
//              of one message each way instead of two), at most
//              `forward_window` appends pending or in flight, and answers
//              each caller when the writer answers its batch.
// Correctness does not depend on it: the condition is checked in the
// writer's transaction as in any append. When the writer is not linked (not
// yet, or DOWN) or the window is full, the append goes to this node's own
// store actor (always safe), and so do appends still waiting for a batch
// when the link drops (never sent). When the link drops or no answer comes
// within `forward_timeout` while an append is in flight, it fails with
// `unavailable` (it may or may not be committed, as after a local timeout)
// and is never retried, so nothing is appended twice. This node's cache and
// bus learn forwarded appends from the writer's announcements (shared
// commits, below) or else through LISTEN/NOTIFY and catch-up; reads stay
// linearizable through the read index. Commands (`engine::execute`, the
// appender pool) still append locally.
//
// Shared commits (`cluster_service::share_commits`): each node's store
// actor announces its commits to the buses of its peers too, so a node
// follows the others' appends from memory instead of reading every group
// back from PostgreSQL (what an idle follower spent most of its CPU on, and
// the database a read per group per node). On a link the agent asks the
// peer's agent for its bus (`(cl_bus_atom, incarnation) -> actor`) and
// registers it as a listener of this node's store actor (the store actor
// drops it on its DOWN). A node hands its bus out only to a linked peer
// whose incarnation is in its own membership table: that peer writes to the
// same database and schema, so its announcements are part of this node's
// log. The bus applies announcements in position order whoever sent them
// and waits `bus_config::feed_grace` for a missing one before it reads the
// gap, so correctness never depends on them.
#include "actors/cluster.hpp"

#include "actors/engine.hpp"
#include "actors/projector.hpp"
#include "store/error.hpp"
#include "store/pg_cluster.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/io/middleman.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>

#include <algorithm>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <unordered_map>

namespace dcbd {

namespace {

using clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

} // namespace

// -- wire types (field order is the wire format: only ever append) ----------

/// The handshake, both ways.
struct cluster_hello {
  std::string name;
  /// The sender's agent address, host:port.
  std::string addr;
  std::string http;
  std::string incarnation;
  std::string cluster;
  std::uint32_t protocol = 0;
  std::int64_t heartbeat_ms = 0;
  std::int64_t timeout_ms = 0;
  /// Agent addresses of the peers the sender is linked to.
  std::vector<std::string> peers;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, cluster_hello& x) {
  return f(caf::meta::type_name("dcbd::cluster_hello"), x.name, x.addr, x.http,
           x.incarnation, x.cluster, x.protocol, x.heartbeat_ms, x.timeout_ms,
           x.peers);
}

/// The owner's answer to a forwarded management call.
struct cluster_projector_reply {
  std::uint8_t code = 0;
  std::string message;
  std::string name;
  std::uint8_t state = 0;
  std::uint64_t position = 0;
  std::uint64_t head = 0;
  std::uint64_t lag = 0;
  std::string owner;
  std::uint64_t epoch = 0;
  std::uint64_t dead_letters = 0;
  std::int32_t version = 0;
  std::string error;
};

template <class Inspector>
typename Inspector::result_type
inspect(Inspector& f, cluster_projector_reply& x) {
  return f(caf::meta::type_name("dcbd::cluster_projector_reply"), x.code,
           x.message, x.name, x.state, x.position, x.head, x.lag, x.owner,
           x.epoch, x.dead_letters, x.version, x.error);
}

/// Appends a forwarder sends its writer's ingress in one message.
struct forward_batch {
  std::vector<append_request> requests;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, forward_batch& x) {
  return f(caf::meta::type_name("dcbd::forward_batch"), x.requests);
}

/// The outcome of one forwarded append: `code` is an errc as a byte (0 is
/// success) with its message; on success the positions of its first and
/// last event.
struct forward_answer {
  std::uint8_t code = 0;
  std::string message;
  std::uint64_t first = 0;
  std::uint64_t last = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, forward_answer& x) {
  return f(caf::meta::type_name("dcbd::forward_answer"), x.code, x.message,
           x.first, x.last);
}

/// The ingress's answer to a `forward_batch`, in request order.
struct forward_answers {
  std::vector<forward_answer> answers;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, forward_answers& x) {
  return f(caf::meta::type_name("dcbd::forward_answers"), x.answers);
}

} // namespace dcbd

namespace dcbd {
namespace {

/// A management call for the owner `owner`, from this node's projector host.
struct forward_call {
  std::string owner;
  std::string name;
  projector_action action = projector_action::pause;
  std::uint64_t position = 0;
  std::uint64_t epoch = 0;
  std::function<void(std::optional<projector_reply>)> done;
};

} // namespace
} // namespace dcbd

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<dcbd::member_row>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dcbd::forward_call)

namespace dcbd {

namespace {

using cl_hello_atom = caf::atom_constant<caf::atom("clHello")>;
using cl_bye_atom = caf::atom_constant<caf::atom("clBye")>;
using cl_prj_atom = caf::atom_constant<caf::atom("clPrj")>;
using cl_prj_done_atom = caf::atom_constant<caf::atom("clPrjDone")>;
using cl_tick_atom = caf::atom_constant<caf::atom("clTick")>;
using cl_rows_atom = caf::atom_constant<caf::atom("clRows")>;
using cl_stop_atom = caf::atom_constant<caf::atom("clStop")>;
using cl_forward_atom = caf::atom_constant<caf::atom("clForward")>;
using cl_store_atom = caf::atom_constant<caf::atom("clStore")>;
using cl_append_atom = caf::atom_constant<caf::atom("clAppend")>;
using cl_acked_atom = caf::atom_constant<caf::atom("clAcked")>;
using cl_fwd_atom = caf::atom_constant<caf::atom("clFwd")>;
using cl_target_atom = caf::atom_constant<caf::atom("clTarget")>;
using cl_expire_atom = caf::atom_constant<caf::atom("clExpire")>;
using cl_flush_atom = caf::atom_constant<caf::atom("clFlush")>;
using cl_bus_atom = caf::atom_constant<caf::atom("clBus")>;

cluster_projector_reply to_wire(const projector_reply& r) {
  cluster_projector_reply w;
  w.code = static_cast<std::uint8_t>(r.what);
  w.message = r.message;
  auto& s = r.status;
  w.name = s.name;
  w.state = static_cast<std::uint8_t>(s.state);
  w.position = s.position;
  w.head = s.head;
  w.lag = s.lag;
  w.owner = s.owner;
  w.epoch = s.epoch;
  w.dead_letters = s.dead_letters;
  w.version = s.version;
  w.error = s.error;
  return w;
}

projector_reply from_wire(const cluster_projector_reply& w) {
  projector_reply r;
  r.what = w.code <= static_cast<std::uint8_t>(projector_reply::code::internal)
             ? static_cast<projector_reply::code>(w.code)
             : projector_reply::code::internal;
  r.message = w.message;
  auto& s = r.status;
  s.name = w.name;
  s.state = w.state <= static_cast<std::uint8_t>(projector_state::rebuilding)
              ? static_cast<projector_state>(w.state)
              : projector_state::standby;
  s.position = w.position;
  s.head = w.head;
  s.lag = w.lag;
  s.owner = w.owner;
  s.epoch = w.epoch;
  s.dead_letters = w.dead_letters;
  s.version = w.version;
  s.error = w.error;
  return r;
}

std::string new_incarnation() {
  std::random_device rd;
  std::mt19937_64 gen{
    (static_cast<std::uint64_t>(rd()) << 32) ^ rd()
    ^ static_cast<std::uint64_t>(clock::now().time_since_epoch().count())};
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < 2; ++i) {
    auto v = gen();
    for (int j = 0; j < 16; ++j, v >>= 4)
      out += hex[v & 15];
  }
  return out;
}

std::int64_t setting_ms(const caf::actor_system_config& cfg, const char* key) {
  auto t = caf::get_or(cfg, key, caf::timespan{0});
  return std::chrono::duration_cast<std::chrono::milliseconds>(t).count();
}

// -- shared state -------------------------------------------------------------

/// What the façade, the agent and the registry share.
struct cluster_env {
  cluster_config cfg;
  std::string self_addr;
  std::string incarnation = new_incarnation();
  std::int64_t heartbeat_ms = 0;
  std::int64_t timeout_ms = 0;
  std::chrono::system_clock::time_point started
    = std::chrono::system_clock::now();

  mutable std::mutex mtx;
  std::vector<cluster_member> members;
  std::map<std::string, caf::actor> up_by_name;
  projector_host* host = nullptr;
  // Forwarded appends: this node's ingress (handed to peers) and its
  // forwarder (null when it forwards nothing).
  caf::actor ingress;
  caf::actor forwarder;
  // Shared commits: this node's store actor and bus (null until
  // `share_commits`).
  caf::actor store;
  caf::actor bus;

  projector_host* projectors() const {
    std::lock_guard guard{mtx};
    return host;
  }
};

// -- registry -----------------------------------------------------------------

struct registry_state {
  std::shared_ptr<cluster_env> env;
  std::unique_ptr<pg_cluster_registry> db;
  caf::actor agent;
  bool joined = false;
  std::string last_error;
  static inline const char* name = "dcbd.cluster_registry";
};

using registry_actor = caf::stateful_actor<registry_state>;

void registry_refresh(registry_actor* self) {
  auto& st = self->state;
  auto& env = *st.env;
  try {
    if (!st.joined || !st.db->touch(env.cfg.node, env.incarnation)) {
      if (st.joined)
        std::cerr << "dcbd: cluster: another start of node " << env.cfg.node
                  << " took its membership row" << std::endl;
      st.db->join(
        {env.cfg.node, env.self_addr, env.cfg.http, env.incarnation, 0});
      st.joined = true;
    }
    self->send(st.agent, cl_rows_atom::value, st.db->rows(env.cfg.forget));
    st.last_error.clear();
  } catch (const store_error& e) {
    if (st.last_error != e.what()) {
      st.last_error = e.what();
      std::cerr << "dcbd: cluster: membership table: " << e.what() << std::endl;
    }
  }
}

caf::behavior registry_impl(registry_actor* self,
                            std::shared_ptr<cluster_env> env, pg_config db,
                            caf::actor agent) {
  auto& st = self->state;
  st.env = env;
  st.agent = agent;
  db.connect_timeout = std::min(db.connect_timeout, 2000ms);
  st.db = std::make_unique<pg_cluster_registry>(db);
  self->send(self, cl_tick_atom::value);
  return {
    [self](cl_tick_atom) {
      registry_refresh(self);
      self->delayed_send(self, self->state.env->cfg.refresh,
                         cl_tick_atom::value);
    },
    [self](cl_stop_atom) {
      auto& st = self->state;
      try {
        st.db->leave(st.env->cfg.node, st.env->incarnation);
      } catch (const store_error& e) {
        std::cerr << "dcbd: cluster: cannot leave the membership table: "
                  << e.what() << std::endl;
      }
      self->quit();
      return true;
    },
  };
}

// -- agent --------------------------------------------------------------------

struct peer_entry {
  cluster_address addr;
  std::string name;
  std::string http;
  std::string incarnation;
  /// Its agent, while linked.
  caf::actor handle;
  bool up = false;
  bool dialing = false;
  /// Said goodbye: hidden until it comes back.
  bool left = false;
  /// A seed address whose node is now at another address: hidden (and
  /// still dialed, as a seed) until a node answers there again.
  bool moved = false;
  /// Learned or last lost at; a peer that sorts before this node gets a
  /// second to dial before this node dials it.
  clock::time_point learned = clock::now();
  clock::time_point next_try{};
  std::chrono::milliseconds backoff{0};
  std::chrono::system_clock::time_point since
    = std::chrono::system_clock::now();
  std::string last_error;
  /// Shared commits: the incarnation whose bus this node's store actor
  /// announces to ("": none yet), and the next time to ask for it.
  std::string bus_incarnation;
  bool asking_bus = false;
  clock::time_point next_bus_ask{};
};

struct agent_state {
  std::shared_ptr<cluster_env> env;
  caf::actor registry;
  /// By agent address.
  std::map<std::string, peer_entry> peers;
  /// Names of addresses from the membership table.
  std::map<std::string, std::string> row_names;
  /// Incarnations in the membership table (the last rows read).
  std::set<std::string> row_incarnations;
  std::map<std::uint64_t, caf::response_promise> calls;
  std::uint64_t next_call = 0;
  bool stopping = false;
  /// The writer's incarnation whose ingress the forwarder has ("": none),
  /// and whether the agent is asking for it.
  std::string writer_incarnation;
  bool asking_store = false;
  clock::time_point next_store_ask{};
  static inline const char* name = "dcbd.cluster_agent";
};

using agent_actor = caf::stateful_actor<agent_state>;

void publish_board(agent_actor* self) {
  auto& st = self->state;
  auto& env = *st.env;
  std::vector<cluster_member> out;
  cluster_member me;
  me.name = env.cfg.node;
  me.addr = env.self_addr;
  me.http = env.cfg.http;
  me.incarnation = env.incarnation;
  me.status = member_status::up;
  me.self = true;
  me.since = env.started;
  std::map<std::string, caf::actor> up;
  std::vector<cluster_member> peers;
  for (auto& [key, p] : st.peers) {
    if (p.left || (p.moved && !p.up))
      continue;
    cluster_member m;
    m.name = p.name;
    if (m.name.empty()) {
      auto i = st.row_names.find(key);
      m.name = i != st.row_names.end() ? i->second : key;
    }
    m.addr = key;
    m.http = p.http;
    m.incarnation = p.incarnation;
    m.status = p.up ? member_status::up : member_status::unreachable;
    m.since = p.since;
    if (p.up)
      up[p.name] = p.handle;
    peers.push_back(std::move(m));
  }
  std::sort(peers.begin(), peers.end(), [](auto& a, auto& b) {
    return a.name < b.name;
  });
  out.push_back(std::move(me));
  for (auto& m : peers)
    out.push_back(std::move(m));
  std::lock_guard guard{env.mtx};
  env.members = std::move(out);
  env.up_by_name = std::move(up);
}

// The entry of `key` (made when new); nullptr for this node's own address
// or a malformed one.
peer_entry* learn(agent_actor* self, const std::string& key) {
  auto& st = self->state;
  if (key == st.env->self_addr)
    return nullptr;
  auto i = st.peers.find(key);
  if (i != st.peers.end())
    return &i->second;
  auto addr = parse_cluster_address(key);
  if (!addr)
    return nullptr;
  peer_entry p;
  p.addr = *addr;
  return &st.peers.emplace(key, std::move(p)).first->second;
}

// The node `name` is now at `addr`: an entry for it at another address that
// is not up is its past (a restart on a new address) and goes; a configured
// seed's entry stays, nameless and hidden, and is still dialed. Without this
// the old address stayed on the board as unreachable forever.
void forget_old_addresses(agent_actor* self, const std::string& name,
                          const std::string& addr) {
  auto& st = self->state;
  auto seed = [&](const std::string& key) {
    for (auto& s : st.env->cfg.seeds)
      if (s.to_string() == key)
        return true;
    return false;
  };
  for (auto i = st.peers.begin(); i != st.peers.end();) {
    auto& [key, p] = *i;
    auto known_as = p.name;
    if (known_as.empty()) {
      auto r = st.row_names.find(key);
      if (r != st.row_names.end())
        known_as = r->second;
    }
    if (key == addr || p.up || known_as != name) {
      ++i;
      continue;
    }
    std::cout << "dcbd: cluster: " << name << " moved from " << key << " to "
              << addr << std::endl;
    if (p.handle)
      self->demonitor(p.handle);
    p.handle = nullptr;
    st.row_names.erase(key);
    if (seed(key)) {
      p.name.clear();
      p.http.clear();
      p.incarnation.clear();
      p.moved = true;
      ++i;
    } else {
      i = st.peers.erase(i);
    }
  }
}

cluster_hello hello_of(agent_actor* self) {
  auto& st = self->state;
  auto& env = *st.env;
  cluster_hello h;
  h.name = env.cfg.node;
  h.addr = env.self_addr;
  h.http = env.cfg.http;
  h.incarnation = env.incarnation;
  h.cluster = env.cfg.cluster_name;
  h.protocol = cluster_protocol;
  h.heartbeat_ms = env.heartbeat_ms;
  h.timeout_ms = env.timeout_ms;
  for (auto& [key, p] : st.peers)
    if (p.up)
      h.peers.push_back(key);
  return h;
}

// Why `theirs` cannot join this node's cluster (nullopt: it can).
std::optional<std::string> refusal(agent_actor* self,
                                   const cluster_hello& theirs) {
  auto& env = *self->state.env;
  if (theirs.protocol != cluster_protocol)
    return "it speaks cluster protocol " + std::to_string(theirs.protocol)
           + ", this node " + std::to_string(cluster_protocol);
  if (theirs.cluster != env.cfg.cluster_name)
    return "it belongs to cluster \"" + theirs.cluster + "\", not \""
           + env.cfg.cluster_name + "\"";
  if (theirs.heartbeat_ms != env.heartbeat_ms
      || theirs.timeout_ms != env.timeout_ms)
    return "its middleman heartbeat is " + std::to_string(theirs.heartbeat_ms)
           + " ms with a " + std::to_string(theirs.timeout_ms)
           + " ms connection timeout, this node's "
           + std::to_string(env.heartbeat_ms) + " ms and "
           + std::to_string(env.timeout_ms) + " ms";
  if (theirs.name == env.cfg.node)
    return "it has this node's name, " + theirs.name;
  if (theirs.addr == env.self_addr)
    return "it has this node's address, " + theirs.addr;
  for (auto& [key, p] : self->state.peers)
    if (p.up && p.name == theirs.name && key != theirs.addr)
      return "the name " + theirs.name + " is taken by the node at " + key;
  return std::nullopt;
}

void refused(agent_actor* self, const std::string& who,
             const std::string& why) {
  std::cerr << "dcbd: cluster: refused " << who << ": " << why << std::endl;
  if (self->state.env->cfg.on_refused)
    self->state.env->cfg.on_refused();
}

// A handshake succeeded with the agent `h` (dialed at `dialed`, or empty when
// it dialed this node).
void linked(agent_actor* self, const std::string& dialed, const caf::actor& h,
            const cluster_hello& theirs) {
  auto& st = self->state;
  if (!dialed.empty() && dialed != theirs.addr) {
    // A seed under another name of the same node: keep the advertised one.
    st.peers.erase(dialed);
  }
  forget_old_addresses(self, theirs.name, theirs.addr);
  auto* p = learn(self, theirs.addr);
  if (!p)
    return;
  if (p->up && p->handle == h && p->incarnation == theirs.incarnation) {
    p->dialing = false;
    return; // both dialed at once: already linked
  }
  if (p->handle && p->handle != h)
    self->demonitor(p->handle);
  bool was_up = p->up;
  p->name = theirs.name;
  p->http = theirs.http;
  p->incarnation = theirs.incarnation;
  p->handle = h;
  p->up = true;
  p->left = false;
  p->moved = false;
  p->dialing = false;
  p->backoff = 0ms;
  p->last_error.clear();
  if (!was_up)
    p->since = std::chrono::system_clock::now();
  self->monitor(h);
  std::cout << "dcbd: cluster: linked to " << theirs.name << " at "
            << theirs.addr << " (incarnation " << theirs.incarnation << ")"
            << std::endl;
  for (auto& key : theirs.peers)
    learn(self, key);
  publish_board(self);
}

void dial_failed(agent_actor* self, const std::string& key,
                 const std::string& why) {
  auto& st = self->state;
  auto i = st.peers.find(key);
  if (i == st.peers.end())
    return;
  auto& p = i->second;
  auto& cfg = st.env->cfg;
  p.dialing = false;
  p.backoff = std::clamp(p.backoff * 2, cfg.retry_min, cfg.retry_max);
  p.next_try = clock::now() + p.backoff;
  if (p.last_error != why) {
    p.last_error = why;
    std::cerr << "dcbd: cluster: cannot reach " << key << ": " << why
              << " (retrying)" << std::endl;
  }
}

void dial(agent_actor* self, const std::string& key) {
  auto& st = self->state;
  auto& p = st.peers.at(key);
  p.dialing = true;
  auto timeout = st.env->cfg.connect_timeout;
  auto mm = self->system().middleman().actor_handle();
  self->request(mm, timeout, caf::connect_atom::value, p.addr.host, p.addr.port)
    .then(
      [self, key, timeout](const caf::node_id&, caf::strong_actor_ptr& ptr,
                           const std::set<std::string>&) {
        if (!ptr)
          return dial_failed(self, key, "no agent is published there");
        auto h = caf::actor_cast<caf::actor>(ptr);
        self->request(h, timeout, cl_hello_atom::value, hello_of(self))
          .then(
            [self, key, h](cluster_hello& theirs) {
              if (theirs.incarnation == self->state.env->incarnation) {
                // A seed that names this node under another address.
                self->state.peers.erase(key);
                return publish_board(self);
              }
              if (auto why = refusal(self, theirs)) {
                refused(self, theirs.name + " at " + key, *why);
                return dial_failed(self, key, "refused: " + *why);
              }
              linked(self, key, h, theirs);
            },
            [self, key](caf::error& err) {
              dial_failed(self, key,
                          "handshake: " + self->system().render(err));
            });
      },
      [self, key](caf::error& err) {
        if (err == caf::sec::incompatible_application_ids)
          refused(self, key, "it belongs to another cluster");
        dial_failed(self, key, self->system().render(err));
      });
}

// Asks a linked writer for its ingress and hands it to the forwarder, once
// per incarnation of the writer (again after a failure, every second).
void ask_store(agent_actor* self) {
  auto& st = self->state;
  auto& env = *st.env;
  if (st.asking_store || env.cfg.writer.empty()
      || clock::now() < st.next_store_ask)
    return;
  caf::actor fwd;
  {
    std::lock_guard guard{env.mtx};
    fwd = env.forwarder;
  }
  if (!fwd)
    return;
  for (auto& [_, p] : st.peers) {
    if (!p.up || p.name != env.cfg.writer
        || p.incarnation == st.writer_incarnation)
      continue;
    st.asking_store = true;
    auto name = p.name;
    auto inc = p.incarnation;
    self->request(p.handle, env.cfg.connect_timeout, cl_store_atom::value)
      .then(
        [self, fwd, name, inc](caf::actor& ingress) {
          auto& st = self->state;
          st.asking_store = false;
          st.writer_incarnation = inc;
          std::cout << "dcbd: cluster: forwarding appends to " << name
                    << std::endl;
          self->send(fwd, cl_target_atom::value, name, ingress);
        },
        [self, name](caf::error& err) {
          auto& st = self->state;
          st.asking_store = false;
          st.next_store_ask = clock::now() + 1s;
          std::cerr << "dcbd: cluster: " << name
                    << " takes no forwarded appends (yet): "
                    << self->system().render(err) << std::endl;
        });
    return;
  }
}

// The linked peer whose agent sent the current message (null: a stranger).
const peer_entry* sending_peer(agent_actor* self,
                               const caf::strong_actor_ptr& sender) {
  if (!sender)
    return nullptr;
  for (auto& [_, p] : self->state.peers)
    if (p.up && p.handle.address() == sender->address())
      return &p;
  return nullptr;
}

// Asks each linked peer for its bus, once per incarnation (again after a
// refusal, every second: the peer may not have read this node's row yet),
// and has this node's store actor announce its commits there.
void ask_buses(agent_actor* self) {
  auto& st = self->state;
  auto& env = *st.env;
  caf::actor store;
  {
    std::lock_guard guard{env.mtx};
    store = env.store;
  }
  if (!store || st.stopping)
    return;
  auto now = clock::now();
  for (auto& [key, p] : st.peers) {
    if (!p.up || p.asking_bus || p.bus_incarnation == p.incarnation
        || now < p.next_bus_ask)
      continue;
    p.asking_bus = true;
    self
      ->request(p.handle, env.cfg.connect_timeout, cl_bus_atom::value,
                env.incarnation)
      .then(
        [self, store, key = key, inc = p.incarnation](caf::actor& bus) {
          auto& st = self->state;
          auto i = st.peers.find(key);
          if (i == st.peers.end())
            return;
          auto& p = i->second;
          p.asking_bus = false;
          if (!p.up || p.incarnation != inc || !bus)
            return; // gone or restarted meanwhile: the next tick asks again
          p.bus_incarnation = inc;
          self->send(store, listen_atom::value, bus);
          std::cout << "dcbd: cluster: announcing commits to " << p.name
                    << "'s bus" << std::endl;
        },
        [self, key = key](caf::error&) {
          auto& st = self->state;
          auto i = st.peers.find(key);
          if (i == st.peers.end())
            return;
          i->second.asking_bus = false;
          i->second.next_bus_ask = clock::now() + 1s;
        });
  }
}

void tick(agent_actor* self) {
  auto& st = self->state;
  auto now = clock::now();
  std::vector<std::string> due;
  for (auto& [key, p] : st.peers) {
    if (p.up || p.dialing || p.left || now < p.next_try)
      continue;
    // Lower address dials; the other side gives it a moment first (a
    // handshake on a LAN takes milliseconds; a lower peer that has been
    // backing off since before this node started may not dial for up to
    // retry_max, and waiting longer only delays the mesh).
    if (key < st.env->self_addr && now - p.learned < st.env->cfg.defer_dial)
      continue;
    due.push_back(key);
  }
  for (auto& key : due)
    dial(self, key);
  ask_store(self);
  ask_buses(self);
}

caf::behavior agent_impl(agent_actor* self, std::shared_ptr<cluster_env> env) {
  auto& st = self->state;
  st.env = env;
  for (auto& seed : env->cfg.seeds)
    learn(self, seed.to_string());
  publish_board(self);
  self->set_down_handler([self](caf::down_msg& m) {
    auto& st = self->state;
    for (auto& [key, p] : st.peers) {
      if (!p.handle || p.handle.address() != m.source)
        continue;
      p.handle = nullptr;
      p.up = false;
      // The store actor dropped its bus with the link: ask again on the
      // next link, even of the same incarnation.
      p.bus_incarnation.clear();
      p.since = std::chrono::system_clock::now();
      p.learned = clock::now();
      p.next_try = clock::now() + st.env->cfg.retry_min;
      if (!p.left)
        std::cerr << "dcbd: cluster: " << p.name << " at " << key
                  << " is unreachable: " << self->system().render(m.reason)
                  << std::endl;
      if (p.name == st.env->cfg.writer)
        st.writer_incarnation.clear();
      // Its locks may be free: try them now, not at the next poll.
      if (auto* host = st.env->projectors())
        host->wake();
      if (st.env->cfg.on_down)
        st.env->cfg.on_down(p.name);
      publish_board(self);
      break;
    }
  });
  // Anything else a peer (or a stranger on the port) sends is dropped.
  self->set_default_handler(
    [](caf::scheduled_actor* a,
       caf::message_view& x) -> caf::result<caf::message> {
      std::cerr << "dcbd: cluster: dropped an unexpected message: "
                << a->system().render(caf::sec::unexpected_message) << " "
                << to_string(x.content()) << std::endl;
      return caf::sec::unexpected_message;
    });
  self->send(self, cl_tick_atom::value);
  return {
    [self](cl_tick_atom) {
      if (self->state.stopping)
        return;
      tick(self);
      self->delayed_send(self, self->state.env->cfg.tick, cl_tick_atom::value);
    },
    [self](cl_hello_atom, cluster_hello& theirs) -> caf::result<cluster_hello> {
      auto h = caf::actor_cast<caf::actor>(self->current_sender());
      if (!h || self->state.stopping)
        return caf::make_error(caf::sec::runtime_error, "not accepting");
      if (theirs.incarnation == self->state.env->incarnation)
        return hello_of(self); // this node, dialed under another address
      if (auto why = refusal(self, theirs)) {
        refused(self, theirs.name + " at " + theirs.addr, *why);
        return caf::make_error(caf::sec::runtime_error, "refused: " + *why);
      }
      linked(self, {}, h, theirs);
      return hello_of(self);
    },
    [self](cl_bye_atom, const std::string& name, const std::string& inc) {
      auto& st = self->state;
      for (auto& [key, p] : st.peers) {
        if (p.name != name || p.incarnation != inc)
          continue;
        p.left = true;
        std::cout << "dcbd: cluster: " << name << " at " << key << " left"
                  << std::endl;
        if (auto* host = st.env->projectors())
          host->wake();
        publish_board(self);
      }
    },
    [self](cl_rows_atom, std::vector<member_row>& rows) {
      auto& st = self->state;
      st.row_incarnations.clear();
      for (auto& row : rows)
        st.row_incarnations.insert(row.incarnation);
      for (auto& row : rows) {
        if (row.name == st.env->cfg.node)
          continue;
        forget_old_addresses(self, row.name, row.addr);
        st.row_names[row.addr] = row.name;
        auto* p = learn(self, row.addr);
        if (p && p->left && p->incarnation != row.incarnation) {
          // Started again since it left: dial it.
          p->left = false;
          p->learned = clock::now();
        }
      }
      publish_board(self);
    },
    [self](cl_prj_atom, std::string& name, std::uint8_t action,
           std::uint64_t position,
           std::uint64_t epoch) -> caf::response_promise {
      auto& st = self->state;
      // Before the promise, which takes the sender from the message.
      auto sender = self->current_sender();
      auto rp = self->make_response_promise();
      // From a linked peer's agent, not a stranger.
      bool from_peer = sending_peer(self, sender) != nullptr;
      auto* host = st.env->projectors();
      if (!from_peer || !host
          || action > static_cast<std::uint8_t>(
               projector_action::skip_dead_letter)) {
        projector_reply r;
        r.what = projector_reply::code::unavailable;
        r.message = !host ? "node " + st.env->cfg.node + " runs no projectors"
                          : "not a call this node takes";
        rp.deliver(to_wire(r));
        return rp;
      }
      auto id = ++st.next_call;
      st.calls.emplace(id, rp);
      auto me = caf::actor_cast<caf::actor>(self);
      host->control_local(
        std::move(name), static_cast<projector_action>(action), position, epoch,
        [me, id](projector_reply r) {
          caf::anon_send(me, cl_prj_done_atom::value, id, to_wire(r));
        });
      return rp;
    },
    [self](cl_forward_atom, forward_call& call) {
      auto& st = self->state;
      caf::actor peer;
      for (auto& [_, p] : st.peers)
        if (p.up && p.name == call.owner)
          peer = p.handle;
      auto done = std::move(call.done);
      if (!peer)
        return done(std::nullopt);
      auto owner = call.owner;
      self
        ->request(peer, st.env->cfg.call_timeout, cl_prj_atom::value,
                  std::move(call.name), static_cast<std::uint8_t>(call.action),
                  call.position, call.epoch)
        .then(
          [done, owner](cluster_projector_reply& r) {
            auto reply = from_wire(r);
            // An owner that is not the owner any more: ask the row.
            if (reply.what == projector_reply::code::unavailable) {
              std::cerr << "dcbd: cluster: " << owner
                        << " did not take a management call: " << reply.message
                        << std::endl;
              return done(std::nullopt);
            }
            done(std::move(reply));
          },
          [self, done, owner](caf::error& err) {
            std::cerr << "dcbd: cluster: " << owner
                      << " did not take a management call: "
                      << self->system().render(err) << std::endl;
            done(std::nullopt);
          });
    },
    [self](cl_bus_atom,
           const std::string& incarnation) -> caf::result<caf::actor> {
      auto& st = self->state;
      auto& env = *st.env;
      auto* peer = sending_peer(self, self->current_sender());
      bool linked_peer = peer && peer->incarnation == incarnation;
      caf::actor bus;
      {
        std::lock_guard guard{env.mtx};
        bus = env.bus;
      }
      if (!bus || st.stopping)
        return caf::make_error(caf::sec::runtime_error,
                               "node " + env.cfg.node + " shares no commits");
      if (!linked_peer || st.row_incarnations.count(incarnation) == 0)
        return caf::make_error(caf::sec::runtime_error,
                               "not (yet) a member in the membership table of "
                                 + env.cfg.node);
      return bus;
    },
    [self](cl_store_atom) -> caf::result<caf::actor> {
      auto& env = *self->state.env;
      caf::actor ingress;
      {
        std::lock_guard guard{env.mtx};
        ingress = env.ingress;
      }
      if (!ingress || self->state.stopping)
        return caf::make_error(caf::sec::runtime_error,
                               "node " + env.cfg.node
                                 + " takes no forwarded appends");
      return ingress;
    },
    [self](cl_prj_done_atom, std::uint64_t id, cluster_projector_reply& r) {
      auto& calls = self->state.calls;
      auto i = calls.find(id);
      if (i == calls.end())
        return;
      i->second.deliver(std::move(r));
      calls.erase(i);
    },
    [self](cl_stop_atom) {
      auto& st = self->state;
      st.stopping = true;
      for (auto& [_, p] : st.peers)
        if (p.up)
          self->send(p.handle, cl_bye_atom::value, st.env->cfg.node,
                     st.env->incarnation);
      for (auto& [_, rp] : st.calls) {
        projector_reply r;
        r.what = projector_reply::code::unavailable;
        r.message = "node " + st.env->cfg.node + " is stopping";
        rp.deliver(to_wire(r));
      }
      st.calls.clear();
      return true;
    },
  };
}

// -- forwarded appends
// ---------------------------------------------------------

forward_answer to_answer(const caf::expected<append_ack>& r) {
  forward_answer a;
  if (r) {
    a.first = r->first_position;
    a.last = r->last_position;
  } else {
    a.code = static_cast<std::uint8_t>(code_of(r.error()));
    a.message = message_of(r.error());
  }
  return a;
}

/// A batch the ingress is committing: one slot per request, filled by the
/// store actor's callbacks (or at once by validation); the last one sends
/// the answers.
struct ingress_batch {
  caf::actor to;
  std::uint64_t id = 0;
  forward_answers out;
  std::atomic<std::size_t> left{0};
};

// Takes peers' batches of appends into this node's store actor, one append
// each (the store actor groups them with everything else it has). Answers
// once per batch, from the thread of the last answer, straight to the
// peer's forwarder.
caf::behavior ingress_impl(caf::event_based_actor* self, engine* eng) {
  return {
    [self, eng](cl_append_atom, std::uint64_t id, forward_batch& batch) {
      auto to = caf::actor_cast<caf::actor>(self->current_sender());
      if (!to)
        return;
      auto n = batch.requests.size();
      if (n == 0) {
        caf::anon_send(to, cl_acked_atom::value, id, forward_answers{});
        return;
      }
      auto b = std::make_shared<ingress_batch>();
      b->to = std::move(to);
      b->id = id;
      b->out.answers.resize(n);
      b->left.store(n, std::memory_order_relaxed);
      for (std::size_t i = 0; i < n; ++i)
        eng->append_local(
          std::move(batch.requests[i]), [b, i](caf::expected<append_ack> r) {
            b->out.answers[i] = to_answer(r);
            if (b->left.fetch_sub(1, std::memory_order_acq_rel) == 1)
              caf::anon_send(b->to, cl_acked_atom::value, b->id,
                             std::move(b->out));
          });
    },
  };
}

/// A batch sent to the writer and not answered yet.
struct forward_entry {
  std::vector<append_callback_ptr> done;
  clock::time_point deadline;
};

struct forwarder_state {
  std::shared_ptr<cluster_env> env;
  engine* eng = nullptr;
  /// Whether the engine's route should hand appends over (a target is
  /// known); read without messaging.
  std::shared_ptr<std::atomic<bool>> linked;
  caf::actor target;
  std::string target_name;
  /// Appends waiting for a batch to go (never sent yet).
  forward_batch pending;
  std::vector<append_callback_ptr> pending_done;
  /// Batches sent and not answered, by id.
  std::unordered_map<std::uint64_t, forward_entry> inflight;
  /// Appends pending or in flight.
  std::size_t requests = 0;
  bool flush_queued = false;
  std::uint64_t next_id = 0;
  static inline const char* name = "dcbd.cluster_forwarder";
};

using forwarder_actor = caf::stateful_actor<forwarder_state>;

void count_forwarded(forwarder_actor* self, const std::string& result) {
  if (auto& f = self->state.env->cfg.on_forwarded)
    f(result);
}

// Appends `req` through this node's own store actor (always safe for an
// append that was never sent).
void append_here(forwarder_actor* self, append_request req,
                 append_callback_ptr done) {
  count_forwarded(self, "local");
  self->state.eng->append_local(std::move(req),
                                [done](caf::expected<append_ack> r) {
                                  (*done)(std::move(r));
                                });
}

// About the bytes `r` takes in a forwarded batch.
std::size_t forward_bytes(const append_request& r) {
  std::size_t n = 64;
  for (auto& e : r.events) {
    n += 32 + e.type.size() + e.data.size() + e.metadata.size();
    for (auto& t : e.tags)
      n += 8 + t.size();
  }
  for (auto& j : r.jobs)
    n += 64 + j.queue.size() + j.kind.size() + j.args.size()
         + j.unique_key.size();
  if (r.condition)
    for (auto& item : r.condition->fail_if_events_match.items) {
      n += 16;
      for (auto& t : item.types)
        n += 8 + t.size();
      for (auto& t : item.tags)
        n += 8 + t.size();
    }
  return n;
}

// Sends what is pending as one batch, while fewer than `forward_batches`
// are in flight; the rest waits for an answer. So the batches grow with
// the load, like the writer's groups, and cost one message each way.
void send_batches(forwarder_actor* self) {
  auto& st = self->state;
  auto& cfg = st.env->cfg;
  auto max_batch = std::max<std::size_t>(cfg.forward_batch_max, 1);
  while (st.target && !st.pending.requests.empty()
         && st.inflight.size()
              < std::max<std::size_t>(cfg.forward_batches, 1)) {
    forward_batch batch;
    std::vector<append_callback_ptr> done;
    // At most max_batch requests and forward_batch_bytes (at least one).
    std::size_t take = 0, bytes = 0;
    for (auto& r : st.pending.requests) {
      auto b = forward_bytes(r);
      if (take == max_batch
          || (take > 0 && bytes + b > cfg.forward_batch_bytes))
        break;
      bytes += b;
      ++take;
    }
    if (take == st.pending.requests.size()) {
      batch = std::move(st.pending);
      done = std::move(st.pending_done);
      st.pending.requests.clear();
      st.pending_done.clear();
    } else {
      auto mid = static_cast<std::ptrdiff_t>(take);
      auto& rs = st.pending.requests;
      batch.requests.assign(std::make_move_iterator(rs.begin()),
                            std::make_move_iterator(rs.begin() + mid));
      rs.erase(rs.begin(), rs.begin() + mid);
      done.assign(st.pending_done.begin(), st.pending_done.begin() + mid);
      st.pending_done.erase(st.pending_done.begin(),
                            st.pending_done.begin() + mid);
    }
    if (cfg.on_forward_batch)
      cfg.on_forward_batch(batch.requests.size());
    auto id = ++st.next_id;
    st.inflight.emplace(id, forward_entry{std::move(done),
                                          clock::now() + cfg.forward_timeout});
    self->send(st.target, cl_append_atom::value, id, std::move(batch));
  }
}

// Fails every append in flight with `unavailable`: it may or may not be
// committed, and is never retried.
void fail_inflight(forwarder_actor* self, const std::string& why) {
  auto& st = self->state;
  auto inflight = std::move(st.inflight);
  st.inflight.clear();
  for (auto& [_, e] : inflight)
    for (auto& done : e.done) {
      --st.requests;
      count_forwarded(self, "unavailable");
      (*done)(caf::make_error(
        errc::unavailable, why + "; the append may or may not be committed"));
    }
}

// Appends what was never sent here, or fails it (`why`) when the node
// stops.
void drain_pending(forwarder_actor* self, const char* why = nullptr) {
  auto& st = self->state;
  auto reqs = std::move(st.pending.requests);
  auto dones = std::move(st.pending_done);
  st.pending.requests.clear();
  st.pending_done.clear();
  st.requests -= reqs.size();
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    if (why) {
      count_forwarded(self, "unavailable");
      (*dones[i])(caf::make_error(errc::unavailable, why));
    } else {
      append_here(self, std::move(reqs[i]), std::move(dones[i]));
    }
  }
}

void drop_target(forwarder_actor* self, const std::string& why) {
  auto& st = self->state;
  if (!st.target)
    return;
  std::cerr << "dcbd: cluster: appends stay local: " << why << std::endl;
  st.linked->store(false, std::memory_order_relaxed);
  self->demonitor(st.target);
  st.target = nullptr;
  fail_inflight(self, why);
  drain_pending(self);
}

caf::behavior forwarder_impl(forwarder_actor* self,
                             std::shared_ptr<cluster_env> env, engine* eng,
                             std::shared_ptr<std::atomic<bool>> linked) {
  auto& st = self->state;
  st.env = std::move(env);
  st.eng = eng;
  st.linked = std::move(linked);
  self->set_down_handler([self](caf::down_msg& m) {
    auto& st = self->state;
    if (st.target && st.target.address() == m.source)
      drop_target(self, "the link to " + st.target_name + " dropped ("
                          + self->system().render(m.reason) + ")");
  });
  self->delayed_send(self, 500ms, cl_expire_atom::value);
  return {
    [self](cl_fwd_atom, append_request& req, append_callback_ptr& done) {
      auto& st = self->state;
      // An append larger than a batch may be would not pass the writer's
      // cluster guard (basp_guard_limits::max_message): it stays local.
      if (!st.target || st.requests >= st.env->cfg.forward_window
          || forward_bytes(req) > st.env->cfg.forward_batch_bytes) {
        append_here(self, std::move(req), std::move(done));
        return;
      }
      ++st.requests;
      st.pending.requests.push_back(std::move(req));
      st.pending_done.push_back(std::move(done));
      // Sent once the appends already in the mailbox have joined it.
      if (!st.flush_queued) {
        st.flush_queued = true;
        self->send(self, cl_flush_atom::value);
      }
    },
    [self](cl_flush_atom) {
      self->state.flush_queued = false;
      send_batches(self);
    },
    [self](cl_acked_atom, std::uint64_t id, forward_answers& out) {
      auto& st = self->state;
      auto i = st.inflight.find(id);
      if (i == st.inflight.end())
        return; // answered already (timed out, or the link dropped)
      auto done = std::move(i->second.done);
      st.inflight.erase(i);
      for (std::size_t k = 0; k < done.size(); ++k) {
        --st.requests;
        if (k >= out.answers.size()) {
          count_forwarded(self, "unavailable");
          (*done[k])(caf::make_error(errc::unavailable,
                                     st.target_name
                                       + " answered a batch only in part; the "
                                         "append may or may not be committed"));
          continue;
        }
        auto& a = out.answers[k];
        if (a.code == 0) {
          count_forwarded(self, "acked");
          (*done[k])(append_ack{a.first, a.last});
          continue;
        }
        auto c = a.code <= static_cast<std::uint8_t>(errc::internal)
                   ? static_cast<errc>(a.code)
                   : errc::internal;
        count_forwarded(self,
                        c == errc::unavailable ? "unavailable" : "rejected");
        (*done[k])(caf::make_error(c, std::move(a.message)));
      }
      send_batches(self);
    },
    [self](cl_target_atom, std::string& name, caf::actor& ingress) {
      auto& st = self->state;
      if (st.target)
        drop_target(self, st.target_name + " was replaced by a new start");
      st.target = ingress;
      st.target_name = std::move(name);
      self->monitor(st.target);
      st.linked->store(true, std::memory_order_relaxed);
    },
    [self](cl_expire_atom) {
      auto& st = self->state;
      auto now = clock::now();
      for (auto i = st.inflight.begin(); i != st.inflight.end();) {
        if (i->second.deadline > now) {
          ++i;
          continue;
        }
        auto done = std::move(i->second.done);
        i = st.inflight.erase(i);
        for (auto& d : done) {
          --st.requests;
          count_forwarded(self, "unavailable");
          (*d)(caf::make_error(
            errc::unavailable,
            st.target_name + " did not answer a forwarded append within "
              + std::to_string(st.env->cfg.forward_timeout.count())
              + " ms; the append may or may not be committed"));
        }
      }
      send_batches(self);
      self->delayed_send(self, 500ms, cl_expire_atom::value);
    },
    [self](cl_stop_atom) {
      auto& st = self->state;
      st.linked->store(false, std::memory_order_relaxed);
      fail_inflight(self, "the node is stopping");
      drain_pending(self, "the node is stopping");
      self->quit();
      return true;
    },
  };
}

} // namespace

// -- free functions -----------------------------------------------------------

std::string cluster_address::to_string() const {
  if (host.find(':') != std::string::npos)
    return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

std::optional<cluster_address> parse_cluster_address(const std::string& s) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size())
    return std::nullopt;
  cluster_address a;
  a.host = s.substr(0, colon);
  if (a.host.front() == '[') {
    if (a.host.size() < 3 || a.host.back() != ']')
      return std::nullopt;
    a.host = a.host.substr(1, a.host.size() - 2);
  } else if (a.host.find(':') != std::string::npos) {
    return std::nullopt; // an IPv6 literal needs brackets
  }
  unsigned long port = 0;
  for (auto c : s.substr(colon + 1)) {
    if (c < '0' || c > '9')
      return std::nullopt;
    port = port * 10 + static_cast<unsigned long>(c - '0');
    if (port > 65535)
      return std::nullopt;
  }
  if (port == 0)
    return std::nullopt;
  a.port = static_cast<std::uint16_t>(port);
  return a;
}

std::optional<std::vector<cluster_address>>
parse_cluster_seeds(const std::string& s) {
  std::vector<cluster_address> out;
  std::size_t from = 0;
  while (from <= s.size()) {
    auto comma = s.find(',', from);
    auto item = s.substr(from, comma == std::string::npos ? std::string::npos
                                                          : comma - from);
    auto first = item.find_first_not_of(" \t");
    if (first != std::string::npos) {
      auto last = item.find_last_not_of(" \t");
      auto a = parse_cluster_address(item.substr(first, last - first + 1));
      if (!a)
        return std::nullopt;
      out.push_back(*a);
    }
    if (comma == std::string::npos)
      break;
    from = comma + 1;
  }
  return out;
}

const char* to_string(member_status s) noexcept {
  return s == member_status::up ? "up" : "unreachable";
}

void configure_cluster(caf::actor_system_config& cfg,
                       const std::string& cluster_name) {
  cfg.load<caf::io::middleman>();
  cfg.add_message_type<cluster_hello>("dcbd::cluster_hello");
  cfg.add_message_type<cluster_projector_reply>(
    "dcbd::cluster_projector_reply");
  cfg.add_message_type<forward_batch>("dcbd::forward_batch");
  cfg.add_message_type<forward_answers>("dcbd::forward_answers");
  cfg.set("middleman.heartbeat-interval", caf::timespan{500ms});
  cfg.set("middleman.connection-timeout", caf::timespan{3s});
  cfg.set("middleman.enable-automatic-connections", false);
  caf::config_value::list ids;
  ids.emplace_back("dcbd/" + std::to_string(cluster_protocol) + "/"
                   + cluster_name);
  cfg.set("middleman.app-identifiers", std::move(ids));
}

std::optional<std::string>
check_cluster_settings(const caf::actor_system_config& cfg) {
  auto hb = setting_ms(cfg, "middleman.heartbeat-interval");
  auto to = setting_ms(cfg, "middleman.connection-timeout");
  if (hb <= 0)
    return std::string{"middleman.heartbeat-interval must be set (a frozen "
                       "peer is never noticed without heartbeats)"};
  if (to <= hb)
    return "middleman.connection-timeout (" + std::to_string(to)
           + " ms) must be longer than middleman.heartbeat-interval ("
           + std::to_string(hb) + " ms)";
  return std::nullopt;
}

// -- façade -------------------------------------------------------------------

struct cluster_service::impl {
  caf::actor_system& sys;
  std::shared_ptr<cluster_env> env;
  caf::actor agent;
  caf::actor registry;
  // Peers dial the guard's port; the agent is published on `published`.
  std::unique_ptr<basp_guard> guard;
  std::uint16_t port = 0;
  std::uint16_t published = 0;
  std::mutex mtx;
  bool stopped = false;
  // Forwarded appends (`serve_appends`).
  engine* eng = nullptr;
  caf::actor ingress;
  caf::actor forwarder;

  explicit impl(caf::actor_system& s) : sys(s) {
    // nop
  }
};

cluster_service::cluster_service(caf::actor_system& sys, cluster_config cfg,
                                 pg_config db)
  : impl_(std::make_shared<impl>(sys)) {
  auto& d = *impl_;
  if (cfg.node.empty())
    throw store_error{errc::invalid_argument, "cluster: no node name"};
  if (auto why = check_cluster_settings(sys.config()))
    throw store_error{errc::invalid_argument, "cluster: " + *why};
  d.env = std::make_shared<cluster_env>();
  d.env->self_addr = cfg.addr.to_string();
  d.env->heartbeat_ms = setting_ms(sys.config(),
                                   "middleman.heartbeat-interval");
  d.env->timeout_ms = setting_ms(sys.config(), "middleman.connection-timeout");
  d.env->cfg = std::move(cfg);
  d.agent = sys.spawn(agent_impl, d.env);
  auto& addr = d.env->cfg.addr;
  // The agent on a loopback port of its own; peers reach it through the
  // guard on the cluster address.
  auto port = sys.middleman().publish(d.agent, 0, "127.0.0.1", true);
  if (!port) {
    caf::anon_send_exit(d.agent, caf::exit_reason::user_shutdown);
    throw store_error{errc::invalid_argument,
                      "cluster: cannot publish the agent on 127.0.0.1: "
                        + sys.render(port.error())};
  }
  d.published = *port;
  try {
    d.guard = std::make_unique<basp_guard>(addr.host, addr.port, "127.0.0.1",
                                           d.published, d.env->cfg.guard);
  } catch (const std::exception& e) {
    sys.middleman().unpublish(d.agent, d.published);
    caf::anon_send_exit(d.agent, caf::exit_reason::user_shutdown);
    throw store_error{errc::invalid_argument, "cluster: cannot listen on "
                                                + d.env->self_addr + ": "
                                                + e.what()};
  }
  d.port = d.guard->port();
  d.registry = sys.spawn<caf::detached>(registry_impl, d.env, std::move(db),
                                        d.agent);
}

cluster_service::~cluster_service() {
  stop();
}

void cluster_service::serve(projector_host& host) {
  auto env = impl_->env;
  {
    std::lock_guard guard{env->mtx};
    env->host = &host;
  }
  auto agent = impl_->agent;
  host.set_router(
    [env, agent](const std::string& owner, const std::string& name,
                 projector_action action, std::uint64_t position,
                 std::uint64_t epoch,
                 std::function<void(std::optional<projector_reply>)> done) {
      {
        std::lock_guard guard{env->mtx};
        if (env->up_by_name.count(owner) == 0)
          return false;
      }
      caf::anon_send(agent, cl_forward_atom::value,
                     forward_call{owner, name, action, position, epoch,
                                  std::move(done)});
      return true;
    });
}

void cluster_service::serve_appends(engine& eng) {
  auto& d = *impl_;
  auto env = d.env;
  {
    std::lock_guard guard{d.mtx};
    if (d.stopped || d.eng)
      return;
    d.eng = &eng;
  }
  d.ingress = d.sys.spawn(ingress_impl, &eng);
  caf::actor fwd;
  auto& writer = env->cfg.writer;
  if (!writer.empty() && writer != env->cfg.node) {
    auto linked = std::make_shared<std::atomic<bool>>(false);
    fwd = d.sys.spawn(forwarder_impl, env, &eng, linked);
    d.forwarder = fwd;
    eng.set_append_route(
      [env, fwd, linked](append_request& req,
                         std::function<void(caf::expected<append_ack>)>& done) {
        if (!linked->load(std::memory_order_relaxed)) {
          if (env->cfg.on_forwarded)
            env->cfg.on_forwarded("local");
          return false;
        }
        // Answers `unavailable` should the forwarder be gone.
        auto cb = std::make_shared<append_callback>(std::move(done));
        caf::anon_send(fwd, cl_fwd_atom::value, std::move(req), std::move(cb));
        return true;
      });
  }
  std::lock_guard guard{env->mtx};
  env->ingress = d.ingress;
  env->forwarder = fwd;
}

void cluster_service::share_commits(engine& eng) {
  auto& env = *impl_->env;
  std::lock_guard guard{env.mtx};
  env.store = caf::actor_cast<caf::actor>(eng.store());
  env.bus = caf::actor_cast<caf::actor>(eng.bus());
}

std::vector<cluster_member> cluster_service::members() const {
  std::lock_guard guard{impl_->env->mtx};
  return impl_->env->members;
}

const std::string& cluster_service::incarnation() const {
  return impl_->env->incarnation;
}

std::uint16_t cluster_service::port() const {
  return impl_->port;
}

void cluster_service::stop() {
  auto& d = *impl_;
  {
    std::lock_guard guard{d.mtx};
    if (d.stopped)
      return;
    d.stopped = true;
  }
  {
    std::lock_guard guard{d.env->mtx};
    d.env->host = nullptr;
  }
  // Goodbyes, then the row, each waited for by a short-lived actor.
  auto ask = [&](const caf::actor& who, std::chrono::milliseconds timeout) {
    std::promise<void> p;
    auto f = p.get_future();
    d.sys.spawn([who, timeout, &p](caf::event_based_actor* self) {
      self->request(who, timeout, cl_stop_atom::value)
        .then(
          [&p](bool) {
            p.set_value();
          },
          [&p](caf::error&) {
            p.set_value();
          });
    });
    f.wait();
  };
  // Appends stay local from now on; those in flight fail.
  if (d.eng)
    d.eng->set_append_route({});
  {
    std::lock_guard guard{d.env->mtx};
    d.env->ingress = nullptr;
    d.env->forwarder = nullptr;
  }
  if (d.forwarder)
    ask(d.forwarder, 2s);
  ask(d.agent, 2s);
  ask(d.registry, 5s);
  if (d.ingress)
    caf::anon_send_exit(d.ingress, caf::exit_reason::user_shutdown);
  if (d.guard)
    d.guard->stop();
  d.sys.middleman().unpublish(d.agent, d.published);
  caf::anon_send_exit(d.agent, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(d.registry, caf::exit_reason::user_shutdown);
}

} // namespace dcbd
