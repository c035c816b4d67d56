// The event bus benchmarks (`./dev bench bus`, bench/run_bus_bench.sh):
//
//   fanout     appenders at full speed (64 callers, 10 events per append)
//              with 0, 1, 10 and 100 subscribers matching every event, in
//              process: append and delivery rates; every subscriber must
//              end with every event, in order
//   latency    1,000 appends/s of one event for a few seconds, one
//              subscriber: commit -> delivery in process, and over SSE
//              (commit -> written to the socket, and append call -> the
//              client read it), and from another engine that never hears
//              a NOTIFY (it polls)
//   sse        500 SSE connections following every event while appenders
//              run: frames/s received
//   ws         the same over 500 WebSocket connections (/v1/ws, one
//              subscription each)
//   catchup    one subscriber from 0 over the whole log vs a streaming read
//              of the same range, in process and as GET /v1/read
//
// Each prints `summary <name> key=value ...` lines that the script turns
// into the table. The dataset lives in schema `bench_bus` (dropped first).
#include "actors/engine.hpp"
#include "actors/types.hpp"
#include "runtime/http_client.hpp"
#include "runtime/http_server.hpp"
#include "runtime/metrics.hpp"
#include "store/pg_store.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using dcbd::bus_item;
using dcbd::bus_item_kind;

std::string dsn() {
  for (const char* name : {"DCBD_TEST_PG_DSN", "DCB_POSTGRES_DSN"}) {
    const char* env = std::getenv(name);
    if (env != nullptr && *env != '\0')
      return env;
  }
  throw std::runtime_error("set DCBD_TEST_PG_DSN");
}

double number_env(const char* name, double fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atof(v) : fallback;
}

constexpr const char* schema = "bench_bus";

void drop_schema() {
  pqxx::connection conn{dsn()};
  pqxx::work tx{conn};
  tx.exec(std::string{"DROP SCHEMA IF EXISTS "} + schema + " CASCADE");
  tx.commit();
}

dcbd::engine_config engine_cfg(bool listen = true) {
  dcbd::engine_config ec;
  ec.store.dsn = dsn();
  ec.store.schema = schema;
  ec.readers = 4;
  ec.appenders = 2;
  ec.listen = listen;
  return ec;
}

struct system_holder {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;

  system_holder() {
    dcbd::register_types(cfg);
    dcbd::tune_scheduler(cfg);
    cfg.set("logger.console", caf::atom("none"));
    sys = std::make_unique<caf::actor_system>(cfg);
  }
};

std::vector<dcbd::event> batch_of(std::size_t n, std::size_t bytes = 100) {
  std::vector<dcbd::event> evs;
  for (std::size_t i = 0; i < n; ++i)
    evs.push_back(dcbd::event{
      "Bench", {"k:" + std::to_string(i % 16)}, std::string(bytes, 'x'), {}});
  return evs;
}

// Appends `per_call` events per call with `callers` calls in flight until
// `stop`; counts events acknowledged.
class append_load {
public:
  append_load(dcbd::engine& eng, std::size_t callers, std::size_t per_call)
    : eng_(eng)
    , per_call_(per_call) {
    for (std::size_t i = 0; i < callers; ++i)
      next();
  }

  ~append_load() {
    stop();
  }

  void stop() {
    stop_ = true;
    std::unique_lock guard{mtx_};
    cv_.wait_for(guard, 60s, [this] {
      return in_flight_ == 0;
    });
  }

  std::uint64_t events() const {
    return events_.load();
  }

  std::uint64_t errors() const {
    return errors_.load();
  }

private:
  void next() {
    {
      std::lock_guard guard{mtx_};
      ++in_flight_;
    }
    eng_.append(dcbd::append_request{batch_of(per_call_), std::nullopt},
                [this](caf::expected<dcbd::append_ack> r) {
                  if (r)
                    events_ += per_call_;
                  else
                    ++errors_;
                  bool again = !stop_;
                  {
                    std::lock_guard guard{mtx_};
                    --in_flight_;
                  }
                  cv_.notify_all();
                  if (again)
                    next();
                });
  }

  dcbd::engine& eng_;
  std::size_t per_call_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> events_{0};
  std::atomic<std::uint64_t> errors_{0};
  std::mutex mtx_;
  std::condition_variable cv_;
  std::size_t in_flight_ = 0;
};

// A subscriber that counts what it gets and checks the order.
struct counter {
  std::atomic<std::uint64_t> events{0};
  std::uint64_t last = 0;
  std::atomic<bool> ordered{true};
  std::atomic<bool> ended{false};
};

// Counts the events of `items` into `c`, noting any out of order.
void count_items(counter& c, const std::vector<bus_item>& items) {
  std::uint64_t n = 0;
  for (auto& x : items) {
    if (x.kind != bus_item_kind::event)
      continue;
    if (x.position != c.last + 1 && c.last != 0)
      c.ordered = false;
    c.last = x.position;
    ++n;
  }
  c.events += n;
}

dcbd::subscription count_into(dcbd::engine& eng, counter& c,
                              std::uint64_t after) {
  return eng.subscribe(
    dcbd::query::all(), after,
    [&c](std::vector<bus_item>& items) {
      count_items(c, items);
    },
    [&c](const dcbd::bus_end&) {
      c.ended = true;
    });
}

double percentile(std::vector<double> xs, double p) {
  if (xs.empty())
    return 0;
  std::sort(xs.begin(), xs.end());
  auto i = static_cast<std::size_t>(p * static_cast<double>(xs.size() - 1));
  return xs[i];
}

// -- fanout -----------------------------------------------------------------

void fanout() {
  auto duration = number_env("FANOUT_SECONDS", 5);
  for (std::size_t subs : {0, 1, 10, 100}) {
    drop_schema();
    system_holder h;
    dcbd::engine eng{*h.sys, engine_cfg()};
    std::deque<counter> counters(subs);
    std::vector<dcbd::subscription> handles;
    for (auto& c : counters)
      handles.push_back(count_into(eng, c, 0));
    std::this_thread::sleep_for(200ms);
    append_load load{eng, 64, 10};
    std::this_thread::sleep_for(1s); // warm-up
    auto a0 = load.events();
    std::uint64_t d0 = 0;
    for (auto& c : counters)
      d0 += c.events;
    auto t0 = steady::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(duration));
    auto a1 = load.events();
    std::uint64_t d1 = 0;
    for (auto& c : counters)
      d1 += c.events;
    auto secs = std::chrono::duration<double>(steady::now() - t0).count();
    load.stop();
    auto total = load.events();
    // Every subscriber ends with every event, in order.
    auto until = steady::now() + 60s;
    bool complete = false;
    while (steady::now() < until) {
      complete = std::all_of(counters.begin(), counters.end(), [&](auto& c) {
        return c.events == total;
      });
      if (complete)
        break;
      std::this_thread::sleep_for(20ms);
    }
    bool ordered = std::all_of(counters.begin(), counters.end(), [](auto& c) {
      return c.ordered.load();
    });
    auto stats = eng.bus_stats();
    std::printf("summary fanout_%zu subscribers=%zu append_events_per_s=%.0f "
                "deliveries_per_s=%.0f complete=%d ordered=%d fell_behind=%llu "
                "errors=%llu events=%llu\n",
                subs, subs, static_cast<double>(a1 - a0) / secs,
                static_cast<double>(d1 - d0) / secs, complete ? 1 : 0,
                ordered ? 1 : 0,
                static_cast<unsigned long long>(stats ? stats->fell_behind : 0),
                static_cast<unsigned long long>(load.errors()),
                static_cast<unsigned long long>(total));
    std::fflush(stdout);
    for (auto& s : handles)
      s.cancel();
  }
}

// -- a slow subscriber
// ----------------------------------------------------------

// The writers' rate with one subscriber that consumes slowly (each batch
// acknowledged SLOW_ACK_MS later, from a thread of its own; credit 1,024
// events), against the same load with no subscriber, in one run; then the
// time the slow one needs to end with every event, in order.
void fanout_slow() {
  auto duration = number_env("FANOUT_SECONDS", 5);
  auto delay = std::chrono::milliseconds{
    static_cast<long>(number_env("SLOW_ACK_MS", 20))};
  double rate[2] = {0, 0};
  for (int slow = 0; slow < 2; ++slow) {
    drop_schema();
    system_holder h;
    dcbd::engine eng{*h.sys, engine_cfg()};
    counter c;
    std::mutex mtx;
    std::condition_variable cv;
    std::deque<std::pair<steady::time_point, std::function<void(bool)>>> acks;
    bool done = false;
    std::thread acker{[&] {
      std::unique_lock lock{mtx};
      while (!done) {
        if (acks.empty()) {
          cv.wait(lock);
          continue;
        }
        auto [due, ack] = std::move(acks.front());
        acks.pop_front();
        lock.unlock();
        std::this_thread::sleep_until(due);
        ack(true);
        lock.lock();
      }
    }};
    dcbd::subscription sub;
    if (slow)
      sub = eng.subscribe_paced(
        dcbd::query::all(), 0,
        [&](std::vector<bus_item>& items, std::function<void(bool)> ack) {
          count_items(c, items);
          std::lock_guard guard{mtx};
          acks.emplace_back(steady::now() + delay, std::move(ack));
          cv.notify_one();
        },
        [&c](const dcbd::bus_end&) {
          c.ended = true;
        });
    std::this_thread::sleep_for(200ms);
    append_load load{eng, 64, 10};
    std::this_thread::sleep_for(1s); // warm-up
    auto a0 = load.events();
    auto t0 = steady::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(duration));
    auto a1 = load.events();
    auto secs = std::chrono::duration<double>(steady::now() - t0).count();
    auto behind_at_stop = a1 - std::min<std::uint64_t>(a1, c.events);
    load.stop();
    auto total = load.events();
    rate[slow] = static_cast<double>(a1 - a0) / secs;
    bool complete = !slow;
    double drain = 0;
    if (slow) {
      auto t1 = steady::now();
      auto until = t1 + 180s;
      while (steady::now() < until && c.events < total)
        std::this_thread::sleep_for(20ms);
      complete = c.events == total;
      drain = std::chrono::duration<double>(steady::now() - t1).count();
    }
    auto stats = eng.bus_stats();
    std::printf("summary fanout_slow_%d slow_subscribers=%d ack_ms=%lld "
                "append_events_per_s=%.0f behind_at_stop=%llu "
                "drain_seconds=%.1f complete=%d ordered=%d fell_behind=%llu "
                "errors=%llu events=%llu\n",
                slow, slow, static_cast<long long>(delay.count()), rate[slow],
                static_cast<unsigned long long>(slow ? behind_at_stop : 0),
                drain, complete ? 1 : 0, c.ordered ? 1 : 0,
                static_cast<unsigned long long>(stats ? stats->fell_behind : 0),
                static_cast<unsigned long long>(load.errors()),
                static_cast<unsigned long long>(total));
    std::fflush(stdout);
    sub.cancel();
    {
      std::lock_guard guard{mtx};
      done = true;
      cv.notify_one();
    }
    acker.join();
    // Acknowledgements still queued are dropped with the subscription.
  }
  std::printf("summary fanout_slow ratio=%.3f\n",
              rate[0] > 0 ? rate[1] / rate[0] : 0.0);
  std::fflush(stdout);
}

// -- latency ------------------------------------------------------------------

// Records commit -> delivery latencies the sinks report.
struct latency_hooks : dcbd::bus_metrics {
  std::mutex mtx;
  std::vector<double> samples;
  void commit_to_delivery(std::chrono::nanoseconds d) override {
    std::lock_guard guard{mtx};
    samples.push_back(std::chrono::duration<double, std::milli>(d).count());
  }
};

// Appends one event at `rate`/s for `secs`, stamping the data with the
// steady clock at the call.
void paced_appends(dcbd::engine& eng, double rate, double secs) {
  auto period = std::chrono::duration<double>(1.0 / rate);
  auto start = steady::now();
  auto n = static_cast<std::size_t>(rate * secs);
  for (std::size_t i = 0; i < n; ++i) {
    std::this_thread::sleep_until(
      start + std::chrono::duration_cast<steady::duration>(period * i));
    auto stamp
      = std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(
                         steady::now().time_since_epoch())
                         .count());
    eng.append(dcbd::append_request{{dcbd::event{"Tick", {"k:1"}, stamp, {}}},
                                    std::nullopt},
               [](caf::expected<dcbd::append_ack>) {});
  }
}

void report(const char* name, std::vector<double> ms) {
  std::printf("summary %s samples=%zu p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f "
              "max_ms=%.3f\n",
              name, ms.size(), percentile(ms, 0.5), percentile(ms, 0.99),
              percentile(ms, 0.999), percentile(ms, 1.0));
  std::fflush(stdout);
}

void latency() {
  auto secs = number_env("LATENCY_SECONDS", 5);
  drop_schema();
  system_holder h;
  dcbd::engine eng{*h.sys, engine_cfg()};
  // Another "process" (own actor system and engine) that hears no NOTIFY.
  system_holder h2;
  auto remote_hooks = std::make_shared<latency_hooks>();
  auto cfg2 = engine_cfg(false);
  cfg2.bus.metrics = remote_hooks;
  dcbd::engine remote{*h2.sys, cfg2};
  // SSE through the node's HTTP server on this engine.
  auto metrics = std::make_shared<dcbd::node_metrics>();
  dcbd::http_config hc;
  hc.port = 0;
  dcbd::http_server server{eng, metrics, hc};
  std::mutex mtx;
  std::vector<double> client_ms;
  dcbd::client::streaming_get sse{
    dcbd::client::parse_url("http://127.0.0.1:"
                            + std::to_string(server.port())),
    "/v1/subscribe?after=0",
    {{"Accept", "text/event-stream"}}};
  std::thread reader{[&] {
    std::string buf;
    sse.run([](const dcbd::client::stream_head&) {},
            [&](std::string_view data) {
              auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                           steady::now().time_since_epoch())
                           .count();
              buf += data;
              std::size_t at;
              while ((at = buf.find("\"data\":\"")) != std::string::npos) {
                auto end = buf.find('"', at + 8);
                if (end == std::string::npos)
                  break;
                auto stamp = std::stoll(buf.substr(at + 8, end - at - 8));
                buf.erase(0, end);
                std::lock_guard guard{mtx};
                client_ms.push_back(static_cast<double>(now - stamp) / 1e6);
              }
              return true;
            });
  }};
  dcbd::subscription other = remote.subscribe(
    dcbd::query::all(), 0, [](std::vector<bus_item>&) {},
    [](const dcbd::bus_end&) {});
  std::this_thread::sleep_for(500ms);
  paced_appends(eng, 1000, secs);
  std::this_thread::sleep_for(1500ms);
  sse.close();
  reader.join();
  std::vector<double> remote_ms;
  {
    std::lock_guard guard{remote_hooks->mtx};
    remote_ms = remote_hooks->samples;
  }
  {
    std::lock_guard guard{mtx};
    report("latency_sse_append_call_to_client", client_ms);
  }
  report("latency_other_process_no_notify", remote_ms);
  other.cancel();
  server.stop(1s);
}

void latency_in_process_only() {
  auto secs = number_env("LATENCY_SECONDS", 5);
  drop_schema();
  system_holder h;
  auto hooks = std::make_shared<latency_hooks>();
  auto cfg = engine_cfg();
  cfg.bus.metrics = hooks;
  dcbd::engine eng{*h.sys, cfg};
  auto sub = eng.subscribe(
    dcbd::query::all(), 0, [](std::vector<bus_item>&) {},
    [](const dcbd::bus_end&) {});
  std::this_thread::sleep_for(500ms);
  paced_appends(eng, 1000, secs);
  std::this_thread::sleep_for(500ms);
  std::lock_guard guard{hooks->mtx};
  report("latency_in_process", hooks->samples);
  sub.cancel();
}

void latency_sse_only() {
  auto secs = number_env("LATENCY_SECONDS", 5);
  drop_schema();
  system_holder h;
  auto hooks = std::make_shared<latency_hooks>();
  auto cfg = engine_cfg();
  cfg.bus.metrics = hooks;
  dcbd::engine eng{*h.sys, cfg};
  auto metrics = std::make_shared<dcbd::node_metrics>();
  dcbd::http_config hc;
  hc.port = 0;
  dcbd::http_server server{eng, metrics, hc};
  dcbd::client::streaming_get sse{
    dcbd::client::parse_url("http://127.0.0.1:"
                            + std::to_string(server.port())),
    "/v1/subscribe?after=0",
    {{"Accept", "text/event-stream"}}};
  std::thread reader{[&] {
    sse.run([](const dcbd::client::stream_head&) {},
            [](std::string_view) {
              return true;
            });
  }};
  std::this_thread::sleep_for(500ms);
  paced_appends(eng, 1000, secs);
  std::this_thread::sleep_for(500ms);
  sse.close();
  reader.join();
  std::lock_guard guard{hooks->mtx};
  report("latency_sse_commit_to_socket", hooks->samples);
  server.stop(1s);
}

// -- SSE fan-out
// ---------------------------------------------------------------

// Once `open` reaches `connections` (30 s at most), appenders run while
// `frames` is sampled for `secs`: prints `summary <name> ...`.
void measure_fanout(const char* name, dcbd::engine& eng,
                    std::size_t connections, std::atomic<std::size_t>& open,
                    std::atomic<std::uint64_t>& frames, double secs) {
  auto until = steady::now() + 30s;
  while (open < connections && steady::now() < until)
    std::this_thread::sleep_for(20ms);
  append_load load{eng, 16, 1};
  std::this_thread::sleep_for(1s);
  auto f0 = frames.load();
  auto a0 = load.events();
  auto t0 = steady::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(secs));
  auto f1 = frames.load();
  auto a1 = load.events();
  auto elapsed = std::chrono::duration<double>(steady::now() - t0).count();
  load.stop();
  std::printf("summary %s connections=%zu open=%zu "
              "frames_per_s=%.0f append_events_per_s=%.0f\n",
              name, connections, open.load(),
              static_cast<double>(f1 - f0) / elapsed,
              static_cast<double>(a1 - a0) / elapsed);
  std::fflush(stdout);
}

void sse_fanout() {
  auto secs = number_env("SSE_SECONDS", 5);
  std::size_t connections
    = static_cast<std::size_t>(number_env("SSE_CONNECTIONS", 500));
  drop_schema();
  system_holder h;
  dcbd::engine eng{*h.sys, engine_cfg()};
  auto metrics = std::make_shared<dcbd::node_metrics>();
  dcbd::http_config hc;
  hc.port = 0;
  hc.max_subscriptions = connections + 10;
  dcbd::http_server server{eng, metrics, hc};
  auto ep = dcbd::client::parse_url("http://127.0.0.1:"
                                    + std::to_string(server.port()));
  std::atomic<std::uint64_t> frames{0};
  std::atomic<std::size_t> open{0};
  std::vector<std::unique_ptr<dcbd::client::streaming_get>> gets;
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < connections; ++i) {
    gets.push_back(std::make_unique<dcbd::client::streaming_get>(
      ep, "/v1/subscribe?after=0",
      dcbd::client::streaming_get::headers{{"Accept", "text/event-stream"}}));
    threads.emplace_back([&, g = gets.back().get()] {
      try {
        g->run(
          [&](const dcbd::client::stream_head& head) {
            if (head.status == 200)
              ++open;
          },
          [&](std::string_view data) {
            std::uint64_t n = 0;
            for (std::size_t at = 0;
                 (at = data.find("event: event", at)) != std::string::npos;
                 ++at)
              ++n;
            frames += n;
            return true;
          });
      } catch (const std::exception& e) {
        std::cerr << "sse client: " << e.what() << std::endl;
      }
    });
  }
  measure_fanout("sse_fanout", eng, connections, open, frames, secs);
  for (auto& g : gets)
    g->close();
  for (auto& t : threads)
    t.join();
  server.stop(1s);
}

// -- WebSocket fan-out -------------------------------------------------------

// One WebSocket client of /v1/ws with one subscription to everything and
// (practically) unbounded credit, counting event frames. Blocking; `stop`
// from another thread ends `run`.
class ws_follower {
public:
  explicit ws_follower(std::uint16_t port) : ws_(ioc_), port_(port) {
    // nop
  }

  void run(std::atomic<std::size_t>& open, std::atomic<std::uint64_t>& frames) {
    namespace bws = boost::beast::websocket;
    boost::beast::get_lowest_layer(ws_).connect(
      {boost::asio::ip::make_address("127.0.0.1"), port_});
    ws_.handshake("127.0.0.1", "/v1/ws");
    ws_.text(true);
    ws_.write(boost::asio::buffer(std::string{
      R"({"op":"subscribe","sub":"s","after":0,"credit":1000000000000})"}));
    ++open;
    boost::beast::flat_buffer buf;
    boost::beast::error_code ec;
    while (!stopping_) {
      ws_.read(buf, ec);
      if (ec)
        break;
      auto text = boost::beast::buffers_to_string(buf.data());
      buf.consume(buf.size());
      if (text.find(R"("kind":"event")") != std::string::npos)
        ++frames;
    }
  }

  void stop() {
    stopping_ = true;
    boost::beast::error_code ec;
    boost::beast::get_lowest_layer(ws_).socket().shutdown(
      boost::asio::ip::tcp::socket::shutdown_both, ec);
  }

private:
  boost::asio::io_context ioc_;
  boost::beast::websocket::stream<boost::beast::tcp_stream> ws_;
  std::uint16_t port_;
  std::atomic<bool> stopping_{false};
};

void ws_fanout() {
  auto secs = number_env("SSE_SECONDS", 5);
  std::size_t connections
    = static_cast<std::size_t>(number_env("SSE_CONNECTIONS", 500));
  drop_schema();
  system_holder h;
  dcbd::engine eng{*h.sys, engine_cfg()};
  auto metrics = std::make_shared<dcbd::node_metrics>();
  dcbd::http_config hc;
  hc.port = 0;
  hc.max_subscriptions = connections + 10;
  dcbd::http_server server{eng, metrics, hc};
  std::atomic<std::uint64_t> frames{0};
  std::atomic<std::size_t> open{0};
  std::vector<std::unique_ptr<ws_follower>> clients;
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < connections; ++i) {
    clients.push_back(std::make_unique<ws_follower>(server.port()));
    threads.emplace_back([&, c = clients.back().get()] {
      try {
        c->run(open, frames);
      } catch (const std::exception& e) {
        std::cerr << "ws client: " << e.what() << std::endl;
      }
    });
  }
  measure_fanout("ws_fanout", eng, connections, open, frames, secs);
  for (auto& c : clients)
    c->stop();
  for (auto& t : threads)
    t.join();
  server.stop(1s);
}

// -- catch-up -----------------------------------------------------------------

void catchup() {
  auto n = static_cast<std::size_t>(number_env("CATCHUP_EVENTS", 1'000'000));
  drop_schema();
  {
    dcbd::pg_config pc;
    pc.dsn = dsn();
    pc.schema = schema;
    pc.pool_size = 1;
    dcbd::pg_event_store store{pc};
    for (std::size_t done = 0; done < n; done += 10'000)
      store.append(batch_of(std::min<std::size_t>(10'000, n - done)));
  }
  system_holder h;
  dcbd::engine eng{*h.sys, engine_cfg()};
  auto metrics = std::make_shared<dcbd::node_metrics>();
  dcbd::http_config hc;
  hc.port = 0;
  dcbd::http_server server{eng, metrics, hc};
  auto ep = dcbd::client::parse_url("http://127.0.0.1:"
                                    + std::to_string(server.port()));
  for (int round = 0; round < 2; ++round) {
    // GET /v1/read of the whole range, as a client of the node reads it.
    auto t0 = steady::now();
    std::uint64_t lines = 0;
    {
      dcbd::client::streaming_get get{ep, "/v1/read"};
      get.run([](const dcbd::client::stream_head&) {},
              [&](std::string_view data) {
                lines += static_cast<std::uint64_t>(
                  std::count(data.begin(), data.end(), '\n'));
                return true;
              });
    }
    auto http_secs = std::chrono::duration<double>(steady::now() - t0).count();
    // The last line is the head.
    auto http_events = lines > 0 ? lines - 1 : 0;
    t0 = steady::now();
    std::uint64_t streamed = 0;
    auto s = eng.stream(dcbd::query::all(), {},
                        [&](std::vector<dcbd::sequenced_event>& chunk) {
                          streamed += chunk.size();
                        });
    auto read_secs = std::chrono::duration<double>(steady::now() - t0).count();
    counter c;
    t0 = steady::now();
    auto sub = count_into(eng, c, 0);
    while (c.events < n)
      std::this_thread::sleep_for(1ms);
    auto sub_secs = std::chrono::duration<double>(steady::now() - t0).count();
    sub.cancel();
    while (!c.ended)
      std::this_thread::sleep_for(1ms);
    std::printf("summary catchup_%d events=%zu read_events_per_s=%.0f "
                "http_v1_read_events_per_s=%.0f "
                "subscription_events_per_s=%.0f ordered=%d read_ok=%d "
                "http_read_ok=%d\n",
                round, n, static_cast<double>(streamed) / read_secs,
                static_cast<double>(http_events) / http_secs,
                static_cast<double>(c.events) / sub_secs, c.ordered ? 1 : 0,
                s && streamed == n ? 1 : 0, http_events == n ? 1 : 0);
    std::fflush(stdout);
  }
}

} // namespace

int main(int argc, char** argv) {
  std::vector<std::string> which(argv + 1, argv + argc);
  if (which.empty())
    which = {"fanout", "slow", "latency", "sse", "ws", "catchup"};
  try {
    for (auto& w : which) {
      if (w == "fanout")
        fanout();
      else if (w == "slow")
        fanout_slow();
      else if (w == "latency") {
        latency_in_process_only();
        latency_sse_only();
        latency();
      } else if (w == "sse")
        sse_fanout();
      else if (w == "ws")
        ws_fanout();
      else if (w == "catchup")
        catchup();
      else
        throw std::runtime_error("unknown workload " + w);
    }
    drop_schema();
  } catch (const std::exception& e) {
    std::cerr << "dcbd_bus_bench: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
