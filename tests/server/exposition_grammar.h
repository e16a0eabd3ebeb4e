// Checks text against the Prometheus text exposition format 0.0.4, line by line, and reads
// sample values out of it. For the metrics tests.
#ifndef MOESWEEP_TESTS_SERVER_EXPOSITION_GRAMMAR_H_
#define MOESWEEP_TESTS_SERVER_EXPOSITION_GRAMMAR_H_

#include <cstdlib>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace moesweep::testing {

// The problems found, one per bad line ("line 3: ..."); empty when every line is well formed:
// `# HELP name text`, `# TYPE name type`, or `name{label="value",...} value`, where a label
// value escapes only \\, \" and \n; each family's TYPE comes once and before its samples; a
// histogram's buckets are cumulative and end with le="+Inf" equal to _count.
inline std::vector<std::string> ExpositionProblems(const std::string& text) {
  static const std::regex help(R"re(# HELP [a-zA-Z_:][a-zA-Z0-9_:]* ([^\\\n]|\\[\\n])*)re");
  static const std::regex type(R"re(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped))re");
  static const std::regex sample(
      R"re(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\["\\n])*"(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\["\\n])*")*)?\})? ([-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?|[-+]Inf|NaN)( -?[0-9]+)?)re");
  std::vector<std::string> problems;
  if (!text.empty() && text.back() != '\n') problems.push_back("the text does not end with a newline");
  std::map<std::string, std::string> types;
  std::set<std::string> sampled;
  std::map<std::string, double> last_bucket;  // Histogram series (name + labels but le) -> count.
  std::istringstream in(text);
  int n = 0;
  for (std::string line; std::getline(in, line);) {
    ++n;
    std::smatch m;
    auto problem = [&](const std::string& what) {
      problems.push_back("line " + std::to_string(n) + ": " + what + ": " + line);
    };
    if (line.rfind("# HELP ", 0) == 0) {
      if (!std::regex_match(line, help)) problem("malformed HELP");
    } else if (line.rfind("# TYPE ", 0) == 0) {
      if (!std::regex_match(line, m, type)) {
        problem("malformed TYPE");
      } else if (types.count(m[1]) || sampled.count(m[1])) {
        problem("TYPE again, or after samples");
      } else {
        types[m[1]] = m[2];
      }
    } else if (line.empty() || line[0] == '#') {
      problem("not HELP/TYPE");
    } else if (!std::regex_match(line, m, sample)) {
      problem("malformed sample");
    } else {
      std::string name = m[1];
      std::string family = name;
      for (const char* suffix : {"_bucket", "_sum", "_count"}) {
        std::string s = suffix;
        std::string base = name.size() > s.size() ? name.substr(0, name.size() - s.size()) : "";
        if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0 &&
            types.count(base) && types[base] == "histogram") {
          family = base;
        }
      }
      if (!types.count(family)) problem("sample without TYPE");
      sampled.insert(family);
      if (types.count(family) && types[family] == "histogram") {
        std::string labels = m[3];
        double value = std::strtod(std::string(m[7]).c_str(), nullptr);
        if (name == family + "_bucket") {
          static const std::regex le_label(R"re((^|,)le="([^"]*)")re");
          std::smatch le;
          if (!std::regex_search(labels, le, le_label)) {
            problem("bucket without le");
            continue;
          }
          std::string series = family + "{" + std::regex_replace(labels, le_label, "") + "}";
          if (last_bucket.count(series) && value < last_bucket[series]) problem("buckets not cumulative");
          last_bucket[series] = value;
          if (le[2] == "+Inf") last_bucket[series + "+Inf"] = value;
        } else if (name == family + "_count") {
          std::string series = family + "{" + labels + "}";
          if (!last_bucket.count(series + "+Inf")) {
            problem("_count without a +Inf bucket before it");
          } else if (last_bucket[series + "+Inf"] != value) {
            problem("_count is not the +Inf bucket");
          }
        }
      }
    }
  }
  return problems;
}

// The value of the sample written exactly as `series` (`name` or `name{a="x",b="y"}`).
inline std::optional<double> SampleValue(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 && line[series.size()] == ' ') {
      return std::strtod(line.c_str() + series.size() + 1, nullptr);
    }
  }
  return std::nullopt;
}

}  // namespace moesweep::testing

#endif  // MOESWEEP_TESTS_SERVER_EXPOSITION_GRAMMAR_H_
