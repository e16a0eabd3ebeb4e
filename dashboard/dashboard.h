// moesweep-dashboard: a web page over SweepService. It serves the page (static files), a JSON API
// (dashboard/api.h) and each sweep's events as Server-Sent Events, and is a client of the
// coordinator like the CLI: it holds no state of its own and never polls.
//
//   GET /                                   the page (also /sweeps/{id}, /sweeps/{id}/trials/{tid}, ...)
//   GET /static/...                         its files (dashboard/static)
//   GET /api/sweeps                         ListSweeps
//   GET /api/sweeps/{id}                    GetSweep: the sweep and its stages
//   GET /api/sweeps/{id}/trials             ListTrials, paged (stage, state, limit, page_token)
//   GET /api/sweeps/{id}/trials/{tid}       one trial
//   GET /api/sweeps/{id}/events?after_seq=N[&progress=0]
//                                           text/event-stream: "id: SEQ", "event: sweep", the event as
//                                           JSON; "event: upstream" when the coordinator goes or comes
//                                           back; "event: end" after the last event; Last-Event-ID
//                                           (a reconnecting EventSource) overrides after_seq.
#ifndef MOESWEEP_DASHBOARD_DASHBOARD_H_
#define MOESWEEP_DASHBOARD_DASHBOARD_H_

#include <chrono>
#include <memory>
#include <string>

#include "common/status.h"
#include "rpc/channel.h"

namespace moesweep::dashboard {

struct DashboardOptions {
  std::string coordinator = "127.0.0.1:50051";  // HOST:PORT of SweepService.
  rpc::ClientSecurity security;                 // TLS and token, as the CLI loads them.
  std::string listen_host = "127.0.0.1";
  int listen_port = 8080;                       // 0: any free port (see Dashboard::port()).
  std::string static_dir;                       // The page's files; see FindStaticDir.
  double rpc_timeout_s = 10;                    // Deadline of each unary call.
  int max_streams = 64;                         // Concurrent event streams; more get 503.
  std::chrono::milliseconds keepalive{15000};   // A comment line this often on an idle stream.
};

// Where the page's files are: the folder holding index.html among `exe_dir`/static (the build
// tree: CMake copies them next to the binary), `exe_dir`/../share/moesweep/dashboard (after
// `cmake --install`) and the source tree the binary was built from. Empty when none has it.
std::string FindStaticDir(const std::string& exe_dir);

class Dashboard {
 public:
  explicit Dashboard(DashboardOptions options);
  ~Dashboard();  // Stop()s.
  Dashboard(const Dashboard&) = delete;
  Dashboard& operator=(const Dashboard&) = delete;

  // Binds the listen address and serves on threads of its own. Errors: the static folder has no
  // index.html, or the address cannot be bound.
  Status Start();
  int port() const;
  // Ends every event stream and stops serving; returns when no request is in flight. Idempotent.
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moesweep::dashboard

#endif  // MOESWEEP_DASHBOARD_DASHBOARD_H_
