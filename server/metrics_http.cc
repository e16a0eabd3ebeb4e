#include "server/metrics_http.h"

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdlib>

#include <fmt/format.h>
#include <httplib.h>

namespace moesweep {
namespace {

// Scrapes are rare (Prometheus: one per 15 s or so) and each is answered in well under a
// millisecond; two threads let a second scraper in without taking cores from the coordinator
// (httplib's default pool would be 8 threads).
constexpr size_t kHttpThreads = 2;

}  // namespace

bool SplitHostPort(const std::string& address, std::string* host, int* port) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) return false;
  std::string h = address.substr(0, colon);
  if (h.front() == '[') {
    if (h.size() < 3 || h.back() != ']') return false;
    h = h.substr(1, h.size() - 2);
  } else if (h.find(':') != std::string::npos) {
    return false;  // An IPv6 address needs its brackets.
  }
  std::string p = address.substr(colon + 1);
  if (p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos) return false;
  int n = std::atoi(p.c_str());
  if (n > 65535) return false;
  *host = h;
  *port = n;
  return true;
}

MetricsHttpServer::MetricsHttpServer() : server_(std::make_unique<httplib::Server>()) {}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

Status MetricsHttpServer::Start(const std::string& address, std::function<std::string()> scrape,
                                std::unique_ptr<MetricsHttpServer>* out) {
  std::string host;
  int port = 0;
  if (!SplitHostPort(address, &host, &port)) {
    return Status::InvalidArgument(fmt::format("'{}' is not HOST:PORT", address));
  }
  std::unique_ptr<MetricsHttpServer> server(new MetricsHttpServer());
  httplib::Server& http = *server->server_;
  http.new_task_queue = [] { return new httplib::ThreadPool(kHttpThreads); };
  // httplib's default also sets SO_REUSEPORT, with which a second coordinator would share the
  // port (and each scrape would reach one of them at random) instead of failing to start.
  http.set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  http.set_read_timeout(std::chrono::seconds(5));
  http.set_write_timeout(std::chrono::seconds(5));
  http.Get("/metrics", [scrape = std::move(scrape)](const httplib::Request&, httplib::Response& response) {
    response.set_content(scrape(), "text/plain; version=0.0.4; charset=utf-8");
  });
  // The other methods on /metrics: 405, as HTTP asks, rather than httplib's 404.
  auto not_allowed = [](const httplib::Request&, httplib::Response& response) {
    response.status = 405;
    response.set_header("Allow", "GET, HEAD");
  };
  http.Post("/metrics", not_allowed);
  http.Put("/metrics", not_allowed);
  http.Delete("/metrics", not_allowed);
  bool bound = port == 0 ? (port = http.bind_to_any_port(host)) > 0 : http.bind_to_port(host, port);
  if (!bound) {
    return Status::Unavailable(fmt::format("cannot listen for metrics on {} (address in use or invalid?)", address));
  }
  server->port_ = port;
  auto exited = std::make_shared<std::atomic<bool>>(false);
  server->thread_ = std::thread([&http, exited] {
    http.listen_after_bind();
    exited->store(true);
  });
  // httplib's stop() does nothing until the listening loop runs; wait for it, so that a Stop()
  // right after Start() cannot leave the thread running.
  while (!http.is_running() && !exited->load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  *out = std::move(server);
  return Status::Ok();
}

void MetricsHttpServer::Stop() {
  if (!thread_.joinable()) return;
  server_->stop();
  thread_.join();
}

}  // namespace moesweep
