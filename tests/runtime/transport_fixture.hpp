// Test support for the transport suites (http_chunk_writer_test.cpp,
// http_websocket_test.cpp): an `http_transport` serving a route table of
// the test's own through a router, with no engine and no database.
#pragma once

#include "runtime/http_routes.hpp"
#include "runtime/http_transport.hpp"
#include "runtime/metrics.hpp"

#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>

namespace dcbd::test {

/// Serves `serve`'s routes on an ephemeral port; stops in TearDown.
class TransportTest : public ::testing::Test {
protected:
  void serve(http::route_table routes, http_config cfg = {}) {
    cfg.port = 0;
    router_.emplace(std::move(routes), metrics_, cfg.max_body);
    http::transport_handlers h;
    h.on_request = [this](http::responder r) {
      router_->dispatch(std::move(r));
    };
    h.on_refused = [this](http::responder r, unsigned status, std::string code,
                          std::string message) {
      router_->refuse(std::move(r), status, std::move(code),
                      std::move(message));
    };
    transport_.emplace(cfg, std::move(h));
  }

  void TearDown() override {
    transport_.reset();
    router_.reset();
  }

  std::uint16_t port() const {
    return transport_->port();
  }

  /// The value of the sample `series` in a scrape; -1 when absent.
  double metric(const std::string& series) const {
    auto text
      = prometheus::TextSerializer().Serialize(metrics_->registry()->Collect());
    auto at = text.find("\n" + series + " ");
    if (at == std::string::npos)
      return -1;
    return std::stod(text.substr(at + series.size() + 2));
  }

  /// Whether `p()` holds within `wait`.
  template <class Predicate>
  static bool eventually(Predicate p, std::chrono::milliseconds wait) {
    auto deadline = std::chrono::steady_clock::now() + wait;
    while (!p()) {
      if (std::chrono::steady_clock::now() > deadline)
        return false;
      std::this_thread::sleep_for(std::chrono::milliseconds{5});
    }
    return true;
  }

  std::shared_ptr<node_metrics> metrics_ = std::make_shared<node_metrics>();
  std::optional<http::router> router_;
  std::optional<http::http_transport> transport_;
};

} // namespace dcbd::test
