// Readers: a pool of detached actors, each with its own connections.
//
// Messages:
//   (read_atom, query, read_options)     -> read_result | error(errc)
//       bounded: a result of more than `max_read_events` events is refused
//       with invalid_argument; ask with a limit or stream it.
//   (stream_atom, stream_request, actor sink)
//       the reader sends the sink (chunk_atom, stream_chunk) messages and
//       then exactly one (end_atom, stream_end). It never has more than
//       `window` chunks unacknowledged: the sink returns credit with
//       (credit_atom, stream id, n) to the chunk's sender after consuming n
//       chunks. (cancel_atom, stream id) from the sink ends a stream early:
//       no chunk follows, and its stream_end says "cancelled by the sink"
//       (code none; `events` counts the chunks sent before).
//   (read_atom, query, read_options, snapshot_atom) -> read_result | ...
//       a consistent prefix of the log that may be behind the database
//       (served from the event cache at its own head without a read index;
//       for subscription catch-up)
//   (read_atom, query, read_options, direct_atom)   -> read_result | ...
//       from the database only (the bus reading past the cache it feeds)
//   (project_atom, decision_model)       -> projection | error(errc)
//   (head_atom)                          -> uint64_t
#pragma once

#include "actors/inspect.hpp"
#include "actors/store_protocol.hpp"
#include "store/decision.hpp"
#include "store/event_store.hpp"
#include "store/model.hpp"

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/expected.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace dcbd {

/// Projectors carry C++ code. They travel between actors of one node as a
/// shared pointer; the code itself never crosses a node boundary (the
/// serializer skips it and a remote receiver sees no projectors).
using projectors_ptr = std::shared_ptr<const std::vector<projector>>;

/// Projector states (type-erased C++ values); node-local like projectors.
using states_ptr = std::shared_ptr<const decision_states>;

} // namespace dcbd

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dcbd::projectors_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dcbd::states_ptr)

namespace dcbd {

using read_atom = caf::atom_constant<caf::atom("dcbRead")>;
using stream_atom = caf::atom_constant<caf::atom("dcbStream")>;
using chunk_atom = caf::atom_constant<caf::atom("dcbChunk")>;
using end_atom = caf::atom_constant<caf::atom("dcbEnd")>;
using credit_atom = caf::atom_constant<caf::atom("dcbCredit")>;
using cancel_atom = caf::atom_constant<caf::atom("dcbCancel")>;
using project_atom = caf::atom_constant<caf::atom("dcbProject")>;
using pump_atom = caf::atom_constant<caf::atom("dcbPump")>;
using snapshot_atom = caf::atom_constant<caf::atom("dcbSnap")>;
using direct_atom = caf::atom_constant<caf::atom("dcbDirect")>;

/// Opens a stream of the events matching `q`.
struct stream_request {
  /// Chosen by the sink; names the stream in chunks, credits and the end.
  std::uint64_t id = 0;
  dcbd::query q;
  read_options options;
  /// Most chunks sent and not yet acknowledged by credit (at least 1).
  std::uint32_t window = 4;
  /// Bounds on each chunk.
  stream_options chunking;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stream_request& x) {
  return f(caf::meta::type_name("dcbd::stream_request"), x.id, x.q, x.options,
           x.window, x.chunking);
}

/// One chunk of a stream; `seq` counts from 0.
struct stream_chunk {
  std::uint64_t id = 0;
  std::uint64_t seq = 0;
  std::vector<sequenced_event> events;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stream_chunk& x) {
  return f(caf::meta::type_name("dcbd::stream_chunk"), x.id, x.seq, x.events);
}

/// The end of a stream: the snapshot head and the event count on success,
/// or why it failed.
struct stream_end {
  std::uint64_t id = 0;
  std::uint64_t head = 0;
  std::uint64_t events = 0;
  errc code = errc::none;
  std::string message;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stream_end& x) {
  auto code = static_cast<std::uint8_t>(x.code);
  return f(caf::meta::type_name("dcbd::stream_end"), x.id, x.head, x.events,
           code, x.message, caf::meta::load_callback([&]() -> caf::error {
             x.code = static_cast<errc>(code);
             return caf::none;
           }));
}

/// A decision model to project.
struct decision_model {
  /// Node-local; see `projectors_ptr`.
  projectors_ptr projectors;
  /// Project at the event cache's own head, without a read index
  /// (`read_consistency::snapshot`): a consistent prefix of the log that
  /// may lack appends acknowledged by other processes. Only for a decision
  /// whose append the model's condition protects (a command's first
  /// attempt). False: the model sees every append acknowledged before the
  /// projection began.
  bool at_cache_head = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, decision_model& x) {
  return f(caf::meta::type_name("dcbd::decision_model"), x.projectors,
           x.at_cache_head);
}

/// A projected decision model: states plus the condition that protects a
/// decision made on them (store/decision.hpp). The states are node-local; see
/// `states_ptr`.
using projection = decision;

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, projection& x) {
  detail::optional_parts<append_condition> cond{x.condition};
  return f(caf::meta::type_name("dcbd::projection"), x.states, cond.present,
           cond.value, x.head, x.events_read,
           caf::meta::load_callback([&]() -> caf::error {
             cond.store(x.condition);
             return caf::none;
           }));
}

/// What a stream sink must accept.
using stream_sink_actor
  = caf::typed_actor<caf::reacts_to<chunk_atom, stream_chunk>,
                     caf::reacts_to<end_atom, stream_end>>;

using reader_actor = caf::typed_actor<
  caf::replies_to<read_atom, query, read_options>::with<read_result>,
  caf::replies_to<read_atom, query, read_options,
                  snapshot_atom>::with<read_result>,
  caf::replies_to<read_atom, query, read_options,
                  direct_atom>::with<read_result>,
  caf::reacts_to<stream_atom, stream_request, caf::actor>,
  caf::reacts_to<credit_atom, std::uint64_t, std::uint32_t>,
  caf::reacts_to<cancel_atom, std::uint64_t>,
  caf::replies_to<project_atom, decision_model>::with<projection>,
  caf::replies_to<head_atom>::with<std::uint64_t>,
  caf::reacts_to<pump_atom, std::uint64_t>>;

/// Settings of one reader.
struct reader_config {
  /// Largest result `read` returns.
  std::size_t max_read_events = 10'000;
  /// Chunking of the reads behind `project`.
  stream_options project_chunking;
  /// Input limits.
  dcbd::limits limits;
};

/// Spawns a detached reader that reads through `backend`.
reader_actor spawn_reader(caf::actor_system& sys,
                          std::shared_ptr<event_store> backend,
                          reader_config cfg);

// -- stream sinks -------------------------------------------------------------

/// A slice of a stream, handed to a stream callback.
using chunk_handler = std::function<void(std::vector<sequenced_event>&)>;

/// Called with each chunk of a paced stream, on an actor thread. Call `ack`
/// exactly once, from any thread, when the chunk is consumed: `ack(true)`
/// asks for more, `ack(false)` cancels the stream. At most `window` chunks
/// are handed out and not yet acknowledged.
using paced_chunk_handler = std::function<void(
  std::vector<sequenced_event>& chunk, std::function<void(bool)> ack)>;

/// The result of a stream: the snapshot head and the event count.
struct stream_summary {
  std::uint64_t head = 0;
  std::uint64_t events = 0;
};

/// Called once at the end of a stream.
using summary_handler = std::function<void(caf::expected<stream_summary>)>;

/// Spawns an actor that streams `req` from `readers` into `on_chunk` under
/// credit flow control (a chunk is acknowledged when `on_chunk` returns) and
/// calls `done` once; for actor code that wants a stream without blocking.
/// The stream fails with `unavailable` after `idle_timeout` without a chunk.
/// A `req.id` of 0 is replaced by a fresh one.
caf::actor spawn_stream_sink(caf::actor_system& sys, reader_actor readers,
                             stream_request req, chunk_handler on_chunk,
                             summary_handler done,
                             std::chrono::milliseconds idle_timeout
                             = std::chrono::milliseconds{30'000});

/// Like `spawn_stream_sink`, but `on_chunk` acknowledges each chunk itself
/// when it is done with it, e.g. once it is written to a socket.
caf::actor spawn_paced_sink(caf::actor_system& sys, reader_actor readers,
                            stream_request req, paced_chunk_handler on_chunk,
                            summary_handler done,
                            std::chrono::milliseconds idle_timeout
                            = std::chrono::milliseconds{30'000});

/// Returns a stream id no other call of this process returned.
std::uint64_t fresh_stream_id();

} // namespace dcbd
