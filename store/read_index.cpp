#include "store/read_index.hpp"

#include <algorithm>
#include <utility>

namespace dcbd {

read_index::read_index(std::function<std::uint64_t()> fetch_head)
  : fetch_(std::move(fetch_head)) {
  // nop
}

std::optional<std::uint64_t> read_index::get() {
  std::unique_lock lock{mutex_};
  // Any round numbered `need` or later started after this call began.
  auto need = started_ + 1;
  ++unassigned_;
  for (;;) {
    if (finished_ >= need) {
      if (failed_round_ >= need && failed_round_ == finished_)
        return std::nullopt;
      return head_;
    }
    if (!in_flight_) {
      // Lead the next round: it serves everyone waiting now.
      in_flight_ = true;
      auto round = ++started_;
      auto batch = std::exchange(unassigned_, 0);
      lock.unlock();
      std::optional<std::uint64_t> h;
      try {
        h = fetch_();
      } catch (...) {
        // The waiters read from the database, which reports the error.
      }
      lock.lock();
      in_flight_ = false;
      finished_ = round;
      ++stats_.rounds;
      stats_.reads += batch;
      stats_.max_batch = std::max(stats_.max_batch, batch);
      if (h)
        head_ = std::max(head_, *h);
      else {
        failed_round_ = round;
        ++stats_.failures;
      }
      done_cv_.notify_all();
      continue;
    }
    done_cv_.wait(lock);
  }
}

read_index_stats read_index::stats() const {
  std::lock_guard lock{mutex_};
  return stats_;
}

} // namespace dcbd
