// The in-memory reference store: the model the PostgreSQL store is tested
// against. Not a production backend.
#pragma once

#include "store/event_store.hpp"

#include <mutex>

namespace dcbd {

/// A thread-safe in-memory event store with the semantics of DESIGN §2.
class memory_event_store final : public event_store {
public:
  explicit memory_event_store(limits lim = {});

  std::vector<append_result>
  append_validated(const std::vector<validated_append>& group) override;

  read_result read(const query& q, const read_options& options = {}) override;

  std::unique_ptr<event_stream>
  stream(const query& q, const read_options& options = {},
         const stream_options& chunking = {}) override;

  std::uint64_t head() override;

private:
  class stream_impl;

  std::mutex mtx_;
  std::vector<sequenced_event> log_;
};

} // namespace dcbd
