#include "store/memory_store.hpp"

#include "store/matching.hpp"
#include "store/read_cursor.hpp"
#include "store/validation.hpp"

#include <algorithm>
#include <limits>

namespace dcbd {

namespace {

std::size_t payload_size(const sequenced_event& e) {
  return e.event.data.size() + e.event.metadata.size();
}

} // namespace

// A stream over the log as it was when the stream started. The log only
// grows and positions are indexes, so holding the head is the snapshot.
class memory_event_store::stream_impl final : public event_stream {
public:
  stream_impl(memory_event_store& store, query q, const read_options& opts,
              const stream_options& chunking)
    : store_(store)
    , query_(std::move(q))
    , cursor_(opts)
    , chunking_(chunking) {
    chunking_.chunk_events = std::max<std::size_t>(chunking_.chunk_events, 1);
    std::lock_guard guard{store_.mtx_};
    head_ = store_.log_.size();
    cursor_.cap(head_);
  }

  bool next(std::vector<sequenced_event>& chunk) override {
    chunk.clear();
    std::size_t bytes = 0;
    std::lock_guard guard{store_.mtx_};
    while (!cursor_.done() && chunk.size() < chunking_.chunk_events
           && (chunk.empty() || bytes < chunking_.chunk_bytes)) {
      auto pos = cursor_.next();
      const auto& e = store_.log_[pos - 1];
      if (!matches(query_, e.event)) {
        cursor_.passed(pos);
        continue;
      }
      if (!chunk.empty() && bytes + payload_size(e) > chunking_.chunk_bytes)
        break; // leave it for the next chunk
      bytes += payload_size(e);
      chunk.push_back(e);
      cursor_.passed(pos, 1);
    }
    return !chunk.empty();
  }

  std::uint64_t head() const noexcept override {
    return head_;
  }

private:
  memory_event_store& store_;
  query query_;
  read_cursor cursor_;
  stream_options chunking_;
  std::uint64_t head_ = 0;
};

memory_event_store::memory_event_store(limits lim) : event_store(lim) {
  // nop
}

std::vector<append_result> memory_event_store::append_validated(
  const std::vector<validated_append>& group) {
  std::vector<append_result> results(group.size());
  std::lock_guard guard{mtx_};
  auto now = std::chrono::system_clock::now();
  for (std::size_t i = 0; i < group.size(); ++i) {
    const auto& req = group[i];
    auto& res = results[i];
    // Jobs are rows of the PostgreSQL store, inserted in the statement of
    // their events; this model has no queue to put them in.
    if (!req.jobs().empty()) {
      res.code = errc::invalid_argument;
      res.message = "jobs need the PostgreSQL store";
      continue;
    }
    if (const auto& cond = req.condition()) {
      auto after = cond->after.value_or(0);
      const auto& q = cond->fail_if_events_match;
      auto conflict
        = std::any_of(log_.begin()
                        + static_cast<std::ptrdiff_t>(
                          std::min<std::uint64_t>(after, log_.size())),
                      log_.end(), [&q](const sequenced_event& e) {
                        return matches(q, e.event);
                      });
      if (conflict) {
        res.code = errc::append_condition_failed;
        res.message = "an event matching the append condition exists after "
                      "position "
                      + std::to_string(after);
        continue;
      }
    }
    for (const auto& e : req.events())
      log_.push_back(sequenced_event{log_.size() + 1, now, e});
    res.last_position = log_.size();
    res.recorded_at = now;
  }
  return results;
}

read_result memory_event_store::read(const query& q,
                                     const read_options& options) {
  stream_impl s{*this, validate_read(q, options, input_limits()), options,
                stream_options{std::numeric_limits<std::size_t>::max(),
                               std::numeric_limits<std::size_t>::max()}};
  read_result out;
  out.head = s.head();
  s.next(out.events);
  return out;
}

std::unique_ptr<event_stream>
memory_event_store::stream(const query& q, const read_options& options,
                           const stream_options& chunking) {
  return std::make_unique<stream_impl>(
    *this, validate_read(q, options, input_limits()), options, chunking);
}

std::uint64_t memory_event_store::head() {
  std::lock_guard guard{mtx_};
  return log_.size();
}

} // namespace dcbd
