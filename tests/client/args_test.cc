// Command-line parsing: every usage error exits 2 and names what is wrong.
#include <gtest/gtest.h>

#include "client/args.h"
#include "test_util.h"

namespace moesweep::client {
namespace {

using cli_testing::Contains;
using cli_testing::Cli;

TEST(ParseArgsTest, ValuesSwitchesAndPositionals) {
  std::vector<FlagSpec> flags = {{"stage", "N", ""}, {"json", "", ""}, {"help", "", ""}};
  ParsedArgs parsed;
  ASSERT_TRUE(ParseArgs({"12", "--stage", "3", "--json", "--stage=4", "--", "--not-a-flag"}, flags, &parsed).ok());
  EXPECT_EQ(parsed.positional, (std::vector<std::string>{"12", "--not-a-flag"}));
  EXPECT_EQ(parsed.Value("stage"), "4");  // The last one wins.
  EXPECT_TRUE(parsed.Has("json"));
  EXPECT_FALSE(parsed.Has("help"));

  ParsedArgs help;
  ASSERT_TRUE(ParseArgs({"-h"}, flags, &help).ok());
  EXPECT_TRUE(help.Has("help"));
}

TEST(ParseArgsTest, ErrorsNameTheFlag) {
  std::vector<FlagSpec> flags = {{"stage", "N", ""}, {"json", "", ""}};
  ParsedArgs parsed;
  EXPECT_EQ(ParseArgs({"--stag", "1"}, flags, &parsed).message(), "unknown flag '--stag'");
  EXPECT_EQ(ParseArgs({"--bogus=1"}, flags, &parsed).message(), "unknown flag '--bogus'");
  EXPECT_EQ(ParseArgs({"-x"}, flags, &parsed).message(), "unknown flag '-x'");
  EXPECT_EQ(ParseArgs({"--stage"}, flags, &parsed).message(), "--stage needs a value (N)");
  EXPECT_EQ(ParseArgs({"--json=yes"}, flags, &parsed).message(), "--json takes no value");
}

TEST(CliUsageTest, UnknownFlagExits2AndNamesIt) {
  auto r = Cli({"watch", "12", "--follow"});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(Contains(r.err, "moesweep: watch: unknown flag '--follow'")) << r.err;
  EXPECT_TRUE(r.out.empty());
}

TEST(CliUsageTest, FlagOfAnotherCommandIsUnknown) {
  auto r = Cli({"show", "12", "--stage", "1"});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(Contains(r.err, "unknown flag '--stage'")) << r.err;
}

TEST(CliUsageTest, MissingOrBadSweepId) {
  auto missing = Cli({"best"});
  EXPECT_EQ(missing.code, 2);
  EXPECT_TRUE(Contains(missing.err, "moesweep: best: missing SWEEP_ID")) << missing.err;

  auto bad = Cli({"cancel", "abc"});
  EXPECT_EQ(bad.code, 2);
  EXPECT_TRUE(Contains(bad.err, "SWEEP_ID must be a positive integer, got 'abc'")) << bad.err;

  auto extra = Cli({"show", "1", "2"});
  EXPECT_EQ(extra.code, 2);
  EXPECT_TRUE(Contains(extra.err, "unexpected argument '2'")) << extra.err;
}

TEST(CliUsageTest, BadStageStateLimitTimeout) {
  auto stage = Cli({"trials", "3", "--stage", "-1"});
  EXPECT_EQ(stage.code, 2);
  EXPECT_TRUE(Contains(stage.err, "--stage must be a stage number >= 0, got '-1'")) << stage.err;

  auto not_a_number = Cli({"best", "3", "--stage=two"});
  EXPECT_EQ(not_a_number.code, 2);
  EXPECT_TRUE(Contains(not_a_number.err, "got 'two'")) << not_a_number.err;

  auto state = Cli({"trials", "3", "--state", "done"});
  EXPECT_EQ(state.code, 2);
  EXPECT_TRUE(Contains(state.err, "--state must be pending, running, succeeded, failed, cancelled or pruned")) << state.err;

  auto limit = Cli({"sweeps", "--limit", "0"});
  EXPECT_EQ(limit.code, 2);
  EXPECT_TRUE(Contains(limit.err, "--limit")) << limit.err;

  auto timeout = Cli({"show", "3", "--timeout", "soon"});
  EXPECT_EQ(timeout.code, 2);
  EXPECT_TRUE(Contains(timeout.err, "--timeout must be a positive number of seconds, got 'soon'")) << timeout.err;
}

TEST(CliUsageTest, ExportNeedsAFormat) {
  auto none = Cli({"export", "3"});
  EXPECT_EQ(none.code, 2);
  EXPECT_TRUE(Contains(none.err, "--format csv|json is required")) << none.err;

  auto bad = Cli({"export", "3", "--format", "xml"});
  EXPECT_EQ(bad.code, 2);
  EXPECT_TRUE(Contains(bad.err, "--format must be csv or json, got 'xml'")) << bad.err;
}

TEST(CliUsageTest, UnknownCommandSuggestsTheClosest) {
  auto r = Cli({"wacth", "3"});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(Contains(r.err, "unknown command 'wacth' (did you mean 'watch'?)")) << r.err;
}

TEST(CliUsageTest, NoCommandPrintsUsageToStderr) {
  auto r = Cli({});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(Contains(r.err, "Usage: moesweep COMMAND"));
  EXPECT_TRUE(r.out.empty());
}

TEST(CliUsageTest, HelpForEveryCommandListsItsFlagsAndExitCodes) {
  auto top = Cli({"--help"});
  EXPECT_EQ(top.code, 0);
  for (const char* command : {"submit", "watch", "sweeps", "show", "trials", "best", "cancel", "export", "validate"}) {
    EXPECT_TRUE(Contains(top.out, command)) << command;
    auto help = Cli({command, "--help"});
    EXPECT_EQ(help.code, 0) << command;
    EXPECT_TRUE(Contains(help.out, std::string("Usage: moesweep ") + command)) << help.out;
    EXPECT_TRUE(Contains(help.out, "--coordinator HOST:PORT")) << help.out;
    EXPECT_TRUE(Contains(help.out, "4    no sweep with that id")) << help.out;
  }
  EXPECT_TRUE(Contains(Cli({"help", "export"}).out, "--format csv|json"));
  EXPECT_TRUE(Contains(Cli({"trials", "-h"}).out, "--state S"));
}

TEST(CliUsageTest, ProgressNeedsWatchOnSubmit) {
  auto r = Cli({"submit", "spec.json", "--progress"});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(Contains(r.err, "--progress needs --watch")) << r.err;
}

}  // namespace
}  // namespace moesweep::client
