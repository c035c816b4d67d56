// Test support: a blocking WebSocket client (Beast) whose every operation
// has a deadline.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace dcbd::test {

// A WebSocket client whose every operation has a deadline. An operation
// that runs out of time drops the connection.
class ws_client {
  using tcp = boost::asio::ip::tcp;

public:
  explicit ws_client(std::uint16_t port) : ws_(ioc_) {
    boost::beast::get_lowest_layer(ws_).connect(
      {boost::asio::ip::make_address("127.0.0.1"), port});
    ws_.control_callback([this](boost::beast::websocket::frame_type kind,
                                boost::beast::string_view payload) {
      if (kind == boost::beast::websocket::frame_type::pong)
        pongs_.emplace_back(payload);
    });
  }

  boost::beast::error_code ping(const std::string& payload) {
    return run([&](auto h) {
      ws_.async_ping(boost::beast::websocket::ping_data{payload}, std::move(h));
    });
  }

  // The payloads of the pongs seen while reading, in order.
  const std::vector<std::string>& pongs() const {
    return pongs_;
  }

  // The handshake; the server's answer is in `upgrade_response()`.
  boost::beast::error_code handshake(const std::string& target = "/ws") {
    return run([&](auto h) {
      ws_.async_handshake(res_, "127.0.0.1", target, std::move(h));
    });
  }

  const boost::beast::websocket::response_type& upgrade_response() const {
    return res_;
  }

  boost::beast::error_code send(const std::string& text, bool binary = false) {
    ws_.binary(binary);
    return run([&](auto h) {
      ws_.async_write(boost::asio::buffer(text), std::move(h));
    });
  }

  // The next message; an error when the connection closed instead.
  std::pair<boost::beast::error_code, std::string>
  read(std::chrono::milliseconds wait = std::chrono::seconds{5}) {
    boost::beast::flat_buffer buf;
    auto ec = run(
      [&](auto h) {
        ws_.async_read(buf, std::move(h));
      },
      wait);
    return {ec, boost::beast::buffers_to_string(buf.data())};
  }

  boost::beast::error_code close() {
    return run([&](auto h) {
      ws_.async_close(boost::beast::websocket::close_code::normal,
                      std::move(h));
    });
  }

  // Drops the TCP connection without a close frame.
  void disconnect() {
    boost::beast::error_code ignored;
    boost::beast::get_lowest_layer(ws_).socket().close(ignored);
  }

  // The close frame the server sent.
  const boost::beast::websocket::close_reason& reason() const {
    return ws_.reason();
  }

private:
  // Runs the operation `start` begins for at most `wait`.
  template <class Start>
  boost::beast::error_code
  run(Start start, std::chrono::milliseconds wait = std::chrono::seconds{5}) {
    std::optional<boost::beast::error_code> result;
    start([&result](boost::beast::error_code ec, auto&&...) {
      result = ec;
    });
    ioc_.restart();
    ioc_.run_for(wait);
    if (result)
      return *result;
    disconnect();
    ioc_.restart();
    ioc_.run();
    return boost::beast::error::timeout;
  }

  boost::asio::io_context ioc_;
  boost::beast::websocket::stream<boost::beast::tcp_stream> ws_;
  boost::beast::websocket::response_type res_;
  std::vector<std::string> pongs_;
};

// Raw frames for hostile clients: a client frame with opcode `op` (masked
// unless told otherwise), whatever the payload.
inline std::string ws_frame(const std::string& payload, int op, bool fin = true,
                            bool masked = true) {
  std::string f;
  f += static_cast<char>((fin ? 0x80 : 0) | op);
  auto len = payload.size();
  auto m = masked ? 0x80 : 0;
  if (len < 126) {
    f += static_cast<char>(m | static_cast<int>(len));
  } else if (len < 65536) {
    f += static_cast<char>(m | 126);
    f += static_cast<char>(len >> 8);
    f += static_cast<char>(len & 0xff);
  } else {
    f += static_cast<char>(m | 127);
    for (int s = 56; s >= 0; s -= 8)
      f += static_cast<char>((len >> s) & 0xff);
  }
  std::string key = masked ? "\x12\x34\x56\x78" : "";
  f += key;
  for (std::size_t i = 0; i < len; ++i)
    f += masked ? static_cast<char>(payload[i] ^ key[i % 4]) : payload[i];
  return f;
}

// Connects `s` to `port` and asks for a WebSocket upgrade of `target` by
// hand; returns the answer's head ("" when the connection failed).
inline std::string ws_upgrade(boost::asio::ip::tcp::socket& s,
                              std::uint16_t port,
                              const std::string& target = "/v1/ws") {
  namespace net = boost::asio;
  boost::beast::error_code ec;
  s.connect({net::ip::make_address("127.0.0.1"), port}, ec);
  if (!ec)
    net::write(s,
               net::buffer("GET " + target
                           + " HTTP/1.1\r\nHost: x\r\nUpgrade: "
                             "websocket\r\nConnection: "
                             "Upgrade\r\nSec-WebSocket-Key: "
                             "dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-"
                             "Version: 13\r\n\r\n"),
               ec);
  std::string got;
  char buf[512];
  while (!ec && got.find("\r\n\r\n") == std::string::npos)
    got.append(buf, s.read_some(net::buffer(buf), ec));
  return ec ? std::string{} : got;
}

} // namespace dcbd::test
