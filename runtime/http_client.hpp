// A small synchronous HTTP/1.1 client for dcbctl and the demo (no CAF).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dcbd::client {

/// Percent-encodes `s` for a URL query component.
std::string url_encode(std::string_view s);

/// Where a node listens, from "http://host[:port][/...]".
struct endpoint {
  std::string host;
  std::string port = "80";
  /// The URL as given, for messages.
  std::string url;
};

/// Parses an http:// URL. Throws `std::invalid_argument` naming the problem.
endpoint parse_url(const std::string& url);

/// The node could not be reached, or the connection broke mid-call.
struct unreachable : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct response {
  unsigned status = 0;
  std::string body;
};

/// One keep-alive connection, opened on first use and again after the
/// node closed it. A failed call throws `unreachable` and is not retried
/// (a POST may have been applied).
class connection {
public:
  explicit connection(endpoint ep);
  ~connection();

  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  /// Sends `method` (e.g. "GET", "POST") for `target`; a non-empty `body`
  /// goes as `content_type`.
  response call(std::string_view method, const std::string& target,
                const std::string& body = {},
                std::string_view content_type = "application/json");

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// The head of a streamed response.
struct stream_head {
  unsigned status = 0;
  std::string content_type;
  /// Whether the body is chunked (a stream) rather than one document.
  bool chunked = false;
};

/// One long-lived GET on a connection of its own (a subscription, a
/// streaming read): the body is handed over piece by piece as it arrives.
class streaming_get {
public:
  using headers = std::vector<std::pair<std::string, std::string>>;

  streaming_get(endpoint ep, std::string target, headers extra = {});
  ~streaming_get();

  streaming_get(const streaming_get&) = delete;
  streaming_get& operator=(const streaming_get&) = delete;

  /// Connects, sends the request and blocks while the response arrives:
  /// `on_head` once, then `on_data` with each piece of the body (return
  /// false to stop). Returns true when the body ended normally, false when
  /// `on_data` stopped it, `close` was called or the connection broke
  /// after the head. Throws `unreachable` when the node cannot be reached
  /// or sends no head. Call it once.
  bool run(const std::function<void(const stream_head&)>& on_head,
           const std::function<bool(std::string_view)>& on_data);

  /// Ends `run` from another thread (closes the connection). Idempotent.
  void close();

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace dcbd::client
