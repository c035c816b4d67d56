#include "store/validation.hpp"

#include "store/error.hpp"
#include "store/job_model.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

namespace dcbd {

namespace {

void sort_unique(std::vector<std::string>& xs) {
  std::sort(xs.begin(), xs.end());
  xs.erase(std::unique(xs.begin(), xs.end()), xs.end());
}

[[noreturn]] void reject(std::string_view field, std::string_view why) {
  std::string msg{field};
  msg += ": ";
  msg += why;
  throw store_error{errc::invalid_argument, msg};
}

std::string indexed(std::string_view field, std::string_view member,
                    std::size_t i) {
  std::string out{field};
  out += member;
  out += '[';
  out += std::to_string(i);
  out += ']';
  return out;
}

// Types and tags share these rules: 1..max bytes of UTF-8 without NUL.
void check_name(const std::string& s, std::size_t max_bytes,
                std::string_view field) {
  if (s.empty())
    reject(field, "must not be empty");
  if (s.size() > max_bytes)
    reject(field, "is " + std::to_string(s.size()) + " bytes, at most "
                    + std::to_string(max_bytes) + " allowed");
  if (s.find('\0') != std::string::npos)
    reject(field, "must not contain NUL");
  if (!is_utf8(s))
    reject(field, "is not valid UTF-8");
}

constexpr std::uint64_t max_position = std::numeric_limits<std::int64_t>::max();

} // namespace

query validate_read(const query& q, const read_options& options,
                    const limits& lim) {
  auto checked = q;
  validate(checked, lim, "query");
  validate(options, "options");
  return checked;
}

bool is_utf8(std::string_view s) noexcept {
  auto p = reinterpret_cast<const unsigned char*>(s.data());
  auto end = p + s.size();
  while (p < end) {
    unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    std::size_t n;
    std::uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (static_cast<std::size_t>(end - p) <= n)
      return false;
    for (std::size_t i = 1; i <= n; ++i) {
      if ((p[i] & 0xC0) != 0x80)
        return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    // Reject overlong encodings, surrogates and code points past U+10FFFF.
    static constexpr std::uint32_t min_cp[] = {0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    p += n + 1;
  }
  return true;
}

void normalize(event& e) {
  sort_unique(e.tags);
}

void normalize(query& q) {
  for (auto& item : q.items) {
    sort_unique(item.types);
    sort_unique(item.tags);
  }
}

void validate(event& e, const limits& lim, std::string_view field) {
  check_name(e.type, lim.max_type_bytes, std::string{field} + ".type");
  if (e.tags.size() > lim.max_tags_per_event)
    reject(std::string{field} + ".tags",
           "has " + std::to_string(e.tags.size()) + " tags, at most "
             + std::to_string(lim.max_tags_per_event) + " allowed");
  for (std::size_t i = 0; i < e.tags.size(); ++i)
    check_name(e.tags[i], lim.max_tag_bytes, indexed(field, ".tags", i));
  if (e.data.size() + e.metadata.size() > lim.max_payload_bytes)
    reject(std::string{field} + ".data",
           "data plus metadata is "
             + std::to_string(e.data.size() + e.metadata.size())
             + " bytes, at most " + std::to_string(lim.max_payload_bytes)
             + " allowed");
  normalize(e);
}

void validate(query& q, const limits& lim, std::string_view field) {
  if (q.items.size() > lim.max_query_items)
    reject(std::string{field} + ".items",
           "has " + std::to_string(q.items.size()) + " items, at most "
             + std::to_string(lim.max_query_items) + " allowed");
  for (std::size_t k = 0; k < q.items.size(); ++k) {
    auto& item = q.items[k];
    auto item_field = indexed(field, ".items", k);
    if (item.types.empty() && item.tags.empty())
      reject(item_field, "a query item needs at least one type or tag "
                         "(use a query without items to match all events)");
    if (item.types.size() + item.tags.size() > lim.max_item_values)
      reject(item_field, "has more than " + std::to_string(lim.max_item_values)
                           + " types and tags");
    for (std::size_t j = 0; j < item.types.size(); ++j)
      check_name(item.types[j], lim.max_type_bytes,
                 indexed(item_field, ".types", j));
    for (std::size_t j = 0; j < item.tags.size(); ++j)
      check_name(item.tags[j], lim.max_tag_bytes,
                 indexed(item_field, ".tags", j));
  }
  normalize(q);
}

void validate(append_request& req, const limits& lim) {
  if (req.events.empty())
    reject("events", "must not be empty");
  if (req.events.size() > lim.max_events_per_append)
    reject("events",
           "has " + std::to_string(req.events.size()) + " events, at most "
             + std::to_string(lim.max_events_per_append) + " allowed");
  for (std::size_t i = 0; i < req.events.size(); ++i)
    validate(req.events[i], lim, indexed("", "events", i));
  if (req.condition) {
    validate(req.condition->fail_if_events_match, lim,
             "condition.fail_if_events_match");
    if (req.condition->after && *req.condition->after > max_position)
      reject("condition.after",
             "exceeds the largest position " + std::to_string(max_position));
  }
  const job_limits job_lim{};
  if (req.jobs.size() > job_lim.max_jobs_per_request)
    reject("jobs", "has " + std::to_string(req.jobs.size()) + " jobs, at most "
                     + std::to_string(job_lim.max_jobs_per_request)
                     + " allowed");
  for (std::size_t i = 0; i < req.jobs.size(); ++i)
    validate(req.jobs[i], indexed("", "jobs", i), job_lim);
}

validated_append::validated_append(append_request req) : req_(std::move(req)) {
  for (const auto& e : req_.events) {
    bytes_ += e.type.size() + e.data.size() + e.metadata.size();
    for (const auto& t : e.tags)
      bytes_ += t.size();
  }
  for (const auto& j : req_.jobs)
    bytes_ += j.queue.size() + j.kind.size() + j.args.size()
              + j.unique_key.size();
}

validated_append validate_append(append_request req, const limits& lim) {
  validate(req, lim);
  return validated_append{std::move(req)};
}

void validate(const read_options& options, std::string_view field) {
  if (options.from && *options.from > max_position)
    reject(std::string{field} + ".from",
           "exceeds the largest position " + std::to_string(max_position));
  if (options.until && *options.until > max_position)
    reject(std::string{field} + ".until",
           "exceeds the largest position " + std::to_string(max_position));
}

std::string storable_text(std::string_view s, std::size_t max_bytes) {
  std::string out;
  for (std::size_t i = 0; i < s.size() && out.size() < max_bytes;) {
    auto c = static_cast<unsigned char>(s[i]);
    std::size_t n = c < 0x80         ? 1
                    : (c >> 5) == 6  ? 2
                    : (c >> 4) == 14 ? 3
                    : (c >> 3) == 30 ? 4
                                     : 0;
    bool ok = n > 0 && i + n <= s.size() && c != 0;
    for (std::size_t k = 1; ok && k < n; ++k)
      ok = (static_cast<unsigned char>(s[i + k]) >> 6) == 2;
    if (ok && n > 1)
      ok = is_utf8(s.substr(i, n));
    if (ok && out.size() + n > max_bytes)
      break;
    if (ok) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += '?';
      ++i;
    }
  }
  return out;
}

} // namespace dcbd
