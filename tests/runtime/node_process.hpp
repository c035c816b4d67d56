// Test support: real dcbd processes (and other children, such as dcbctl)
// started with fork/exec and stopped with a signal.
#pragma once

#include "tests/support/pg_fixture.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#ifndef DCBD_BINARY
#  error "DCBD_BINARY must name the dcbd executable"
#endif

namespace dcbd::test {

/// A port nothing listens on right now, and never handed out before by
/// this process: ports picked ahead of their use (a cluster's HTTP, metrics
/// and cluster ports) must not collide before they are bound.
inline std::uint16_t free_tcp_port() {
  namespace net = boost::asio;
  static std::mutex mtx;
  static std::set<std::uint16_t> given;
  std::lock_guard guard{mtx};
  for (;;) {
    net::io_context ioc;
    net::ip::tcp::acceptor a{
      ioc, net::ip::tcp::endpoint{net::ip::make_address("127.0.0.1"), 0}};
    auto port = a.local_endpoint().port();
    if (given.insert(port).second)
      return port;
  }
}

/// Waits until something listens on 127.0.0.1:`port`.
inline bool listening_within(std::uint16_t port, std::chrono::seconds wait) {
  namespace net = boost::asio;
  auto deadline = std::chrono::steady_clock::now() + wait;
  while (std::chrono::steady_clock::now() < deadline) {
    net::io_context ioc;
    net::ip::tcp::socket s{ioc};
    boost::system::error_code ec;
    s.connect({net::ip::make_address("127.0.0.1"), port}, ec);
    if (!ec)
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds{50});
  }
  return false;
}

/// A child process; killed (SIGKILL) and reaped when destroyed.
class child_process {
public:
  /// Runs `argv` with `env` added; stdout (and stderr) go to `log`, or are
  /// captured when `log` is empty (see `output`).
  child_process(std::vector<std::string> argv,
                std::vector<std::pair<std::string, std::string>> env,
                std::string log = {}) {
    int fds[2] = {-1, -1};
    capture_ = log.empty();
    if (capture_ && ::pipe(fds) != 0)
      return;
    pid_ = ::fork();
    if (pid_ == 0) {
      int fd = capture_
                 ? fds[1]
                 : ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      if (!capture_)
        ::dup2(fd, 2);
      for (auto& [k, v] : env)
        ::setenv(k.c_str(), v.c_str(), 1);
      std::vector<char*> args;
      for (auto& a : argv)
        args.push_back(a.data());
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    if (capture_) {
      ::close(fds[1]);
      reader_ = std::thread{[this, fd = fds[0]] {
        char buf[4096];
        for (;;) {
          auto n = ::read(fd, buf, sizeof buf);
          if (n <= 0)
            break;
          std::lock_guard guard{mtx_};
          out_.append(buf, static_cast<std::size_t>(n));
        }
        ::close(fd);
      }};
    }
  }

  ~child_process() {
    if (running())
      signal(SIGKILL);
    wait();
    if (reader_.joinable())
      reader_.join();
  }

  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  pid_t pid() const {
    return pid_;
  }

  bool running() const {
    return pid_ > 0 && !reaped_;
  }

  void signal(int sig) {
    if (running())
      ::kill(pid_, sig);
  }

  /// Waits for the exit; returns the wait status (-1 if not started).
  /// Captured output is complete afterwards (the reader has drained the
  /// pipe).
  int wait() {
    if (pid_ <= 0)
      return -1;
    if (!reaped_) {
      ::waitpid(pid_, &status_, 0);
      reaped_ = true;
    }
    if (reader_.joinable())
      reader_.join();
    return status_;
  }

  /// Whether it exited within `d` (reaping it then).
  bool exited_within(std::chrono::milliseconds d) {
    if (pid_ <= 0)
      return false;
    auto until = std::chrono::steady_clock::now() + d;
    while (!reaped_) {
      if (::waitpid(pid_, &status_, WNOHANG) == pid_) {
        reaped_ = true;
        break;
      }
      if (std::chrono::steady_clock::now() >= until)
        return false;
      std::this_thread::sleep_for(std::chrono::milliseconds{20});
    }
    if (reader_.joinable())
      reader_.join();
    return true;
  }

  /// What it wrote to stdout so far (when captured).
  std::string output() {
    std::lock_guard guard{mtx_};
    return out_;
  }

private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
  bool capture_ = false;
  std::thread reader_;
  std::mutex mtx_;
  std::string out_;
};

/// A dcbd node on `schema`, listening on fresh ports (or `http_port`): the
/// `binary` (dcbd, or a program that embeds a node) with `env` added.
class node_process {
public:
  node_process(const std::string& schema, std::vector<std::string> args = {},
               std::uint16_t http_port = 0,
               std::vector<std::pair<std::string, std::string>> env = {},
               std::string binary = DCBD_BINARY)
    : http_port_(http_port ? http_port : free_tcp_port())
    , metrics_port_(free_tcp_port())
    , log_("/tmp/dcbd-node-" + std::to_string(::getpid()) + "-"
           + std::to_string(http_port_) + ".log") {
    std::vector<std::string> argv{std::move(binary)};
    argv.insert(argv.end(), args.begin(), args.end());
    env.insert(
      env.begin(),
      {{"DCB_POSTGRES_DSN", test_dsn()},
       {"DCB_SCHEMA", schema},
       {"DCB_HTTP_ADDR", "127.0.0.1:" + std::to_string(http_port_)},
       {"DCB_METRICS_ADDR", "127.0.0.1:" + std::to_string(metrics_port_)}});
    proc_ = std::make_unique<child_process>(std::move(argv), std::move(env),
                                            log_);
    ok_ = listening_within(http_port_, std::chrono::seconds{60});
  }

  /// Whether it came up (listens on its HTTP port).
  bool up() const {
    return ok_;
  }

  std::uint16_t port() const {
    return http_port_;
  }

  std::uint16_t metrics_port() const {
    return metrics_port_;
  }

  const std::string& log() const {
    return log_;
  }

  child_process& process() {
    return *proc_;
  }

private:
  std::uint16_t http_port_;
  std::uint16_t metrics_port_;
  std::string log_;
  std::unique_ptr<child_process> proc_;
  bool ok_ = false;
};

} // namespace dcbd::test
