// Test support: a live subscription over HTTP (GET /v1/subscribe) read on
// a thread of its own, its frames parsed as they arrive.
#pragma once

#include "runtime/http_client.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace dcbd::test {

using namespace std::chrono_literals;

/// One subscription over HTTP on its own thread; frames are parsed as they
/// arrive (SSE frames become {"kind": <event>, "id", "data"} objects,
/// heartbeat comments {"kind":"heartbeat"}).
class sub_client {
public:
  using json = nlohmann::json;

  sub_client(std::uint16_t port, const std::string& target, bool sse,
             dcbd::client::streaming_get::headers extra = {})
    : sse_(sse) {
    if (sse)
      extra.emplace_back("Accept", "text/event-stream");
    get_ = std::make_unique<dcbd::client::streaming_get>(
      dcbd::client::parse_url("http://127.0.0.1:" + std::to_string(port)),
      target, std::move(extra));
    thread_ = std::thread{[this] {
      try {
        auto ok = get_->run(
          [this](const dcbd::client::stream_head& h) {
            std::lock_guard guard{mtx_};
            head_ = h;
            cv_.notify_all();
          },
          [this](std::string_view data) {
            std::lock_guard guard{mtx_};
            raw_ += data;
            parse();
            cv_.notify_all();
            return true;
          });
        std::lock_guard guard{mtx_};
        ended_ = true;
        ended_cleanly_ = ok;
      } catch (const std::exception& e) {
        std::lock_guard guard{mtx_};
        ended_ = true;
        error_ = e.what();
      }
      cv_.notify_all();
    }};
  }

  ~sub_client() {
    close();
  }

  void close() {
    get_->close();
    if (thread_.joinable())
      thread_.join();
  }

  template <class Pred>
  bool wait(Pred pred, std::chrono::milliseconds d = 20s) {
    std::unique_lock guard{mtx_};
    return cv_.wait_for(guard, d, [&] {
      return pred();
    });
  }

  bool wait_events(std::size_t n, std::chrono::milliseconds d = 20s) {
    return wait(
      [&] {
        return count_locked("event") >= n;
      },
      d);
  }

  bool wait_kind(const std::string& kind, std::chrono::milliseconds d = 20s) {
    return wait_count(kind, 1, d);
  }

  /// Waits for `n` frames of `kind`.
  bool wait_count(const std::string& kind, std::size_t n,
                  std::chrono::milliseconds d = 20s) {
    return wait(
      [&] {
        return count_locked(kind) >= n;
      },
      d);
  }

  /// Waits for a frame of `kind` after the `n`th event. The server writes
  /// a batch only once the one before it is on the socket (and its
  /// completion has run), so such a frame, sent in a later batch, proves
  /// that the write of the events completed on the server.
  bool wait_kind_after_events(const std::string& kind, std::size_t n,
                              std::chrono::milliseconds d = 20s) {
    return wait(
      [&] {
        std::size_t events = 0;
        for (auto& f : frames_) {
          if (events >= n && f["kind"] == kind)
            return true;
          if (f["kind"] == "event")
            ++events;
        }
        return false;
      },
      d);
  }

  bool wait_frame(const std::function<bool(const json&)>& p,
                  std::chrono::milliseconds d = 20s) {
    return wait(
      [&] {
        return std::any_of(frames_.begin(), frames_.end(), p);
      },
      d);
  }

  bool wait_end(std::chrono::milliseconds d = 20s) {
    return wait(
      [&] {
        return ended_;
      },
      d);
  }

  unsigned status() {
    wait([&] {
      return head_.status != 0 || ended_;
    });
    std::lock_guard guard{mtx_};
    return head_.status;
  }

  dcbd::client::stream_head head() {
    std::lock_guard guard{mtx_};
    return head_;
  }

  std::vector<json> frames() {
    std::lock_guard guard{mtx_};
    return frames_;
  }

  std::string error() {
    std::lock_guard guard{mtx_};
    return error_;
  }

  std::string raw() {
    std::lock_guard guard{mtx_};
    return raw_;
  }

  std::size_t count(const std::string& kind) {
    std::lock_guard guard{mtx_};
    return count_locked(kind);
  }

  /// The events' data objects (SSE) or lines (NDJSON), in order.
  std::vector<json> events() {
    std::lock_guard guard{mtx_};
    std::vector<json> out;
    for (auto& f : frames_)
      if (f["kind"] == "event")
        out.push_back(sse_ ? f["data"] : f);
    return out;
  }

private:
  std::size_t count_locked(const std::string& kind) const {
    return static_cast<std::size_t>(
      std::count_if(frames_.begin(), frames_.end(), [&](const json& f) {
        return f["kind"] == kind;
      }));
  }

  // Under the lock: turns complete frames of raw_ into frames_.
  void parse() {
    if (!head_.chunked || head_.status != 200) {
      return;
    }
    if (!sse_) {
      std::size_t nl;
      while ((nl = raw_.find('\n', parsed_)) != std::string::npos) {
        frames_.push_back(json::parse(raw_.substr(parsed_, nl - parsed_)));
        parsed_ = nl + 1;
      }
      return;
    }
    std::size_t end;
    while ((end = raw_.find("\n\n", parsed_)) != std::string::npos) {
      auto text = raw_.substr(parsed_, end - parsed_);
      parsed_ = end + 2;
      json f = json::object();
      std::istringstream lines{text};
      std::string line;
      while (std::getline(lines, line)) {
        if (line.rfind("retry: ", 0) == 0)
          f["retry"] = std::stoi(line.substr(7));
        else if (line.rfind("id: ", 0) == 0)
          f["id"] = line.substr(4);
        else if (line.rfind("event: ", 0) == 0)
          f["kind"] = line.substr(7);
        else if (line.rfind("data: ", 0) == 0)
          f["data"] = json::parse(line.substr(6));
        else if (line.rfind(": heartbeat", 0) == 0)
          f["kind"] = "heartbeat", f["comment"] = line;
        else
          ADD_FAILURE() << "unexpected SSE line: " << line;
      }
      if (!f.contains("kind"))
        f["kind"] = f.contains("retry") ? "retry" : "?";
      frames_.push_back(std::move(f));
    }
  }

  bool sse_;
  std::unique_ptr<dcbd::client::streaming_get> get_;
  std::thread thread_;
  std::mutex mtx_;
  std::condition_variable cv_;
  dcbd::client::stream_head head_;
  std::string raw_;
  std::size_t parsed_ = 0;
  std::vector<json> frames_;
  bool ended_ = false;
  bool ended_cleanly_ = false;
  std::string error_;
};

} // namespace dcbd::test
