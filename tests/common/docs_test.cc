// Keeps the docs and the shipped sweep files honest: the README's trial-config table must list
// every schema key with its real default, and every file in sweeps/ must pass validation.
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "common/sweep_spec.h"
#include "common/trial_schema.h"

namespace moesweep {
namespace {

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const std::filesystem::path kSource = MOESWEEP_SOURCE_DIR;

// The README's "Trial config reference" section, up to the next heading of its level.
std::string ConfigSection() {
  std::string readme = ReadFile(kSource / "README.md");
  size_t begin = readme.find("\n## Trial config reference");
  if (begin == std::string::npos) return "";
  size_t end = readme.find("\n## ", begin + 1);
  return readme.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

TEST(Docs, ReadmeTableListsEveryConfigKeyWithItsDefault) {
  std::string readme = ConfigSection();
  ASSERT_FALSE(readme.empty()) << "README.md has no \"## Trial config reference\" section";
  for (const ConfigKey& key : TrialConfigKeys()) {
    std::string prefix = "| `" + key.name + "` |";
    size_t at = readme.find(prefix);
    ASSERT_NE(at, std::string::npos) << key.name << " is missing from README.md; run scripts/gen_config_reference.py";
    std::string row = readme.substr(at, readme.find('\n', at) - at);
    EXPECT_NE(row.find("`" + key.default_value.dump() + "`"), std::string::npos)
        << key.name << ": README row does not show the default " << key.default_value.dump() << ": " << row;
  }
}

TEST(Docs, ReadmeTableNamesNoKeyThatDoesNotExist) {
  std::istringstream readme(ConfigSection());
  std::string line;
  bool in_table = false;
  while (std::getline(readme, line)) {
    if (line.rfind("| key | type | default | meaning |", 0) == 0) in_table = true;
    if (!in_table || line.rfind("| `", 0) != 0) continue;
    std::string name = line.substr(3, line.find('`', 3) - 3);
    EXPECT_NE(FindConfigKey(name), nullptr) << "README documents unknown key " << name;
  }
  EXPECT_TRUE(in_table);
}

TEST(Docs, EverySweepFileIsValid) {
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kSource / "sweeps")) {
    if (entry.path().extension() != ".json") continue;
    ++files;
    SweepSpec spec;
    Status s = ParseSweepSpec(ReadFile(entry.path()), {}, &spec);
    EXPECT_TRUE(s.ok()) << entry.path() << ": " << s.message();
  }
  EXPECT_GE(files, 6);
}

}  // namespace
}  // namespace moesweep
