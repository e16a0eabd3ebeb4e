// Command trainers in the sweep spec: the argv template, its placeholders, and the checks that
// catch typos in free-form config keys at submission.
#include <gtest/gtest.h>

#include "common/command_template.h"
#include "common/sweep_spec.h"

namespace moesweep {
namespace {

// Seed 001's plan on the user's own program.
Json Spec() {
  return Json::parse(R"({
    "name": "quick-test",
    "objective": {"metric": "mAP", "goal": "maximize"},
    "seeds": [42, 123],
    "base": {"MOE_EXPERT_HIDDEN_DIM": 1024, "MOE_TEMPERATURE": 0.7},
    "baseline": {"MOE_EXPERT_HIDDEN_DIM": 0},
    "trainer": {"command": ["python3", "moe_quick_test.py", "{trial_name}", "MOE_EXPERT_HIDDEN_DIM={MOE_EXPERT_HIDDEN_DIM}",
                           "MOE_TEMPERATURE={MOE_TEMPERATURE}", "SEED={seed}"],
                "workdir": "/home/me/project", "env": {"PYTHONUNBUFFERED": "1"}, "timeout_seconds": 7200, "gpus": 1},
    "stages": [{"name": "core", "grid": {"MOE_EXPERT_HIDDEN_DIM": [512, 1024, 2048], "MOE_TEMPERATURE": [0.5, 1.0]}}]
  })");
}

std::string Error(const Json& spec) {
  SweepSpec parsed;
  Status s = ParseSweepSpec(spec.dump(), {}, &parsed);
  return s.ok() ? "" : s.message();
}

TEST(CommandTrainerSpec, FreeFormKeysAndMetricsAreAccepted) {
  SweepSpec spec;
  Status s = ParseSweepSpec(Spec().dump(), {}, &spec);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_TRUE(spec.trainer.is_command());
  EXPECT_EQ(spec.trainer.command.size(), 6u);
  EXPECT_EQ(spec.trainer.workdir, "/home/me/project");
  EXPECT_EQ(spec.trainer.timeout_seconds, 7200);
  EXPECT_EQ(spec.trainer.gpus, 1);
  ASSERT_EQ(spec.trainer.env.size(), 1u);
  EXPECT_EQ(spec.trainer.env[0].first, "PYTHONUNBUFFERED");
}

TEST(CommandTrainerSpec, NormalisedJsonRoundTrips) {
  SweepSpec spec, again;
  ASSERT_TRUE(ParseSweepSpec(Spec().dump(), {}, &spec).ok());
  ASSERT_TRUE(ParseSweepSpec(spec.ToJson().dump(), {}, &again).ok());
  EXPECT_EQ(spec.ToJson(), again.ToJson());
  EXPECT_EQ(again.trainer.ToJson()["kind"], "command");
}

TEST(CommandTrainerSpec, BuiltinSpecsKeepTheSchemaAndHaveNoTrainerKey) {
  Json spec = Spec();
  spec["trainer"] = {{"kind", "builtin"}};
  EXPECT_NE(Error(spec).find("base.MOE_EXPERT_HIDDEN_DIM: unknown trial config key"), std::string::npos) << Error(spec);
  spec.erase("trainer");
  EXPECT_NE(Error(spec).find("stages[0].grid.MOE_TEMPERATURE: unknown trial config key"), std::string::npos);
  SweepSpec builtin;
  ASSERT_TRUE(ParseSweepSpec(R"({"name": "b", "objective": {"metric": "val_accuracy"},
      "stages": [{"name": "s", "grid": {"temperature": [0.5]}}]})", {}, &builtin).ok());
  EXPECT_FALSE(builtin.ToJson().contains("trainer"));  // Stored specs of built-in sweeps read as before.
}

TEST(CommandTrainerSpec, UnusedKeyIsRefusedWithItsPathAndASuggestion) {
  Json spec = Spec();
  spec["stages"][0]["grid"]["MOE_TEMPRATURE"] = {0.3};
  EXPECT_NE(Error(spec).find("stages[0].grid.MOE_TEMPRATURE: not used by trainer.command (did you mean {MOE_TEMPERATURE}?)"),
            std::string::npos)
      << Error(spec);
  spec = Spec();
  spec["base"]["lr"] = 0.1;
  EXPECT_NE(Error(spec).find("base.lr: not used by trainer.command"), std::string::npos) << Error(spec);
}

TEST(CommandTrainerSpec, WholeConfigPlaceholdersAllowAnyKey) {
  for (const char* whole : {"{args}", "{overrides}", "--config_file={config_file}"}) {
    Json spec = Spec();
    spec["base"]["lr"] = 0.1;
    spec["trainer"]["command"].push_back(whole);
    EXPECT_EQ(Error(spec), "") << whole;
  }
}

TEST(CommandTrainerSpec, PlaceholderWithoutAValueIsRefused) {
  Json spec = Spec();
  spec["trainer"]["command"].push_back("--lr={LR}");
  std::string e = Error(spec);
  EXPECT_NE(e.find("trainer.command: placeholder {LR} has no value in the baseline"), std::string::npos) << e;
  EXPECT_NE(e.find("placeholder {LR} has no value in stage 1 \"core\""), std::string::npos) << e;
  // A key that only a later stage's grid gives has no value in earlier stages.
  spec = Spec();
  spec["trainer"]["command"].push_back("--depth={DEPTH}");
  spec["stages"].push_back({{"name", "structure"}, {"grid", {{"DEPTH", {1, 2}}}}});
  e = Error(spec);
  EXPECT_NE(e.find("placeholder {DEPTH} has no value in stage 1 \"core\""), std::string::npos) << e;
  EXPECT_EQ(e.find("stage 2"), std::string::npos) << e;
}

TEST(CommandTrainerSpec, ShapeErrorsNameTheirPath) {
  Json spec = Spec();
  spec["trainer"] = {{"command", {"python3", "train.py", "{args"}}, {"timout_seconds", 5}, {"gpus", -1},
                     {"env", {{"MOESWEEP_SEED", "1"}, {"1BAD", "x"}, {"OK", 3}}}};
  std::string e = Error(spec);
  EXPECT_NE(e.find("trainer.command[2]: unmatched '{' at column 1"), std::string::npos) << e;
  EXPECT_NE(e.find("trainer.timout_seconds: unknown key (did you mean \"timeout_seconds\"?)"), std::string::npos) << e;
  EXPECT_NE(e.find("trainer.gpus: expected an integer in [0, 64]"), std::string::npos) << e;
  EXPECT_NE(e.find("trainer.env.MOESWEEP_SEED: set by the worker"), std::string::npos) << e;
  EXPECT_NE(e.find("trainer.env.1BAD: not a valid environment variable name"), std::string::npos) << e;
  EXPECT_NE(e.find("trainer.env.OK: expected a string"), std::string::npos) << e;
  spec["trainer"] = {{"command", Json::array()}};
  EXPECT_NE(Error(spec).find("trainer.command: required: a non-empty array of strings"), std::string::npos);
  spec["trainer"] = {{"kind", "builtin"}, {"command", {"x"}}};
  EXPECT_NE(Error(spec).find("trainer.command: only for a command trainer"), std::string::npos) << Error(spec);
  spec["trainer"] = {{"command", {"x", "a{args}"}}};
  EXPECT_NE(Error(spec).find("trainer.command[1]: {args} expands into several arguments"), std::string::npos);
}

TEST(CommandTemplate, ExpandsEveryPlaceholderKind) {
  Json config = Json::parse(R"({"width": 1024, "temp": 0.7, "moe": true, "name": "a b", "seed": 42, "list": [1, 2]})");
  TrialPlaceholders trial{17, 42, "s1-p3-seed42", "/runs/x/config.json", "/runs/x"};
  std::vector<std::string> argv;
  ASSERT_TRUE(ExpandCommand({"prog", "{trial_name}", "W={width}", "--t={temp}", "{moe}", "{name}", "{seed}",
                             "{trial_id}", "{config_file}", "{output_dir}", "{{literal}}", "{list}"},
                            config, trial, &argv)
                  .ok());
  EXPECT_EQ(argv, (std::vector<std::string>{"prog", "s1-p3-seed42", "W=1024", "--t=0.7", "true", "a b", "42", "17",
                                            "/runs/x/config.json", "/runs/x", "{literal}", "[1,2]"}));
  ASSERT_TRUE(ExpandCommand({"train", "{args}"}, config, trial, &argv).ok());
  EXPECT_EQ(argv, (std::vector<std::string>{"train", "--width=1024", "--temp=0.7", "--moe=true", "--name=a b", "--list=[1,2]"}));
  ASSERT_TRUE(ExpandCommand({"train", "{overrides}"}, config, trial, &argv).ok());
  EXPECT_EQ(argv[1], "width=1024");
  EXPECT_EQ(argv.size(), 6u);  // "seed" travels as {seed} and MOESWEEP_SEED, not as an override.
  Status s = ExpandCommand({"train", "--x={missing}"}, config, trial, &argv);
  EXPECT_NE(s.message().find("placeholder {missing} has no value"), std::string::npos);
}

TEST(CommandTemplate, TrialNamesAreReadableAndUnique) {
  EXPECT_EQ(TrialName(0, 0, 42), "baseline-seed42");
  EXPECT_EQ(TrialName(1, 3, 42), "s1-p3-seed42");
}

}  // namespace
}  // namespace moesweep
