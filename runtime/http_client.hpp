// A small synchronous HTTP/1.1 client for dcbctl and the demo (no CAF).
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

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

} // namespace dcbd::client
