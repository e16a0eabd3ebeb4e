#include "worker/agent/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace moesweep::worker {
namespace {

// What the child tells the parent through the error pipe when exec (or a step before it) fails.
struct ChildError {
  int step;  // 0 chdir, 1 exec, 2 other
  int error;
};

void WriteAll(int fd, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    p += n;
    size -= static_cast<size_t>(n);
  }
}

}  // namespace

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return fmt::format("exit status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* abbrev = sigabbrev_np(sig);
    return abbrev ? fmt::format("killed by signal {} (SIG{})", sig, abbrev) : fmt::format("killed by signal {}", sig);
  }
  return fmt::format("wait status {}", status);
}

Status Subprocess::Start(const SpawnOptions& options, std::unique_ptr<Subprocess>* out) {
  if (options.argv.empty() || options.argv[0].empty()) return Status::InvalidArgument("empty command");
  // Everything the child needs is built before fork: after it, only async-signal-safe calls.
  std::vector<char*> argv, envp;
  for (const std::string& a : options.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const std::string& e : options.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const char* workdir = options.workdir.empty() ? nullptr : options.workdir.c_str();

  int out_pipe[2], err_pipe[2], status_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return Status::Internal(fmt::format("pipe: {}", std::strerror(errno)));
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    close(out_pipe[0]), close(out_pipe[1]);
    return Status::Internal(fmt::format("pipe: {}", std::strerror(errno)));
  }
  if (pipe2(status_pipe, O_CLOEXEC) != 0) {
    close(out_pipe[0]), close(out_pipe[1]), close(err_pipe[0]), close(err_pipe[1]);
    return Status::Internal(fmt::format("pipe: {}", std::strerror(errno)));
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1], status_pipe[0], status_pipe[1]}) close(fd);
    return Status::Internal(fmt::format("fork: {}", std::strerror(errno)));
  }
  if (pid == 0) {
    // The child: its own process group, so the trial's whole tree can be signalled at once.
    setpgid(0, 0);
    // Dies with the worker's slot thread even if the worker is SIGKILLed.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    // The worker blocks SIGTERM/SIGINT in every thread (it sigwaits for them); a trainer must not
    // inherit that mask, or it could not be stopped.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    dup2(out_pipe[1], STDOUT_FILENO);
    dup2(err_pipe[1], STDERR_FILENO);
    ChildError e{2, 0};
    if (workdir != nullptr && chdir(workdir) != 0) {
      e = {0, errno};
      WriteAll(status_pipe[1], &e, sizeof(e));
      _exit(127);
    }
    // Descriptors the worker opened without O_CLOEXEC (gRPC's, the log files) stay behind.
    for (int fd = 3; fd < 4096; ++fd) {
      if (fd != status_pipe[1]) close(fd);
    }
    execvpe(argv[0], argv.data(), envp.data());
    e = {1, errno};
    WriteAll(status_pipe[1], &e, sizeof(e));
    _exit(127);
  }
  setpgid(pid, pid);  // Also here, so the group exists before the parent signals it.
  close(out_pipe[1]);
  close(err_pipe[1]);
  close(status_pipe[1]);
  ChildError e{-1, 0};
  ssize_t n;
  do {
    n = read(status_pipe[0], &e, sizeof(e));
  } while (n < 0 && errno == EINTR);
  close(status_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof(e))) {
    int status = 0;
    waitpid(pid, &status, 0);
    close(out_pipe[0]);
    close(err_pipe[0]);
    if (e.step == 0) {
      return Status::InvalidArgument(
          fmt::format("cannot enter workdir \"{}\": {}", options.workdir, std::strerror(e.error)));
    }
    return Status::InvalidArgument(fmt::format("cannot run \"{}\": {}", options.argv[0], std::strerror(e.error)));
  }
  std::unique_ptr<Subprocess> p(new Subprocess());
  p->pid_ = pid;
  p->stdout_fd_ = out_pipe[0];
  p->stderr_fd_ = err_pipe[0];
  *out = std::move(p);
  return Status::Ok();
}

Subprocess::~Subprocess() {
  if (pid_ > 0) {
    kill(-pid_, SIGKILL);
    if (!exited_) waitpid(pid_, &wait_status_, 0);
  }
  CloseStdout();
  CloseStderr();
}

void Subprocess::CloseStdout() {
  if (stdout_fd_ >= 0) close(stdout_fd_);
  stdout_fd_ = -1;
}

void Subprocess::CloseStderr() {
  if (stderr_fd_ >= 0) close(stderr_fd_);
  stderr_fd_ = -1;
}

void Subprocess::SignalGroup(int sig) {
  if (pid_ > 0) kill(-pid_, sig);
}

bool Subprocess::Poll() {
  if (exited_) return true;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    exited_ = true;
    wait_status_ = status;
  }
  return exited_;
}

}  // namespace moesweep::worker
