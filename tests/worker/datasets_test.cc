#include "worker/datasets.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <thread>

#include "tests/worker/test_util.h"

namespace moesweep::worker {
namespace {

using testing::IdxBytes;
using testing::TempDir;
using testing::WriteGz;
using testing::WriteText;

TrialConfig Defaults() {
  TrialConfig c;
  EXPECT_TRUE(ParseTrialConfigText("{}", &c).ok());
  return c;
}

bool Contains(const Status& s, const std::string& text) { return s.message().find(text) != std::string::npos; }

// ------------------------------------------------------------------------------------------------
// idx / Fashion-MNIST

// A fake Fashion-MNIST of 4x4 images: n_train and n_test samples, label i % 10, pixel value i.
void WriteFashionFixture(const TempDir& dir, uint32_t n_train, uint32_t n_test) {
  auto write = [&](const std::string& prefix, uint32_t n) {
    std::vector<uint8_t> pixels, labels;
    for (uint32_t i = 0; i < n; ++i) {
      pixels.insert(pixels.end(), 16, static_cast<uint8_t>(i));
      labels.push_back(static_cast<uint8_t>(i % 10));
    }
    WriteGz(dir.File(prefix + "-images-idx3-ubyte.gz"), IdxBytes({n, 4, 4}, pixels));
    WriteGz(dir.File(prefix + "-labels-idx1-ubyte.gz"), IdxBytes({n}, labels));
  };
  write("train", n_train);
  write("t10k", n_test);
}

TEST(IdxTest, ReadsGzippedIdx) {
  TempDir dir;
  WriteGz(dir.File("a.gz"), IdxBytes({2, 3}, {1, 2, 3, 4, 5, 6}));
  at::Tensor t;
  ASSERT_TRUE(ReadIdxFile(dir.File("a.gz"), &t).ok());
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t[1][2].item<int>(), 6);
}

TEST(IdxTest, BadMagicNamesFile) {
  TempDir dir;
  std::vector<uint8_t> bytes = IdxBytes({2}, {1, 2});
  bytes[2] = 0x0D;  // float data, which we do not read
  WriteGz(dir.File("bad.gz"), bytes);
  at::Tensor t;
  Status s = ReadIdxFile(dir.File("bad.gz"), &t);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s, "bad.gz")) << s.message();
  EXPECT_TRUE(Contains(s, "magic")) << s.message();
}

TEST(IdxTest, TruncatedDataNamesFileAndSizes) {
  TempDir dir;
  WriteGz(dir.File("short.gz"), IdxBytes({3, 4}, {1, 2, 3, 4, 5}));
  at::Tensor t;
  Status s = ReadIdxFile(dir.File("short.gz"), &t);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s, "short.gz: truncated: expected 12 bytes of data, got 5")) << s.message();
}

TEST(IdxTest, CorruptGzipAndMissingFile) {
  TempDir dir;
  // A gzip stream cut in half.
  WriteGz(dir.File("whole.gz"), IdxBytes({64}, std::vector<uint8_t>(64, 7)));
  std::ifstream in(dir.File("whole.gz"), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  WriteText(dir.File("cut.gz"), bytes.substr(0, bytes.size() / 2));
  at::Tensor t;
  Status s = ReadIdxFile(dir.File("cut.gz"), &t);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s, "cut.gz")) << s.message();
  s = ReadIdxFile(dir.File("nope.gz"), &t);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s, "nope.gz")) << s.message();
}

TEST(FashionMnistTest, LoadsFixtureWithSubsets) {
  TempDir dir;
  WriteFashionFixture(dir, 20, 8);
  TrialConfig c = Defaults();
  c.dataset = "fashion-mnist";
  c.data_dir = dir.path();
  c.train_size = 12;
  Dataset d;
  Status s = LoadFashionMnist(c, &d);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(d.train_x.sizes(), (std::vector<int64_t>{12, 16}));
  EXPECT_EQ(d.val_x.size(0), 8);
  EXPECT_EQ(d.num_classes, 10);
  EXPECT_EQ(d.channels, 1);
  EXPECT_EQ(d.height, 4);
  EXPECT_EQ(d.width, 4);
  EXPECT_EQ(d.train_y[11].item<int64_t>(), 1);
  EXPECT_NEAR(d.train_x[3][0].item<double>(), (3 / 255.0 - 0.2860) / 0.3530, 1e-5);
  c.train_size = 21;
  s = LoadFashionMnist(c, &d);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s, "config.train_size: 21 is more than the 20 samples")) << s.message();
}

TEST(FashionMnistTest, MismatchedLabelsAndBadLabels) {
  TempDir dir;
  WriteFashionFixture(dir, 5, 5);
  WriteGz(dir.File("t10k-labels-idx1-ubyte.gz"), IdxBytes({4}, {0, 1, 2, 3}));
  TrialConfig c = Defaults();
  c.data_dir = dir.path();
  Dataset d;
  Status s = LoadFashionMnist(c, &d);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s, "t10k-labels-idx1-ubyte.gz: 4 labels for 5 images")) << s.message();
  WriteGz(dir.File("t10k-labels-idx1-ubyte.gz"), IdxBytes({5}, {0, 1, 2, 3, 12}));
  s = LoadFashionMnist(c, &d);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s, "label 12 out of range")) << s.message();
}

// ------------------------------------------------------------------------------------------------
// CSV

TrialConfig CsvConfig(const std::string& path) {
  TrialConfig c = Defaults();
  c.dataset = "csv";
  c.path = path;
  c.val_fraction = 0.25;
  return c;
}

TEST(CsvTest, LoadsSplitsAndStandardises) {
  TempDir dir;
  std::string text = "x1, x2 ,label\n";
  for (int i = 0; i < 20; ++i) text += std::to_string(i) + "," + std::to_string(100 + 2 * i) + "," + (i % 2 ? "cat" : "dog") + "\r\n";
  WriteText(dir.File("d.csv"), text + "\n");
  Dataset d;
  Status s = LoadCsv(CsvConfig(dir.File("d.csv")), &d);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(d.train_x.sizes(), (std::vector<int64_t>{15, 2}));
  EXPECT_EQ(d.val_x.size(0), 5);
  EXPECT_EQ(d.num_classes, 2);
  EXPECT_TRUE(at::allclose(d.train_x.mean(0), at::zeros({2}), 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(d.train_x.std(0, false), at::ones({2}), 1e-4, 1e-4));
  // Labels are numbered in sorted order ("cat" = 0): x1 odd <=> cat. Standardisation keeps order.
  at::Tensor all_y = at::cat({d.train_y, d.val_y});
  EXPECT_EQ(all_y.sum().item<int64_t>(), 10);
}

TEST(CsvTest, IntegerLabelsAreClassIds) {
  TempDir dir;
  WriteText(dir.File("d.csv"), "label,a\n0,1\n3,2\n1,3\n0,4\n");
  Dataset d;
  ASSERT_TRUE(LoadCsv(CsvConfig(dir.File("d.csv")), &d).ok());
  EXPECT_EQ(d.num_classes, 4);
}

TEST(CsvTest, MalformedRowsNameFileAndLine) {
  TempDir dir;
  const std::string f = dir.File("bad.csv");
  WriteText(f, "a,b,label\n1,2,0\n1,x,1\n");
  Dataset d;
  Status s = LoadCsv(CsvConfig(f), &d);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s, f + ":3: column \"b\": \"x\" is not a finite number")) << s.message();

  WriteText(f, "a,b,label\n1,2,0\n\n1,2\n");
  s = LoadCsv(CsvConfig(f), &d);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s, f + ":4: expected 3 fields, got 2")) << s.message();

  WriteText(f, "a,b,klass\n1,2,0\n");
  s = LoadCsv(CsvConfig(f), &d);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s, f + ":1: no column named \"label\"")) << s.message();

  WriteText(f, "a,label\n1,\"0\n");
  s = LoadCsv(CsvConfig(f), &d);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s, f + ":2: unterminated quoted field")) << s.message();

  WriteText(f, "a,label\nnan,0\n");
  s = LoadCsv(CsvConfig(f), &d);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s, f + ":2:")) << s.message();

  s = LoadCsv(CsvConfig(dir.File("missing.csv")), &d);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s, "missing.csv")) << s.message();
}

// ------------------------------------------------------------------------------------------------
// Synthetic and cache

TEST(SyntheticTest, DeterministicInDataSeedAndLearnableShape) {
  TrialConfig c = Defaults();
  c.train_size = 300;
  c.val_size = 100;
  c.input_dim = 6;
  c.num_classes = 5;
  Dataset a, b, other;
  ASSERT_TRUE(LoadSynthetic(c, &a).ok());
  ASSERT_TRUE(LoadSynthetic(c, &b).ok());
  EXPECT_TRUE(at::equal(a.train_x, b.train_x));
  EXPECT_TRUE(at::equal(a.val_y, b.val_y));
  EXPECT_EQ(a.train_x.sizes(), (std::vector<int64_t>{300, 6}));
  EXPECT_EQ(a.num_classes, 5);
  EXPECT_GE(a.train_y.min().item<int64_t>(), 0);
  EXPECT_LT(a.train_y.max().item<int64_t>(), 5);
  // Every class occurs.
  EXPECT_EQ(std::get<0>(at::_unique(a.train_y)).numel(), 5);
  // The seed (not the trial's) decides the data; a bigger training set keeps validation fixed.
  c.seed = 99;
  c.train_size = 400;
  ASSERT_TRUE(LoadSynthetic(c, &other).ok());
  EXPECT_TRUE(at::equal(other.val_x, a.val_x));
  c.data_seed = 5;
  ASSERT_TRUE(LoadSynthetic(c, &other).ok());
  EXPECT_FALSE(at::equal(other.val_x, a.val_x));
}

TEST(DatasetCacheTest, LoadsOnceAndSharesBetweenThreads) {
  DatasetCache cache(2);
  TrialConfig c = Defaults();
  c.train_size = 64;
  c.val_size = 32;
  std::shared_ptr<const Dataset> seen[4];
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] { ASSERT_TRUE(cache.Get(c, &seen[i]).ok()); });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(cache.loads(), 1u);
  for (int i = 1; i < 4; ++i) EXPECT_EQ(seen[i].get(), seen[0].get());
  // The trial seed is not part of the key; data keys are.
  c.seed = 42;
  std::shared_ptr<const Dataset> again;
  ASSERT_TRUE(cache.Get(c, &again).ok());
  EXPECT_EQ(again.get(), seen[0].get());
  c.n_regimes = 3;
  ASSERT_TRUE(cache.Get(c, &again).ok());
  EXPECT_NE(again.get(), seen[0].get());
  EXPECT_EQ(cache.loads(), 2u);
}

TEST(DatasetCacheTest, FailuresAreNotCached) {
  TempDir dir;
  DatasetCache cache;
  TrialConfig c = CsvConfig(dir.File("later.csv"));
  std::shared_ptr<const Dataset> d;
  EXPECT_FALSE(cache.Get(c, &d).ok());
  WriteText(dir.File("later.csv"), "a,label\n1,0\n2,1\n3,0\n4,1\n");
  Status s = cache.Get(c, &d);
  EXPECT_TRUE(s.ok()) << s.message();
}

}  // namespace
}  // namespace moesweep::worker
