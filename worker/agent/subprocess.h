// Subprocess: a program started in a process group of its own, with its stdout and stderr on
// pipes, so that a trial's whole process tree can be stopped. No shell is involved.
#ifndef MOESWEEP_WORKER_AGENT_SUBPROCESS_H_
#define MOESWEEP_WORKER_AGENT_SUBPROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace moesweep::worker {

struct SpawnOptions {
  std::vector<std::string> argv;  // argv[0] is looked up in PATH when it has no '/'.
  std::vector<std::string> env;   // The whole environment, "NAME=value".
  std::string workdir;            // "" = the caller's.
};

class Subprocess {
 public:
  // Starts the program. A program that cannot be started (not found, not executable, a workdir
  // that does not exist) is an error naming it and the reason.
  static Status Start(const SpawnOptions& options, std::unique_ptr<Subprocess>* out);
  // SIGKILLs the process group and reaps the leader if still needed: nothing outlives the object.
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  // -1 once closed by the caller (CloseStdout / CloseStderr).
  int stdout_fd() const { return stdout_fd_; }
  int stderr_fd() const { return stderr_fd_; }
  void CloseStdout();
  void CloseStderr();

  // Sends `sig` to every process of the group (the leader's children too).
  void SignalGroup(int sig);
  // Reaps the leader without blocking; true once it has exited.
  bool Poll();
  bool exited() const { return exited_; }
  // waitpid's status; valid once exited().
  int wait_status() const { return wait_status_; }

 private:
  Subprocess() = default;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  int stderr_fd_ = -1;
  bool exited_ = false;
  int wait_status_ = 0;
};

// "exit status 1", "killed by signal 9 (SIGKILL)".
std::string DescribeWaitStatus(int status);

}  // namespace moesweep::worker

#endif  // MOESWEEP_WORKER_AGENT_SUBPROCESS_H_
