// Real processes for end-to-end tests: start a program with its output in files, signal it, wait
// for it with a time limit, and run a command to completion capturing its output.
#ifndef MOESWEEP_TESTS_E2E_PROCESS_H_
#define MOESWEEP_TESTS_E2E_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace moesweep::e2e {

class Process {
 public:
  // Starts argv[0] with `argv`; stdout and stderr go to `log_path`. Extra `env` entries are
  // "NAME=value".
  Process(const std::vector<std::string>& argv, const std::string& log_path, const std::vector<std::string>& env = {});
  ~Process();  // SIGKILLs the process if it still runs.
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  void Signal(int sig);
  // The exit code (128 + signal when killed), or nullopt when still running after `limit`.
  std::optional<int> Wait(std::chrono::milliseconds limit);
  bool Running();
  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }

 private:
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  std::string log_path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs `argv` to completion (killed after `limit`) and returns its exit code and output.
CommandResult Run(const std::vector<std::string>& argv, std::chrono::seconds limit = std::chrono::seconds(60));

std::string ReadFile(const std::string& path);
// A TCP port on 127.0.0.1 that was free a moment ago.
int FreePort();

}  // namespace moesweep::e2e

#endif  // MOESWEEP_TESTS_E2E_PROCESS_H_
