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
  // Those a leader would have answered.
  for (auto& w : waiters_)
    w.done(std::nullopt);
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
  finish_round(round, batch, h);
  wake(lock);
}

void read_index::finish_round(std::uint64_t round, std::uint64_t batch,
                              std::optional<std::uint64_t> head) {
  in_flight_ = false;
  finished_ = round;
  ++stats_.rounds;
  stats_.reads += batch;
  stats_.max_batch = std::max(stats_.max_batch, batch);
  if (head)
    head_ = std::max(head_, *head);
  else {
    failed_round_ = round;
    ++stats_.failures;
  }
  done_cv_.notify_all();
}

void read_index::wake(std::unique_lock<std::mutex>&) {
  if (waiters_.empty())
    return;
  if (!leader_) {
    if (!async_thread_.joinable() && !stopping_)
      async_thread_ = std::thread([this] {
        run_async();
      });
    async_cv_.notify_one();
    return;
  }
  if (posted_)
    return;
  posted_ = true;
  leader_->post([weak = weak_from_this()] {
    if (auto self = weak.lock())
      self->lead_async();
  });
}

void read_index::take_ready(
  std::vector<std::pair<callback, std::optional<std::uint64_t>>>& ready) {
  while (!waiters_.empty() && finished_ >= waiters_.front().need) {
    ready.emplace_back(std::move(waiters_.front().done),
                       result_for(waiters_.front().need));
    waiters_.pop_front();
  }
}

void read_index::lead_async() {
  std::vector<std::pair<callback, std::optional<std::uint64_t>>> ready;
  std::shared_ptr<read_index_leader> leader;
  std::uint64_t round = 0;
  std::uint64_t batch = 0;
  {
    std::unique_lock lock{mutex_};
    posted_ = false;
    take_ready(ready);
    if (!leader_) {
      // Led alone again meanwhile: the thread takes the rest.
      if (!waiters_.empty())
        async_cv_.notify_one();
    } else if (!waiters_.empty() && !in_flight_) {
      // Every read waiting now arrived before this round starts.
      in_flight_ = true;
      round = ++started_;
      batch = std::exchange(unassigned_, 0);
      leader_round_ = round;
      leader_batch_ = batch;
      leader = leader_;
    }
  }
  for (auto& [done, head] : ready)
    done(head);
  if (!leader)
    return;
  leader->fetch(
    [weak = weak_from_this(), round, batch](std::optional<std::uint64_t> head) {
      if (auto self = weak.lock())
        self->finish_async(round, batch, head);
    });
}

void read_index::finish_async(std::uint64_t round, std::uint64_t batch,
                              std::optional<std::uint64_t> head) {
  std::vector<std::pair<callback, std::optional<std::uint64_t>>> ready;
  {
    std::unique_lock lock{mutex_};
    // A round `lead_alone` already ended (as failed) is not ended twice.
    if (leader_round_ != round)
      return;
    leader_round_ = 0;
    finish_round(round, batch, head);
    take_ready(ready);
    wake(lock);
  }
  for (auto& [done, h] : ready)
    done(h);
}

void read_index::lead_with(std::shared_ptr<read_index_leader> leader) {
  std::unique_lock lock{mutex_};
  leader_ = std::move(leader);
  posted_ = false;
  wake(lock);
}

void read_index::lead_alone() {
  std::unique_lock lock{mutex_};
  leader_.reset();
  posted_ = false;
  if (leader_round_ != 0) {
    finish_round(std::exchange(leader_round_, 0), leader_batch_, std::nullopt);
    // Its callbacks: the thread answers them (with nothing).
  }
  wake(lock);
}

std::optional<std::uint64_t> read_index::leased() {
  if (!lease_)
    return std::nullopt;
  auto head = lease_();
  if (head)
    lease_reads_.fetch_add(1, std::memory_order_relaxed);
  return head;
}

void read_index::use_lease(
  std::function<std::optional<std::uint64_t>()> lease) {
  lease_ = std::move(lease);
}

std::optional<std::uint64_t> read_index::get() {
  if (auto head = leased())
    return head;
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
  if (auto head = leased())
    return done(head);
  {
    std::unique_lock lock{mutex_};
    if (!stopping_) {
      waiters_.push_back({started_ + 1, std::move(done)});
      ++unassigned_;
      // A round in flight wakes them when it ends.
      if (!in_flight_)
        wake(lock);
      return;
    }
  }
  done(std::nullopt);
}

void read_index::run_async() {
  std::unique_lock lock{mutex_};
  std::vector<std::pair<callback, std::optional<std::uint64_t>>> ready;
  for (;;) {
    // While a leader leads, it also answers.
    async_cv_.wait(lock, [this] {
      return stopping_
             || (!leader_ && !waiters_.empty()
                 && (finished_ >= waiters_.front().need || !in_flight_));
    });
    if (stopping_)
      break;
    take_ready(ready);
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
  auto s = stats_;
  s.lease_reads = lease_reads_.load(std::memory_order_relaxed);
  return s;
}

} // namespace dcbd
