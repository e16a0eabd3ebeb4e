// Limits on what moesweep accepts from outside (a sweep spec, a worker's report, a listing), in
// one place. Each keeps one request's work on the coordinator's single thread and one message
// under gRPC's default 4 MiB. README.md ("Limits") lists them; change both together.
#ifndef MOESWEEP_COMMON_LIMITS_H_
#define MOESWEEP_COMMON_LIMITS_H_

#include <cstddef>
#include <cstdint>

namespace moesweep {

// Sweep specs (checked by ParseSweepSpec, so `moesweep validate` and SubmitSweep agree).
inline constexpr size_t kMaxSpecBytes = 1 << 20;          // Spec text as submitted, and normalised.
inline constexpr int kMaxJsonDepth = 64;                  // Nesting of arrays and objects.
inline constexpr size_t kMaxJsonObjectMembers = 1000;     // Keys of one object (ordered_json inserts in O(n)).
inline constexpr size_t kMaxStringBytes = 4096;           // Names, keys and string values.
inline constexpr size_t kMaxGridValues = 10000;           // Values of one grid axis.
inline constexpr size_t kMaxStages = 64;                  // Stages of one spec.
// Grid points of one stage written out (points x (largest point's JSON + 32 bytes)): bounds the
// stage's STAGE_DECIDED event and GetBestConfig answer.
inline constexpr size_t kMaxStageGridBytes = 2 << 20;
inline constexpr int64_t kMaxSeed = 9007199254740991;     // 2^53 - 1: exact in every JSON reader.

// Worker reports (checked at the gRPC edge, before the coordinator's thread sees them).
inline constexpr size_t kMaxMetricsPerReport = 256;
inline constexpr size_t kMaxMetricNameBytes = 128;
inline constexpr size_t kMaxLayersPerReport = 64;         // ExpertStats.layers.
inline constexpr size_t kMaxExpertsPerLayer = 1024;       // usage / importance entries of a layer.
inline constexpr size_t kMaxClassRoutingEntries = 65536;  // class_routing entries of one report, all layers.
inline constexpr size_t kMaxTrialErrorBytes = 4096;       // CompleteTrial.error; longer is cut, not refused.

// Answers.
inline constexpr size_t kMaxErrorTextBytes = 4096;        // Error text of one gRPC status (metadata limit 8 KiB).
inline constexpr size_t kMaxEchoChars = 80;               // A value quoted in an error message.
inline constexpr int kDefaultListPage = 100;              // ListSweeps / ListTrials page without a limit.
inline constexpr int kMaxListPage = 1000;                 // Largest page asked for.
inline constexpr size_t kMaxListPageBytes = 2 << 20;      // A page ends early past this many bytes.

// gRPC messages the coordinator reads (larger are refused by gRPC with RESOURCE_EXHAUSTED).
inline constexpr int kMaxRequestBytes = 16 << 20;

}  // namespace moesweep

#endif  // MOESWEEP_COMMON_LIMITS_H_
