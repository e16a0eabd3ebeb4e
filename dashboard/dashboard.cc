#include "dashboard/dashboard.h"

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <httplib.h>

#include "client/args.h"
#include "client/rpc.h"
#include "dashboard/api.h"
#include "dashboard/event_stream.h"

namespace moesweep::dashboard {
namespace {

namespace fs = std::filesystem;

void SendJson(httplib::Response& res, const ApiReply& reply) {
  res.status = reply.status;
  res.set_header("Cache-Control", "no-store");
  res.set_content(reply.body.dump(), "application/json");
}

ApiReply BadRequest(const std::string& message) {
  return {400, {{"error", {{"code", "INVALID_ARGUMENT"}, {"message", message}}}, {"coordinator_unreachable", false}}};
}

// An integer query parameter; `fallback` when absent; nullopt when present but not an integer.
std::optional<int64_t> IntParam(const httplib::Request& req, const char* name, int64_t fallback) {
  if (!req.has_param(name)) return fallback;
  return client::ParseInt(req.get_param_value(name));
}

// One Server-Sent Event ("data" is one JSON line, so one data field).
std::string SseEvent(const char* type, const std::string& data, int64_t id = -1) {
  std::string text;
  if (id >= 0) text += fmt::format("id: {}\n", id);
  return text + fmt::format("event: {}\ndata: {}\n\n", type, data);
}

}  // namespace

std::string FindStaticDir(const std::string& exe_dir) {
  std::vector<fs::path> candidates = {fs::path(exe_dir) / "static",
                                      fs::path(exe_dir) / ".." / "share" / "moesweep" / "dashboard"};
#ifdef MOESWEEP_DASHBOARD_SOURCE_STATIC
  candidates.emplace_back(MOESWEEP_DASHBOARD_SOURCE_STATIC);
#endif
  for (const fs::path& dir : candidates) {
    std::error_code ec;
    if (fs::is_regular_file(dir / "index.html", ec)) return fs::weakly_canonical(dir, ec).string();
  }
  return "";
}

struct Dashboard::Impl {
  explicit Impl(DashboardOptions o) : options(std::move(o)) {}

  void Routes();
  void ServePage(const httplib::Request& req, httplib::Response& res);
  void ServeEvents(const httplib::Request& req, httplib::Response& res);

  DashboardOptions options;
  client::Coordinator coordinator;
  std::shared_ptr<v1::SweepService::Stub> stub;
  std::unique_ptr<SweepApi> api;
  std::string index_html;
  httplib::Server server;
  std::thread thread;
  int port = 0;
  std::atomic<int> streams{0};

  std::mutex mutex;
  bool stopping = false;                          // Guarded by mutex.
  std::set<std::shared_ptr<EventStream>> live;    // Guarded by mutex: closed by Stop().
};

void Dashboard::Impl::ServePage(const httplib::Request& req, httplib::Response& res) {
  res.set_header("Cache-Control", "no-store");
  res.set_content(index_html, "text/html; charset=utf-8");
  // A sweep's pages answer 404 for a sweep the coordinator does not have (the page says so too).
  if (req.matches.size() > 1 && req.matches[1].matched) {
    auto id = client::ParseInt(req.matches[1].str());
    if (id && api->GetSweep(*id).status == 404) res.status = 404;
  }
}

void Dashboard::Impl::ServeEvents(const httplib::Request& req, httplib::Response& res) {
  auto sweep_id = client::ParseInt(req.matches[1].str());
  auto after = IntParam(req, "after_seq", 0);
  // A reconnecting EventSource sends the id of the last event it saw: resume right after it.
  std::string last_event_id = req.get_header_value("Last-Event-ID");
  if (!last_event_id.empty()) after = client::ParseInt(last_event_id);
  if (!sweep_id || !after || *after < 0) return SendJson(res, BadRequest("after_seq / Last-Event-ID: expected a seq >= 0"));
  if (streams.fetch_add(1) >= options.max_streams) {
    streams.fetch_sub(1);
    return SendJson(res, {503, {{"error", {{"code", "RESOURCE_EXHAUSTED"},
                                           {"message", fmt::format("at most {} event streams", options.max_streams)}}},
                                {"coordinator_unreachable", false}}});
  }
  EventStreamOptions stream_options;
  stream_options.skip_progress = req.has_param("progress") && req.get_param_value("progress") == "0";
  auto stream = std::make_shared<EventStream>(stub, *sweep_id, *after, stream_options);
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (stopping) stream->Close();
    live.insert(stream);
  }
  res.set_header("Cache-Control", "no-store");
  res.set_header("X-Accel-Buffering", "no");
  auto keepalive = options.keepalive;
  res.set_chunked_content_provider(
      "text/event-stream",
      [stream, keepalive, first = true](size_t, httplib::DataSink& sink) mutable {
        if (first) {
          first = false;
          // The browser waits this long before it reconnects by itself.
          std::string hello = "retry: 2000\n\n";
          return sink.write(hello.data(), hello.size());
        }
        if (!sink.is_writable()) return false;
        std::optional<StreamItem> item = stream->Next(keepalive);
        std::string text;
        bool last = false;
        if (!item) {
          text = ": keepalive\n\n";
        } else {
          switch (item->kind) {
            case StreamItem::kEvent:
              text = SseEvent("sweep", item->data, item->seq);
              break;
            case StreamItem::kUpstreamDown:
            case StreamItem::kUpstreamUp:
              text = SseEvent("upstream", item->data);
              break;
            case StreamItem::kEnd:
              text = SseEvent("end", "{}");
              last = true;
              break;
            case StreamItem::kNotFound:
              text = SseEvent("notfound", item->data);
              last = true;
              break;
            case StreamItem::kError:
              text = SseEvent("failure", item->data);
              last = true;
              break;
          }
        }
        if (!sink.write(text.data(), text.size())) return false;
        if (last) sink.done();
        return true;
      },
      [this, stream](bool) {
        stream->Close();
        std::lock_guard<std::mutex> lock(mutex);
        live.erase(stream);
        streams.fetch_sub(1);
      });
}

void Dashboard::Impl::Routes() {
  server.Get("/api/sweeps", [this](const httplib::Request& req, httplib::Response& res) {
    auto limit = IntParam(req, "limit", 0);
    if (!limit || *limit < 0 || *limit > 1000) return SendJson(res, BadRequest("limit: expected 0..1000"));
    SendJson(res, api->ListSweeps(static_cast<int>(*limit), req.get_param_value("page_token")));
  });
  server.Get(R"(/api/sweeps/(\d+))", [this](const httplib::Request& req, httplib::Response& res) {
    auto id = client::ParseInt(req.matches[1].str());
    if (!id) return SendJson(res, BadRequest("bad sweep id"));
    SendJson(res, api->GetSweep(*id));
  });
  server.Get(R"(/api/sweeps/(\d+)/trials)", [this](const httplib::Request& req, httplib::Response& res) {
    auto id = client::ParseInt(req.matches[1].str());
    auto limit = IntParam(req, "limit", 0);
    std::optional<int64_t> stage;
    if (req.has_param("stage")) {
      stage = client::ParseInt(req.get_param_value("stage"));
      if (!stage || *stage < 0 || *stage > 1000) return SendJson(res, BadRequest("stage: expected a stage number"));
    }
    if (!id || !limit || *limit < 0 || *limit > 100000) return SendJson(res, BadRequest("limit: expected 0..100000"));
    std::optional<int> stage_int;
    if (stage) stage_int = static_cast<int>(*stage);
    SendJson(res, api->ListTrials(*id, stage_int, req.get_param_value("state"), static_cast<int>(*limit),
                                  req.get_param_value("page_token")));
  });
  server.Get(R"(/api/sweeps/(\d+)/trials/(\d+))", [this](const httplib::Request& req, httplib::Response& res) {
    auto id = client::ParseInt(req.matches[1].str());
    auto trial = client::ParseInt(req.matches[2].str());
    if (!id || !trial) return SendJson(res, BadRequest("bad id"));
    SendJson(res, api->GetTrial(*id, *trial));
  });
  server.Get(R"(/api/sweeps/(\d+)/events)",
             [this](const httplib::Request& req, httplib::Response& res) { ServeEvents(req, res); });
  server.Get(R"(/api/.*)", [](const httplib::Request& req, httplib::Response& res) {
    SendJson(res, {404, {{"error", {{"code", "NOT_FOUND"}, {"message", "no such endpoint: " + req.path}}},
                         {"coordinator_unreachable", false}}});
  });
  auto page = [this](const httplib::Request& req, httplib::Response& res) { ServePage(req, res); };
  server.Get(R"(/)", page);
  server.Get(R"(/sweeps/(\d+)(?:/.*)?)", page);
}

Dashboard::Dashboard(DashboardOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Dashboard::~Dashboard() { Stop(); }

Status Dashboard::Start() {
  Impl& d = *impl_;
  std::string dir = d.options.static_dir;
  std::ifstream index(fs::path(dir) / "index.html");
  if (dir.empty() || !index) {
    return Status::InvalidArgument(fmt::format("no index.html in the static folder '{}' (set --static-dir)", dir));
  }
  std::stringstream text;
  text << index.rdbuf();
  d.index_html = text.str();

  d.coordinator = client::Connect(d.options.coordinator, d.options.rpc_timeout_s, d.options.security);
  d.stub = std::shared_ptr<v1::SweepService::Stub>(std::move(d.coordinator.stub));
  d.api = std::make_unique<SweepApi>(d.stub, d.options.coordinator, d.options.rpc_timeout_s);

  // Each open event stream holds a thread while it waits; leave room for the other requests.
  size_t threads = static_cast<size_t>(d.options.max_streams) + 16;
  d.server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  d.server.set_mount_point("/static", dir);
  d.server.set_file_extension_and_mimetype_mapping("js", "text/javascript; charset=utf-8");
  d.server.set_file_extension_and_mimetype_mapping("css", "text/css; charset=utf-8");
  d.server.set_payload_max_length(64 << 10);
  // cpp-httplib compresses answers with brotli at its slowest quality when the browser accepts
  // "br": ~1 MB/s, so echarts.min.js took 2.1 s and 5,000 trials (3 MB of JSON) 5.1 s to arrive
  // on loopback. Offer it gzip only (level 6, tens of MB/s). The request is this server's own
  // object, handed in as const; rewriting one header before routing is safe.
  d.server.set_pre_routing_handler([](const httplib::Request& req, httplib::Response&) {
    std::string accepted = req.get_header_value("Accept-Encoding");
    auto& headers = const_cast<httplib::Request&>(req).headers;
    if (accepted.find("br") != std::string::npos) {
      headers.erase("Accept-Encoding");
      if (accepted.find("gzip") != std::string::npos) headers.emplace("Accept-Encoding", "gzip");
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  d.Routes();

  if (d.options.listen_port == 0) {
    d.port = d.server.bind_to_any_port(d.options.listen_host);
    if (d.port <= 0) return Status::Unavailable(fmt::format("cannot listen on {}", d.options.listen_host));
  } else {
    if (!d.server.bind_to_port(d.options.listen_host, d.options.listen_port)) {
      return Status::Unavailable(fmt::format("cannot listen on {}:{}", d.options.listen_host, d.options.listen_port));
    }
    d.port = d.options.listen_port;
  }
  d.thread = std::thread([&d] { d.server.listen_after_bind(); });
  // Stop() right after Start() must find the server running, or listen_after_bind would not end.
  for (int i = 0; i < 1000 && !d.server.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  return Status::Ok();
}

int Dashboard::port() const { return impl_->port; }

void Dashboard::Stop() {
  Impl& d = *impl_;
  {
    std::lock_guard<std::mutex> lock(d.mutex);
    if (d.stopping) return;
    d.stopping = true;
    for (const auto& stream : d.live) stream->Close();
  }
  d.server.stop();
  if (d.thread.joinable()) d.thread.join();
}

}  // namespace moesweep::dashboard
