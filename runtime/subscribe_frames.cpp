#include "runtime/subscribe_frames.hpp"

#include "runtime/json_api.hpp"
#include "store/error.hpp"

#include <limits>

namespace dcbd::http {

namespace {

json event_json(const bus_item& item) {
  auto j = item.event ? to_json(*item.event) : json::object();
  j["position"] = item.position;
  j["prev"] = item.prev;
  return j;
}

json position_json(const bus_item& item) {
  return json{{"position", item.position}, {"head", item.head}};
}

} // namespace

json frame_json(const bus_item& item) {
  json j;
  switch (item.kind) {
    case bus_item_kind::event:
      j = event_json(item);
      break;
    case bus_item_kind::checkpoint:
    case bus_item_kind::caught_up:
      j = position_json(item);
      break;
    case bus_item_kind::heartbeat:
      j = json{{"head", item.head}};
      break;
  }
  j["kind"] = to_string(item.kind);
  return j;
}

void append_frame(std::string& out, const bus_item& item,
                  std::optional<std::string_view> sub) {
  if (item.kind == bus_item_kind::event && item.event
      && item.event->position == item.position) {
    append_json(out, *item.event,
                event_json_keys{false, item.prev, "event", sub});
    return;
  }
  auto j = frame_json(item);
  if (sub)
    j["sub"] = *sub;
  out += dump(j);
}

json error_frame_json(std::string_view code, std::string_view message) {
  return json{{"kind", "error"}, {"code", code}, {"message", message}};
}

std::string sse_frame(const bus_item& item) {
  std::string out;
  switch (item.kind) {
    case bus_item_kind::event:
      out = "id: " + std::to_string(item.position) + "\nevent: event\ndata: ";
      // The same bytes as dump(event_json(item)), without the json.
      if (item.event && item.event->position == item.position)
        append_json(out, *item.event, false, item.prev);
      else
        out += dump(event_json(item));
      out += "\n\n";
      break;
    case bus_item_kind::checkpoint:
      out = "id: " + std::to_string(item.position)
            + "\nevent: checkpoint\ndata: " + dump(position_json(item))
            + "\n\n";
      break;
    case bus_item_kind::caught_up:
      out = "event: caught_up\ndata: " + dump(position_json(item)) + "\n\n";
      break;
    case bus_item_kind::heartbeat:
      out = ": heartbeat head=" + std::to_string(item.head) + "\n\n";
      break;
  }
  return out;
}

std::string sse_error(std::string_view code, std::string_view message) {
  return "event: error\ndata: "
         + dump(json{{"code", code}, {"message", message}}) + "\n\n";
}

std::uint64_t parse_position(std::string_view text, std::string_view field) {
  constexpr auto max
    = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  auto bad = [&] {
    return store_error{errc::invalid_argument,
                       std::string{field}
                         + " must be a non-negative integer position (at "
                           "most 9223372036854775807)"};
  };
  if (text.empty() || text.size() > 19)
    throw bad();
  std::uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9')
      throw bad();
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (v > max)
    throw bad();
  return v;
}

} // namespace dcbd::http
