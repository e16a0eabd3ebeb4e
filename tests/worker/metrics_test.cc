#include "worker/metrics.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace moesweep::worker {
namespace {

TEST(RetrievalTest, PerfectClusters) {
  at::Tensor e = at::tensor({1.0, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9}).view({4, 2});
  RetrievalMetrics m = ComputeRetrieval(e, at::tensor({0, 0, 1, 1}, at::kLong));
  EXPECT_DOUBLE_EQ(m.map, 1.0);
  EXPECT_DOUBLE_EQ(m.rank1, 1.0);
  EXPECT_DOUBLE_EQ(m.rank5, 1.0);
}

TEST(RetrievalTest, HandComputedMixedCase) {
  // Labels 0, 0, 1, 1. Query 0 ranks 2, 3, 1 (AP 1/3); query 1 ranks 3, 2, 0 (AP 1/3);
  // query 2 ranks 0, 3, 1 (AP 1/2); query 3 ranks 1, 2, 0 (AP 1/2). No nearest neighbour shares
  // the label, but every query finds one within its top 5.
  at::Tensor e = at::tensor({1.0, 0.0, 0.0, 1.0, 0.9, 0.1, 0.2, 0.8}).view({4, 2});
  RetrievalMetrics m = ComputeRetrieval(e, at::tensor({0, 0, 1, 1}, at::kLong));
  EXPECT_NEAR(m.map, 5.0 / 12.0, 1e-9);
  EXPECT_DOUBLE_EQ(m.rank1, 0.0);
  EXPECT_DOUBLE_EQ(m.rank5, 1.0);
}

TEST(RetrievalTest, QueriesWithoutRelevantItemsAreSkipped) {
  at::Tensor e = at::tensor({1.0, 0.0, 0.9, 0.1, 0.0, 1.0}).view({3, 2});
  RetrievalMetrics m = ComputeRetrieval(e, at::tensor({0, 0, 1}, at::kLong));
  EXPECT_DOUBLE_EQ(m.map, 1.0);  // Only queries 0 and 1 count; each finds the other first.
  EXPECT_DOUBLE_EQ(m.rank1, 1.0);
}

TEST(TopKTest, CountsHits) {
  at::Tensor logits = at::tensor({0.1, 0.7, 0.2, 0.5, 0.3, 0.2}).view({2, 3});
  at::Tensor labels = at::tensor({2, 2}, at::kLong);
  EXPECT_EQ(CountTopK(logits, labels, 1), 0);
  EXPECT_EQ(CountTopK(logits, labels, 2), 1);
  EXPECT_EQ(CountTopK(logits, labels, 5), 2);  // k clamped to 3 classes
}

}  // namespace
}  // namespace moesweep::worker
