// Test support for the HTTP suites (http_test.cpp, node_test.cpp,
// http_stream_test.cpp, dcb_read_test.cpp): a keep-alive client for one
// connection, a slow client, and builders of request documents.
#pragma once

#include "runtime/http_client.hpp"
#include "runtime/http_server.hpp"
#include "runtime/json_api.hpp"
#include "runtime/metrics.hpp"
#include "tests/support/engine_fixture.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

namespace dcbd::test::http_support {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using dcbd::client::url_encode;
using namespace std::chrono_literals;

struct reply {
  unsigned status = 0;
  std::string body;
  std::string content_type;
  std::string allow;
  std::string retry_after;
  bool closed = false;

  json j() const {
    return json::parse(body);
  }
};

/// A keep-alive HTTP client for one connection.
class client {
public:
  explicit client(std::uint16_t port) : stream_(ioc_) {
    stream_.connect(tcp::endpoint{net::ip::make_address("127.0.0.1"), port});
  }

  reply send(bhttp::verb verb, const std::string& target,
             const std::string& body = {},
             const std::string& content_type = "application/json",
             const std::string& accept = {}) {
    bhttp::request<bhttp::string_body> req{verb, target, 11};
    req.set(bhttp::field::host, "127.0.0.1");
    if (!body.empty()) {
      req.set(bhttp::field::content_type, content_type);
      req.body() = body;
    }
    if (!accept.empty())
      req.set(bhttp::field::accept, accept);
    req.keep_alive(true);
    req.prepare_payload();
    stream_.expires_after(30s);
    bhttp::write(stream_, req);
    return receive();
  }

  reply receive() {
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(std::uint64_t{1} << 30);
    beast::error_code ec;
    bhttp::read(stream_, buffer_, parser, ec);
    reply r;
    if (ec) {
      r.closed = true;
      return r;
    }
    auto& res = parser.get();
    r.status = res.result_int();
    r.body = res.body();
    r.content_type = std::string{res[bhttp::field::content_type]};
    r.allow = std::string{res[bhttp::field::allow]};
    r.retry_after = std::string{res[bhttp::field::retry_after]};
    r.closed = !res.keep_alive();
    return r;
  }

  reply get(const std::string& target) {
    return send(bhttp::verb::get, target);
  }

  reply post(const std::string& target, const json& body) {
    return send(bhttp::verb::post, target, body.dump());
  }

  /// Writes raw bytes.
  void raw(const std::string& bytes) {
    net::write(stream_.socket(), net::buffer(bytes));
  }

  /// Whether the server closed the connection within `wait`.
  bool closed_within(std::chrono::milliseconds wait) {
    stream_.expires_after(wait);
    char c;
    beast::error_code ec;
    stream_.read_some(net::buffer(&c, 1), ec);
    return ec && ec != beast::error::timeout;
  }

private:
  net::io_context ioc_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
};

/// A client with a small receive buffer, so that a stream it does not read
/// stalls the server after a few kilobytes.
class slow_client {
public:
  explicit slow_client(std::uint16_t port) : stream_(ioc_) {
    auto& sock = stream_.socket();
    sock.open(tcp::v4());
    sock.set_option(net::socket_base::receive_buffer_size(4096));
    sock.connect({net::ip::make_address("127.0.0.1"), port});
  }

  void request(const std::string& target) {
    bhttp::request<bhttp::string_body> req{bhttp::verb::get, target, 11};
    req.set(bhttp::field::host, "127.0.0.1");
    bhttp::write(stream_, req);
  }

  /// Reads the whole response.
  bhttp::response<bhttp::string_body> response() {
    bhttp::response_parser<bhttp::string_body> p;
    p.body_limit(std::uint64_t{1} << 30);
    stream_.expires_after(60s);
    bhttp::read(stream_, buffer_, p);
    return p.release();
  }

  /// Reads some bytes of the response.
  std::size_t read_some() {
    char buf[512];
    stream_.expires_after(10s);
    return stream_.read_some(net::buffer(buf));
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().close(ignored);
  }

private:
  net::io_context ioc_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
};

inline json ev(const std::string& type, std::vector<std::string> tags,
               const std::string& data = "d") {
  return json{{"type", type}, {"tags", tags}, {"data", data}};
}

inline json items(std::vector<std::string> types,
                  std::vector<std::string> tags) {
  return json{{"items", json::array({json{{"types", types}, {"tags", tags}}})}};
}

inline std::string read_target(const std::string& route, const json& q,
                               const json& options = nullptr) {
  auto t = route + "?query=" + url_encode(q.dump());
  if (!options.is_null())
    t += "&options=" + url_encode(options.dump());
  return t;
}

// The value of the sample `name{labels}` in a scrape; -1 when absent.
inline double sample(const std::string& text, const std::string& series) {
  std::istringstream in{text};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(series + " ", 0) == 0)
      return std::stod(line.substr(series.size() + 1));
  return -1;
}

} // namespace dcbd::test::http_support
