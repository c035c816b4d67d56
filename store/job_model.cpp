// Job states, the retry curve, validation and RFC 3339 time.
#include "store/job_model.hpp"

#include "store/error.hpp"
#include "store/validation.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <ctime>

namespace dcbd {

namespace {

[[noreturn]] void invalid(std::string_view field, const std::string& what) {
  throw store_error{errc::invalid_argument, std::string{field} + " " + what};
}

bool name_char(char c) noexcept {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'
         || c == '.';
}

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
// days_from_civil).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) noexcept {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

bool leap(int y) noexcept {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

} // namespace

const char* to_string(job_state s) noexcept {
  switch (s) {
    case job_state::available:
      return "available";
    case job_state::scheduled:
      return "scheduled";
    case job_state::running:
      return "running";
    case job_state::retryable:
      return "retryable";
    case job_state::completed:
      return "completed";
    case job_state::cancelled:
      return "cancelled";
    case job_state::discarded:
      return "discarded";
  }
  return "available";
}

std::optional<job_state> parse_job_state(std::string_view s) noexcept {
  for (auto st : all_job_states)
    if (s == to_string(st))
      return st;
  return std::nullopt;
}

bool is_final(job_state s) noexcept {
  return s == job_state::completed || s == job_state::cancelled
         || s == job_state::discarded;
}

std::int64_t retry_delay_ms(int attempt, double jitter) noexcept {
  auto a = static_cast<double>(std::max(attempt, 1));
  auto seconds = std::min(a * a * a * a, 86'400.0);
  jitter = std::clamp(jitter, 0.9, 1.1);
  return static_cast<std::int64_t>(std::llround(seconds * jitter * 1000.0));
}

bool valid_queue_name(std::string_view s) noexcept {
  return !s.empty() && s.size() <= 128
         && std::all_of(s.begin(), s.end(), name_char);
}

void validate_job_name(std::string_view name, std::string_view field) {
  if (name.empty() || name.size() > 100
      || !std::all_of(name.begin(), name.end(), name_char))
    invalid(field, "must be 1-100 characters: letters, digits, '_', '-', '.'");
}

void validate_job_kind(std::string_view kind, std::string_view field,
                       const job_limits& lim) {
  if (kind.empty() || kind.size() > lim.max_kind_bytes)
    invalid(field,
            "must be 1-" + std::to_string(lim.max_kind_bytes) + " bytes");
  if (!is_utf8(kind) || kind.find('\0') != std::string_view::npos)
    invalid(field, "must be UTF-8 without NUL");
}

void validate(job_request& j, std::string_view field, const job_limits& lim) {
  auto f = [&](const char* name) {
    return std::string{field} + "." + name;
  };
  if (j.queue.empty() || j.queue.size() > lim.max_queue_chars
      || !std::all_of(j.queue.begin(), j.queue.end(), name_char))
    invalid(f("queue"), "must be 1-" + std::to_string(lim.max_queue_chars)
                          + " characters: letters, digits, '_', '-', '.'");
  validate_job_kind(j.kind, f("kind"), lim);
  if (j.args.empty())
    j.args = "{}";
  if (j.args.size() > lim.max_args_bytes)
    invalid(f("args"),
            "must be at most " + std::to_string(lim.max_args_bytes) + " bytes");
  // PostgreSQL's jsonb refuses NUL in strings (\u0000) and invalid UTF-8.
  if (!is_utf8(j.args) || !nlohmann::json::accept(j.args)
      || j.args.find("\\u0000") != std::string::npos)
    invalid(f("args"), "must be a JSON value in UTF-8 (no \\u0000)");
  if (j.priority < 1 || j.priority > lim.max_priority)
    invalid(f("priority"), "must be 1-" + std::to_string(lim.max_priority)
                             + " (1 runs first)");
  if (j.max_attempts < 1 || j.max_attempts > lim.max_max_attempts)
    invalid(f("max_attempts"),
            "must be 1-" + std::to_string(lim.max_max_attempts));
  if (j.delay_ms < 0 || j.delay_ms > lim.max_delay_ms)
    invalid(f("delay_ms"), "must be 0-" + std::to_string(lim.max_delay_ms));
  if (j.run_at_us) {
    // Years 1970-9999: what PostgreSQL and RFC 3339 agree on.
    if (*j.run_at_us < 0
        || *j.run_at_us > std::int64_t{253402300799} * 1'000'000)
      invalid(f("run_at"), "must be between 1970 and 9999");
  }
  if (j.unique_key.size() > lim.max_unique_key_bytes)
    invalid(f("unique_key"), "must be at most "
                               + std::to_string(lim.max_unique_key_bytes)
                               + " bytes");
  if (!is_utf8(j.unique_key) || j.unique_key.find('\0') != std::string::npos)
    invalid(f("unique_key"), "must be UTF-8 without NUL");
}

std::string format_rfc3339(std::int64_t us) {
  auto secs = us >= 0 ? us / 1'000'000 : (us - 999'999) / 1'000'000;
  auto frac = us - secs * 1'000'000;
  auto t = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                tm.tm_min, tm.tm_sec, static_cast<int>(frac));
  return buf;
}

std::optional<std::int64_t> parse_rfc3339(std::string_view s) noexcept {
  // YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)
  auto digits = [&](std::size_t at, std::size_t n, int& out) {
    if (at + n > s.size())
      return false;
    out = 0;
    for (std::size_t i = at; i < at + n; ++i) {
      if (!std::isdigit(static_cast<unsigned char>(s[i])))
        return false;
      out = out * 10 + (s[i] - '0');
    }
    return true;
  };
  int y, mo, d, h, mi, sec;
  if (!digits(0, 4, y) || s.size() < 20 || s[4] != '-' || !digits(5, 2, mo)
      || s[7] != '-' || !digits(8, 2, d)
      || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !digits(11, 2, h)
      || s[13] != ':' || !digits(14, 2, mi) || s[16] != ':'
      || !digits(17, 2, sec))
    return std::nullopt;
  static constexpr int month_days[] = {31, 28, 31, 30, 31, 30,
                                       31, 31, 30, 31, 30, 31};
  if (mo < 1 || mo > 12 || d < 1
      || d > month_days[mo - 1] + (mo == 2 && leap(y) ? 1 : 0) || h > 23
      || mi > 59 || sec > 60)
    return std::nullopt;
  std::size_t i = 19;
  std::int64_t frac_us = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    std::size_t start = i;
    std::int64_t scale = 100'000;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
      frac_us += (s[i] - '0') * scale;
      scale /= 10;
      ++i;
    }
    if (i == start)
      return std::nullopt;
  }
  std::int64_t offset_s = 0;
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) {
    ++i;
  } else if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    int oh, om;
    if (!digits(i + 1, 2, oh) || i + 3 >= s.size() || s[i + 3] != ':'
        || !digits(i + 4, 2, om) || oh > 23 || om > 59)
      return std::nullopt;
    offset_s = (oh * 3600 + om * 60) * (s[i] == '+' ? 1 : -1);
    i += 6;
  } else {
    return std::nullopt;
  }
  if (i != s.size())
    return std::nullopt;
  auto days = days_from_civil(y, static_cast<unsigned>(mo),
                              static_cast<unsigned>(d));
  auto secs = days * 86'400 + h * 3600 + mi * 60 + std::min(sec, 59) - offset_s;
  return secs * 1'000'000 + frac_us;
}

std::string trigger_args(std::string_view trigger, const sequenced_event& e) {
  nlohmann::json ev{{"type", e.event.type},
                    {"tags", e.event.tags},
                    {"data", e.event.data},
                    {"position", e.position}};
  nlohmann::json args{{"trigger", trigger}, {"event", std::move(ev)}};
  return args.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string query_to_json(const query& q) {
  auto out = nlohmann::json::array();
  for (const auto& item : q.items)
    out.push_back({{"types", item.types}, {"tags", item.tags}});
  return out.dump();
}

query query_from_json(std::string_view s) {
  auto j = nlohmann::json::parse(s.begin(), s.end(), nullptr, false);
  auto bad = [] {
    return store_error{errc::invalid_argument,
                       "a stored trigger query is not a list of items"};
  };
  if (!j.is_array())
    throw bad();
  query q;
  for (const auto& it : j) {
    if (!it.is_object())
      throw bad();
    query_item item;
    for (const char* key : {"types", "tags"}) {
      auto f = it.find(key);
      if (f == it.end())
        continue;
      if (!f->is_array())
        throw bad();
      auto& out = key[1] == 'y' ? item.types : item.tags;
      for (const auto& v : *f) {
        if (!v.is_string())
          throw bad();
        out.push_back(v.get<std::string>());
      }
    }
    q.items.push_back(std::move(item));
  }
  return q;
}

} // namespace dcbd
