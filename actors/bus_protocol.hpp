// The event bus: one per node. Subscriptions by DCB query from a position,
// delivered in order, gap-free and duplicate-free (DESIGN §3, API.md §5).
//
// Where events come from: the store actor announces each committed group
// (`committed_atom`); commits of other processes on the same database wake
// the bus (`wake_atom`, from the NOTIFY listener) and it also polls. The
// bus reads past the last position it knows through the readers, so it
// applies the log strictly in position order, each event once, for all
// subscribers (one match per query, however many subscribe to it).
// In a cluster the peers' store actors announce their commits to this bus
// too (actors/cluster.cpp); with `feed_grace` the bus then waits that long
// for a missing announcement before it reads the gap or a woken head from
// the database, so a node usually follows its peers without reading.
//
// A subscription (KurrentDB's loop): registered live at once; catches up
// `(after, ...]` with paged reads through the readers until it meets the
// live feed, then takes events from the feed. Each subscriber has a bounded
// queue in the bus; when the feed finds it full, the subscriber falls behind
// (counted) and catches up again from where its queue ends: from the bus's
// window of recent events while they still cover that position, else with
// paged reads. Writers never wait for subscribers; nothing is dropped or
// repeated.
//
// Messages:
//   (subscribe_atom, subscribe_request, actor sink)
//       the bus sends the sink (bus_batch_atom, bus_batch) messages, the
//       first one right after the subscription is accepted (possibly with
//       no items), and at the end exactly one (bus_end_atom, bus_end). It
//       never has more events unacknowledged than the credit granted: the
//       sink grants more with (credit_atom, id, n) (n events; cumulative).
//       Control items (checkpoint, caught_up, heartbeat) take no credit.
//   (cancel_atom, id)           ends a subscription; its bus_end says
//                               "cancelled" (code none)
//   (committed_atom, committed_events)   from the store actor
//   (wake_atom, head)           "the log may have grown" (0: unknown head)
//   (feed_due_atom)             internal: a `feed_grace` ran out
//   (bus_stats_atom)            -> bus_stats
// A sink that exits ends its subscriptions. When the bus stops (the node
// stops), every subscription ends with `unavailable`.
#pragma once

#include "actors/reader_protocol.hpp"
#include "actors/store_protocol.hpp"
#include "store/event_cache.hpp"
#include "store/model.hpp"

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/typed_actor.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dcbd {

/// What a subscriber receives, in order.
enum class bus_item_kind : std::uint8_t {
  /// A matching event.
  event,
  /// Every matching event at or below `position` has been delivered; sent
  /// at least every `checkpoint_interval` while the log moves past events
  /// that do not match (and nothing is queued), never past an undelivered
  /// match.
  checkpoint,
  /// The catch-up is done: every matching event at or below `position` (the
  /// head when the subscription started, or later) has been delivered.
  /// Once per subscription.
  caught_up,
  /// Every `heartbeat`, busy or idle: the subscription is alive, and
  /// `head` is the bus's head.
  heartbeat,
};

/// Returns "event", "checkpoint", "caught_up" or "heartbeat".
const char* to_string(bus_item_kind k) noexcept;

/// One item of a subscription.
struct bus_item {
  bus_item_kind kind = bus_item_kind::event;
  /// The event's position; for a checkpoint or caught_up the position
  /// everything matching at or below has been delivered.
  std::uint64_t position = 0;
  /// Events: the position of the previous event matching the same query
  /// (0 if none), also for the first event after `after`.
  std::uint64_t prev = 0;
  /// The last position the bus knew of when it made the item.
  std::uint64_t head = 0;
  /// Events only; shared by every subscriber it goes to.
  std::shared_ptr<const sequenced_event> event;
  /// Events only: committed while the subscriber was caught up, whether it
  /// came from the live feed or was read back after the subscriber fell
  /// behind, so its commit time measures the commit-to-delivery latency
  /// (late deliveries included); false for a new subscriber's history.
  bool live = false;
};

/// Asks for a subscription.
struct subscribe_request {
  /// Chosen by the sink (see `fresh_stream_id`); names the subscription in
  /// batches, credits, cancel and the end.
  std::uint64_t id = 0;
  /// Which events; validated by the bus.
  dcbd::query q;
  /// Deliver events after this position.
  std::uint64_t after = 0;
  /// Events the sink takes before it grants more.
  std::uint32_t credit = 1024;
  /// Send a heartbeat this often (0: never).
  std::chrono::milliseconds heartbeat{0};
};

/// Items for one subscription, in order.
struct bus_batch {
  std::uint64_t id = 0;
  std::vector<bus_item> items;
};

/// The end of a subscription and why: `code` none when cancelled, else
/// invalid_argument (a bad request) or unavailable (the node is stopping).
struct bus_end {
  std::uint64_t id = 0;
  errc code = errc::none;
  std::string message;
  /// The last position delivered (event or checkpoint); resume from it.
  std::uint64_t position = 0;
};

/// Counters of the bus since it started.
struct bus_stats {
  /// The last position the bus has applied.
  std::uint64_t head = 0;
  std::uint64_t subscriptions = 0;
  /// Events handed to sinks.
  std::uint64_t delivered = 0;
  /// Times a subscriber's queue was full and it went back to reading.
  std::uint64_t fell_behind = 0;
  /// Events the bus read itself (commits of other processes, or announced
  /// out of order) rather than took from the local store's announcements.
  std::uint64_t fed_by_reads = 0;
  /// Events it took from the announcements of peers' store actors (other
  /// nodes of a cluster) before it had read them.
  std::uint64_t fed_by_peers = 0;
  /// Reads of the log past the bus head (woken, polled, or a gap).
  std::uint64_t feed_reads = 0;
  /// Wake-ups that waited for the local store's announcement instead of
  /// reading at once (see `bus_config::local_groups`).
  std::uint64_t local_waits = 0;
  /// Catch-up reads done for subscribers.
  std::uint64_t catch_up_reads = 0;
  /// Events subscribers caught up on from the bus's recent events.
  std::uint64_t replayed = 0;
};

} // namespace dcbd

// The bus and its subscribers live in one node: subscriptions do not cross
// node boundaries, so these are not serialized.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dcbd::subscribe_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dcbd::bus_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dcbd::bus_end)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dcbd::bus_stats)

namespace dcbd {

using subscribe_atom = caf::atom_constant<caf::atom("dcbSub")>;
using bus_batch_atom = caf::atom_constant<caf::atom("dcbBatch")>;
using bus_end_atom = caf::atom_constant<caf::atom("dcbSubEnd")>;
using wake_atom = caf::atom_constant<caf::atom("dcbWake")>;
using bus_stats_atom = caf::atom_constant<caf::atom("dcbBusStat")>;
using tick_atom = caf::atom_constant<caf::atom("dcbTick")>;
using feed_due_atom = caf::atom_constant<caf::atom("dcbFeedDue")>;

/// What a subscription sink must accept.
using subscription_sink_actor
  = caf::typed_actor<caf::reacts_to<bus_batch_atom, bus_batch>,
                     caf::reacts_to<bus_end_atom, bus_end>>;

using bus_actor = caf::typed_actor<
  caf::reacts_to<subscribe_atom, subscribe_request, caf::actor>,
  caf::reacts_to<credit_atom, std::uint64_t, std::uint32_t>,
  caf::reacts_to<cancel_atom, std::uint64_t>,
  caf::reacts_to<committed_atom, committed_events>,
  caf::reacts_to<wake_atom, std::uint64_t>,
  caf::replies_to<bus_stats_atom>::with<bus_stats>, caf::reacts_to<tick_atom>,
  caf::reacts_to<feed_due_atom>>;

/// Where the bus took events from: its own store actor's announcements, a
/// peer's (a cluster), or a read of the database.
enum class bus_feed : std::uint8_t { store, peer, read };

/// Hooks the bus and its sinks call; the node implements them with
/// Prometheus. Called on actor threads; keep them cheap.
class bus_metrics {
public:
  virtual ~bus_metrics() = default;

  /// The bus applied the log up to `position`.
  virtual void head(std::uint64_t position) {
    (void) position;
  }

  /// Subscriptions open now.
  virtual void subscriptions(std::size_t n) {
    (void) n;
  }

  /// `n` events went to sinks.
  virtual void delivered(std::size_t n) {
    (void) n;
  }

  /// A subscriber's queue was full; it went back to reading.
  virtual void fell_behind() {
    // nop
  }

  /// The bus applied `n` more events of the log, taken from `source`.
  virtual void fed(bus_feed source, std::size_t n) {
    (void) source;
    (void) n;
  }

  /// A live event reached its subscriber `latency` after its commit.
  virtual void commit_to_delivery(std::chrono::nanoseconds latency) {
    (void) latency;
  }
};

/// Settings of the bus.
struct bus_config {
  /// Events a subscriber's queue holds in the bus (at least 2), and about
  /// how many payload bytes (a catch-up page may pass it by one page).
  std::size_t queue_events = 2048;
  std::size_t queue_bytes = std::size_t{16} << 20;
  /// The most recent events the bus keeps (shared by all subscribers), so a
  /// subscriber that fell behind or starts near the head catches up from
  /// memory instead of reading the database. Bounded by count and by
  /// payload bytes; 0 keeps none.
  std::size_t recent_events = 65'536;
  std::size_t recent_bytes = std::size_t{64} << 20;
  /// Most events in one batch to a sink.
  std::size_t batch_events = 512;
  /// Most catch-up reads in flight at once, across subscribers.
  std::size_t max_reads = 8;
  /// Events per read of the log past the bus head (other processes).
  std::size_t feed_page = 1000;
  /// How often the bus reads past its head without being woken.
  std::chrono::milliseconds poll{500};
  /// How long a gap, or a head it was woken with, may wait for the store
  /// announcement that fills it before the bus reads it from the database
  /// (0: read at once). Worth it only where other writers announce their
  /// commits to this bus: the nodes of a cluster.
  std::chrono::milliseconds feed_grace{0};
  /// The local store actor's group counts (see `store_groups`), or null.
  /// Woken while a local group is sent and not yet announced, the bus waits
  /// for that announcement, at most `local_grace`, before it reads past its
  /// head: the NOTIFY of the node's own commit often arrives first, and
  /// reading the commit back cost the database a query per group.
  std::shared_ptr<const store_groups> local_groups;
  std::chrono::milliseconds local_grace{20};
  /// Most time between two checkpoints of a subscription while the log
  /// moves past events it does not match: checked every `tick`, a
  /// checkpoint goes out up to a tick early rather than late.
  std::chrono::milliseconds checkpoint_interval{1000};
  /// The bus's clock: heartbeats, checkpoints and polls are checked this
  /// often.
  std::chrono::milliseconds tick{50};
  /// Timeout of one read.
  std::chrono::milliseconds read_timeout{30'000};
  /// Input limits (for subscription queries).
  dcbd::limits limits;
  /// Hooks; may be null.
  std::shared_ptr<bus_metrics> metrics;
  /// The node's event cache, or null: the bus feeds it every event it
  /// applies, in order (commits of other processes reach it this way), and
  /// warms it from the database after a start.
  std::shared_ptr<event_cache> cache;
};

/// Spawns the bus: it listens on `store`'s commits and reads through
/// `readers`. Scheduled (it never blocks).
bus_actor spawn_bus(caf::actor_system& sys, store_actor store,
                    reader_actor readers, bus_config cfg);

// -- subscription sinks -------------------------------------------------------

/// Called with each batch, on an actor thread. Call `ack` exactly once, from
/// any thread, when the batch is consumed: `ack(true)` grants as much credit
/// as the batch's events took, `ack(false)` cancels the subscription.
using paced_items_handler = std::function<void(std::vector<bus_item>& items,
                                               std::function<void(bool)> ack)>;

/// Called once at the end of a subscription.
using subscription_end_handler = std::function<void(const bus_end&)>;

/// Spawns an actor that subscribes `req` at `bus` and hands every batch to
/// `on_items`; `on_end` runs once at the end. The sink measures commit-to-
/// delivery latency at `ack(true)` (if `metrics`). Without `ack_grants`,
/// `ack(true)` grants no credit: the caller sends (credit_atom, id, n)
/// itself.
caf::actor spawn_subscription_sink(caf::actor_system& sys, bus_actor bus,
                                   subscribe_request req,
                                   paced_items_handler on_items,
                                   subscription_end_handler on_end,
                                   std::shared_ptr<bus_metrics> metrics,
                                   bool ack_grants = true);

} // namespace dcbd
