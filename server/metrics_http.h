// MetricsHttpServer: GET /metrics over HTTP/1.1 (cpp-httplib) on threads of its own, for
// Prometheus. It only calls the scrape function it is given, which must be safe to call from
// those threads (CoordinatorMetrics::Scrape reads atomics and stats files; it never touches
// SQLite or the engine). Any other path is 404; any other method 405.
#ifndef MOESWEEP_SERVER_METRICS_HTTP_H_
#define MOESWEEP_SERVER_METRICS_HTTP_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "common/status.h"

namespace httplib {
class Server;
}

namespace moesweep {

class MetricsHttpServer {
 public:
  // Listens on `address` (HOST:PORT, [IPV6]:PORT; port 0 picks a free one, see port()) and serves
  // `scrape()`'s text as `text/plain; version=0.0.4`. InvalidArgument for a malformed address,
  // Unavailable when it cannot bind.
  static Status Start(const std::string& address, std::function<std::string()> scrape,
                      std::unique_ptr<MetricsHttpServer>* out);
  ~MetricsHttpServer();  // Calls Stop().
  // Stops listening and waits for its threads. Idempotent.
  void Stop();
  int port() const { return port_; }

 private:
  MetricsHttpServer();
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

// Splits HOST:PORT ("[::1]:9100" gives "::1"). False when it is not of that form.
bool SplitHostPort(const std::string& address, std::string* host, int* port);

}  // namespace moesweep

#endif  // MOESWEEP_SERVER_METRICS_HTTP_H_
