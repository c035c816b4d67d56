#include "runtime/http_client.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <cctype>
#include <chrono>
#include <mutex>

namespace dcbd::client {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = net::ip::tcp;

std::string url_encode(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

endpoint parse_url(const std::string& url) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0)
    throw std::invalid_argument("the URL must start with http:// (got \"" + url
                                + "\")");
  auto rest = url.substr(scheme.size());
  rest = rest.substr(0, rest.find('/'));
  endpoint ep;
  ep.url = url;
  auto colon = rest.rfind(':');
  ep.host = rest.substr(0, colon);
  if (colon != std::string::npos)
    ep.port = rest.substr(colon + 1);
  if (ep.host.empty() || ep.port.empty())
    throw std::invalid_argument("the URL has no host or port: " + url);
  return ep;
}

struct connection::impl {
  endpoint ep;
  net::io_context ioc;
  beast::tcp_stream stream{ioc};
  beast::flat_buffer buffer;
  bool open = false;

  void close() {
    beast::error_code ec;
    stream.socket().close(ec);
    buffer.clear();
    open = false;
  }
};

connection::connection(endpoint ep) : impl_(std::make_unique<impl>()) {
  impl_->ep = std::move(ep);
}

connection::~connection() = default;

response connection::call(std::string_view method, const std::string& target,
                          const std::string& body,
                          std::string_view content_type) {
  auto& d = *impl_;
  beast::error_code ec;
  if (!d.open) {
    tcp::resolver resolver{d.ioc};
    auto endpoints = resolver.resolve(d.ep.host, d.ep.port, ec);
    if (ec)
      throw unreachable("cannot resolve " + d.ep.host + ": " + ec.message());
    d.stream.expires_after(std::chrono::seconds{10});
    d.stream.connect(endpoints, ec);
    if (ec)
      throw unreachable("cannot reach the node at " + d.ep.url + ": "
                        + ec.message());
    d.open = true;
  }
  bhttp::request<bhttp::string_body> req;
  req.method_string(beast::string_view{method.data(), method.size()});
  req.target(target);
  req.version(11);
  req.set(bhttp::field::host, d.ep.host);
  if (!body.empty()) {
    req.set(bhttp::field::content_type,
            beast::string_view{content_type.data(), content_type.size()});
    req.body() = body;
  }
  req.keep_alive(true);
  req.prepare_payload();
  d.stream.expires_after(std::chrono::seconds{60});
  bhttp::write(d.stream, req, ec);
  if (ec) {
    d.close();
    throw unreachable("cannot send to " + d.ep.url + ": " + ec.message());
  }
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(std::uint64_t{1} << 34);
  bhttp::read(d.stream, d.buffer, parser, ec);
  if (ec) {
    d.close();
    throw unreachable("no answer from " + d.ep.url + ": " + ec.message());
  }
  auto& res = parser.get();
  if (!res.keep_alive())
    d.close();
  return response{res.result_int(), std::move(res.body())};
}

// -- streaming_get ------------------------------------------------------------

struct streaming_get::impl {
  endpoint ep;
  std::string target;
  headers extra;
  net::io_context ioc;
  tcp::socket socket{ioc};
  std::mutex mtx;
  bool closed = false;
};

streaming_get::streaming_get(endpoint ep, std::string target, headers extra)
  : impl_(std::make_unique<impl>()) {
  impl_->ep = std::move(ep);
  impl_->target = std::move(target);
  impl_->extra = std::move(extra);
}

streaming_get::~streaming_get() = default;

void streaming_get::close() {
  auto& d = *impl_;
  std::lock_guard guard{d.mtx};
  d.closed = true;
  beast::error_code ec;
  // shutdown wakes a blocked read on another thread; close follows in run.
  d.socket.shutdown(tcp::socket::shutdown_both, ec);
}

bool streaming_get::run(const std::function<void(const stream_head&)>& on_head,
                        const std::function<bool(std::string_view)>& on_data) {
  auto& d = *impl_;
  beast::error_code ec;
  tcp::resolver resolver{d.ioc};
  auto endpoints = resolver.resolve(d.ep.host, d.ep.port, ec);
  if (ec)
    throw unreachable("cannot resolve " + d.ep.host + ": " + ec.message());
  {
    std::lock_guard guard{d.mtx};
    if (d.closed)
      return false;
    net::connect(d.socket, endpoints, ec);
    if (ec)
      throw unreachable("cannot reach the node at " + d.ep.url + ": "
                        + ec.message());
  }
  bhttp::request<bhttp::empty_body> req{bhttp::verb::get, d.target, 11};
  req.set(bhttp::field::host, d.ep.host);
  for (auto& [name, value] : d.extra)
    req.set(name, value);
  bhttp::write(d.socket, req, ec);
  if (ec)
    throw unreachable("cannot send to " + d.ep.url + ": " + ec.message());
  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(std::uint64_t{1} << 62);
  bhttp::read_header(d.socket, buffer, parser, ec);
  if (ec)
    throw unreachable("no answer from " + d.ep.url + ": " + ec.message());
  stream_head head;
  head.status = parser.get().result_int();
  head.content_type = std::string{parser.get()[bhttp::field::content_type]};
  head.chunked = parser.chunked();
  on_head(head);
  bool stopped = false;
  // Chunk data goes to on_data as it arrives; a plain body is delivered
  // whole at the end.
  auto on_chunk = [&](std::uint64_t, beast::string_view body,
                      beast::error_code& err) -> std::size_t {
    if (!stopped && !on_data(std::string_view{body.data(), body.size()})) {
      stopped = true;
      err = bhttp::error::end_of_chunk; // any error ends the read
    }
    return body.size();
  };
  parser.on_chunk_body(on_chunk); // by reference: it must outlive the reads
  while (!parser.is_done()) {
    bhttp::read_some(d.socket, buffer, parser, ec);
    if (ec || stopped)
      break;
  }
  if (!ec && !stopped && !head.chunked && !parser.get().body().empty())
    on_data(parser.get().body());
  std::lock_guard guard{d.mtx};
  d.closed = true;
  beast::error_code ignored;
  d.socket.close(ignored);
  return !ec && !stopped && parser.is_done();
}

} // namespace dcbd::client
