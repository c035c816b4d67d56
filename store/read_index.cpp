#include "store/read_index.hpp"

#include <algorithm>
#include <utility>
#include <vector>

namespace dcbd {

read_index::read_index(std::function<std::uint64_t()> fetch_head)
  : fetch_(std::move(fetch_head)) {
  // nop
}

read_index::~read_index() {
  {
    std::lock_guard lock{mutex_};
    stopping_ = true;
  }
  async_cv_.notify_all();
  if (async_thread_.joinable())
    async_thread_.join();
}

std::optional<std::uint64_t> read_index::result_for(std::uint64_t need) const {
  if (failed_round_ >= need && failed_round_ == finished_)
    return std::nullopt;
  return head_;
}

void read_index::lead_round(std::unique_lock<std::mutex>& lock) {
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
  if (!waiters_.empty())
    async_cv_.notify_one();
}

std::optional<std::uint64_t> read_index::get() {
  std::unique_lock lock{mutex_};
  // Any round numbered `need` or later started after this call began.
  auto need = started_ + 1;
  ++unassigned_;
  for (;;) {
    if (finished_ >= need)
      return result_for(need);
    if (!in_flight_) {
      // Lead the next round: it serves everyone waiting now.
      lead_round(lock);
      continue;
    }
    done_cv_.wait(lock);
  }
}

void read_index::get_async(callback done) {
  bool queued = false;
  {
    std::lock_guard lock{mutex_};
    if (!stopping_) {
      waiters_.push_back({started_ + 1, std::move(done)});
      ++unassigned_;
      queued = true;
      if (!async_thread_.joinable())
        async_thread_ = std::thread([this] {
          run_async();
        });
    }
  }
  if (!queued)
    return done(std::nullopt);
  async_cv_.notify_one();
}

void read_index::run_async() {
  std::unique_lock lock{mutex_};
  std::vector<std::pair<callback, std::optional<std::uint64_t>>> ready;
  for (;;) {
    async_cv_.wait(lock, [this] {
      return stopping_
             || (!waiters_.empty()
                 && (finished_ >= waiters_.front().need || !in_flight_));
    });
    if (stopping_)
      break;
    while (!waiters_.empty() && finished_ >= waiters_.front().need) {
      ready.emplace_back(std::move(waiters_.front().done),
                         result_for(waiters_.front().need));
      waiters_.pop_front();
    }
    if (!ready.empty()) {
      lock.unlock();
      for (auto& [done, head] : ready)
        done(head);
      ready.clear();
      lock.lock();
      continue;
    }
    if (!in_flight_ && !waiters_.empty())
      lead_round(lock);
  }
  auto rest = std::move(waiters_);
  lock.unlock();
  for (auto& w : rest)
    w.done(std::nullopt);
}

read_index_stats read_index::stats() const {
  std::lock_guard lock{mutex_};
  return stats_;
}

} // namespace dcbd
