// moesweep: the command-line client. Everything but signals and the environment is in cli.cc.
#include <csignal>
#include <cstdlib>
#include <iostream>

#include "client/cli.h"

namespace {

moesweep::client::InterruptFlag g_interrupt;

// While a watch runs, Ctrl-C only asks it to stop (the sweep goes on); otherwise, or on a second
// Ctrl-C, the default action ends the process.
void OnSigint(int signal) {
  if (g_interrupt.armed.load() && !g_interrupt.requested.load()) {
    g_interrupt.requested.store(true);
    return;
  }
  std::signal(signal, SIG_DFL);
  std::raise(signal);
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGINT, OnSigint);
  moesweep::client::CliEnv env;
  env.out = &std::cout;
  env.err = &std::cerr;
  env.in = &std::cin;
  if (const char* address = std::getenv("MOESWEEP_COORDINATOR")) env.coordinator_env = address;
  if (const char* token = std::getenv("MOESWEEP_TOKEN")) env.token_env = token;
  if (const char* dashboard = std::getenv("MOESWEEP_DASHBOARD")) env.dashboard_env = dashboard;
  env.watch.interrupt = &g_interrupt;
  return moesweep::client::RunCli(std::vector<std::string>(argv + 1, argv + argc), env);
}
