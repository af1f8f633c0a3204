// Runtime / Stream / StreamPool on a real package. The package comes from the environment:
// MEMX_TEST_PACKAGE (a single-graph fp32 package, e.g. rmt-tiny, exported by `make cpp-test`).
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>
#include <onnxruntime_cxx_api.h>

#include "memx/memx.hpp"

using namespace memx;

namespace {
const char* package() { return std::getenv("MEMX_TEST_PACKAGE"); }

#define NEED_PACKAGE() \
  if (!package()) GTEST_SKIP() << "needs MEMX_TEST_PACKAGE (a memx package; `make cpp-test` exports one)"

Tensor random_tokens(std::mt19937& rng, const Manifest& m, int64_t batch, int64_t seg) {
  std::uniform_int_distribution<int64_t> id(0, m.vocab_size - 1);
  std::vector<int64_t> ids(batch * seg);
  for (auto& v : ids) v = id(rng);
  return make_tokens(ids, batch, seg);
}

float max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape, b.shape);
  EXPECT_EQ(a.dtype, DType::Float32);
  float d = 0;
  for (int64_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(a.data<float>()[i] - b.data<float>()[i]));
  return d;
}

void expect_same_state(const std::map<std::string, Tensor>& a, const std::map<std::string, Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) EXPECT_EQ(t.bytes, b.at(name).bytes) << name;
}

std::string output_name(const Runtime& rt) { return rt.manifest().outputs.at(0).name; }
}  // namespace

TEST(Runtime, StepsCarryMemoryAndCountSegments) {
  NEED_PACKAGE();
  Runtime rt(package());
  Stream s = rt.stream(2);
  std::mt19937 rng(0);
  const auto zero = s.state();
  auto first = s.step(random_tokens(rng, rt.manifest(), 2, rt.manifest().segment_max));
  EXPECT_EQ(s.segments(), 1);
  EXPECT_FALSE(s.state_on_device());
  EXPECT_NE(s.state().begin()->second.bytes, zero.begin()->second.bytes);
  EXPECT_EQ(first.outputs.at(output_name(rt)).shape[0], 2);
  // the same segment at a later depth gives other outputs: the memory is carried
  std::mt19937 again(0);
  Tensor same = random_tokens(again, rt.manifest(), 2, rt.manifest().segment_max);
  auto later = s.step(same);
  EXPECT_GT(max_abs_diff(first.outputs.at(output_name(rt)), later.outputs.at(output_name(rt))), 1e-6f);
}

TEST(Runtime, BadInputThrowsTypedErrorsAndLeavesStateUnchanged) {
  NEED_PACKAGE();
  Runtime rt(package());
  const Manifest& m = rt.manifest();
  Stream s = rt.stream(2);
  std::mt19937 rng(1);
  s.step(random_tokens(rng, m, 2, 4));
  const auto before = s.state();
  std::vector<int64_t> ids(2 * 4, 1);
  ids[5] = m.vocab_size;
  try {
    s.step(make_tokens(ids, 2, 4));
    FAIL() << "token outside the vocabulary accepted";
  } catch (const TokenRangeError& e) {
    EXPECT_EQ(e.expected(), "0.." + std::to_string(m.vocab_size - 1));
    EXPECT_EQ(e.actual(), std::to_string(m.vocab_size) + " at [row, position] [1, 1]");
  }
  EXPECT_THROW(s.step(random_tokens(rng, m, 3, 4)), BatchMismatchError);
  EXPECT_THROW(s.step(random_tokens(rng, m, 2, m.segment_max + 1)), SegmentLengthError);
  EXPECT_THROW(s.step(Tensor(DType::Int64, {8})), RankError);
  EXPECT_THROW(s.step(Tensor(DType::Float32, {2, 4})), DTypeError);
  EXPECT_THROW(s.step(random_tokens(rng, m, 2, 4), make_lengths({4, 5})), InputError);
  EXPECT_THROW(s.step(random_tokens(rng, m, 2, 4), make_lengths({4})), BatchMismatchError);
  EXPECT_THROW(s.step(random_tokens(rng, m, 2, 4), Tensor(), Tensor(DType::Int64, {2})), DTypeError);
  expect_same_state(before, s.state());
  EXPECT_EQ(s.segments(), 1);
}

TEST(Runtime, ResetRowsEqualFreshStreams) {
  NEED_PACKAGE();
  Runtime rt(package());
  const Manifest& m = rt.manifest();
  std::mt19937 rng(2);
  Stream s = rt.stream(2), fresh = rt.stream(2);
  for (int k = 0; k < 5; ++k) s.step(random_tokens(rng, m, 2, 8));
  Tensor tokens = random_tokens(rng, m, 2, 8);
  auto via_flag = s.step(tokens, Tensor(), make_reset({true, true}));
  auto from_zero = fresh.step(tokens);
  EXPECT_EQ(max_abs_diff(via_flag.outputs.at(output_name(rt)), from_zero.outputs.at(output_name(rt))), 0.0f);
  s.reset({1});
  auto st = s.state();
  const Tensor& mem = st.begin()->second;
  const std::size_t row = mem.nbytes() / 2;
  for (std::size_t i = row; i < mem.nbytes(); ++i) ASSERT_EQ(mem.bytes[i], 0) << "row 1 not zeroed";
  EXPECT_THROW(s.reset({2}), InputError);
}

TEST(Runtime, SnapshotRestoreContinuesExactly) {
  NEED_PACKAGE();
  Runtime rt(package());
  const Manifest& m = rt.manifest();
  std::mt19937 rng(3);
  Stream a = rt.stream(1);
  for (int k = 0; k < 10; ++k) a.step(random_tokens(rng, m, 1, 8));
  const std::vector<uint8_t> snap = a.snapshot();
  Stream b = rt.stream(1);
  b.restore(snap);
  EXPECT_EQ(b.segments(), 10);
  for (int k = 0; k < 20; ++k) {
    Tensor t = random_tokens(rng, m, 1, 8);
    auto x = a.step(t), y = b.step(t);
    ASSERT_EQ(max_abs_diff(x.outputs.at(output_name(rt)), y.outputs.at(output_name(rt))), 0.0f);
  }
  expect_same_state(a.state(), b.state());
  EXPECT_EQ(a.snapshot(), b.snapshot());  // byte-identical
}

TEST(Runtime, RestoreRefusesForeignSnapshotsAndKeepsState) {
  NEED_PACKAGE();
  Runtime rt(package());
  const Manifest& m = rt.manifest();
  std::mt19937 rng(4);
  Stream s = rt.stream(1);
  s.step(random_tokens(rng, m, 1, 8));
  const auto before = s.state();
  Stream two = rt.stream(2);
  try {
    s.restore(two.snapshot());
    FAIL() << "batch-2 snapshot restored into a batch-1 stream";
  } catch (const SnapshotMismatchError& e) {
    EXPECT_EQ(e.expected(), "1");
    EXPECT_EQ(e.actual(), "2");
  }
  SnapshotData foreign = decode_snapshot(s.snapshot());
  foreign.model_id = std::string(64, '0');
  EXPECT_THROW(s.restore(encode_snapshot(foreign)), SnapshotMismatchError);
  SnapshotData poisoned = decode_snapshot(s.snapshot());
  Tensor& t = poisoned.states.begin()->second;
  if (t.dtype == DType::Float32) {
    t.data<float>()[3] = std::nanf("");
    EXPECT_THROW(s.restore(encode_snapshot(poisoned)), NonFiniteStateError);
  }
  std::vector<uint8_t> altered = s.snapshot();
  altered[altered.size() / 2] ^= 0x10;
  EXPECT_THROW(s.restore(altered), SnapshotCorruptError);
  expect_same_state(before, s.state());
  EXPECT_EQ(s.segments(), 1);
}

TEST(StreamPool, BatchedStreamsEqualSteppingEachAlone) {
  NEED_PACKAGE();
  Runtime rt(package());
  const Manifest& m = rt.manifest();
  StreamPool pool = rt.pool(3);  // 5 streams -> chunks of 3 and 2
  std::vector<int64_t> ids;
  std::vector<Stream> alone;
  for (int i = 0; i < 5; ++i) ids.push_back(pool.open()), alone.push_back(rt.stream(1));
  std::mt19937 rng(5);
  std::uniform_int_distribution<int64_t> len(1, m.segment_max), tok(0, m.vocab_size - 1);
  for (int step = 0; step < 12; ++step) {
    std::map<int64_t, std::vector<int64_t>> inputs;
    for (int i = 0; i < 5; ++i) {
      if ((step + i) % 4 == 0) continue;  // streams at different depths
      std::vector<int64_t> seg(len(rng));
      for (auto& v : seg) v = tok(rng);
      inputs[ids[i]] = seg;
    }
    auto results = pool.step(inputs);
    for (const auto& [id, seg] : inputs) {
      auto single = alone[id].step(make_tokens(seg, 1, static_cast<int64_t>(seg.size())));
      Tensor want = single.outputs.at(output_name(rt));
      want.shape.erase(want.shape.begin());
      ASSERT_LE(max_abs_diff(results.at(id).at(output_name(rt)), want), 1e-5f) << "stream " << id << " step " << step;
    }
  }
  for (int i = 0; i < 5; ++i)
    for (const auto& [name, t] : alone[i].state()) EXPECT_LE(max_abs_diff(pool.state(ids[i]).at(name), t), 1e-5f);
  // a snapshot moves between a pool and a stream
  Stream moved = rt.stream(1);
  moved.restore(pool.snapshot(ids[0]));
  expect_same_state(moved.state(), pool.state(ids[0]));
}

TEST(StreamPool, FailedStepChangesNoStream) {
  NEED_PACKAGE();
  Runtime rt(package());
  const Manifest& m = rt.manifest();
  StreamPool pool = rt.pool(2);
  int64_t a = pool.open(), b = pool.open();
  pool.step({{a, {1, 2, 3}}, {b, {4, 5}}});
  const auto sa = pool.state(a), sb = pool.state(b);
  EXPECT_THROW(pool.step({{a, {1, 2}}, {b, {m.vocab_size}}}), TokenRangeError);
  EXPECT_THROW(pool.step({{a, {1, 2}}, {99, {1}}}), InputError);
  expect_same_state(sa, pool.state(a));
  expect_same_state(sb, pool.state(b));
  pool.close(a);
  EXPECT_FALSE(pool.contains(a));
  EXPECT_THROW(pool.close(a), InputError);
  EXPECT_EQ(pool.size(), 1u);
}

TEST(Runtime, OneRuntimeSharedByThreadsGivesSequentialResults) {
  NEED_PACKAGE();
  Runtime rt(package());
  const Manifest& m = rt.manifest();
  constexpr int kThreads = 4, kSteps = 40;
  auto run = [&](int seed) {
    std::mt19937 rng(100 + seed);
    Stream s = rt.stream(1);
    std::vector<Tensor> outs;
    for (int k = 0; k < kSteps; ++k) outs.push_back(s.step(random_tokens(rng, m, 1, 8)).outputs.at(output_name(rt)));
    return outs;
  };
  std::vector<std::vector<Tensor>> sequential, threaded(kThreads);
  for (int t = 0; t < kThreads; ++t) sequential.push_back(run(t));
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t) pool.emplace_back([&, t] { threaded[t] = run(t); });
  for (auto& th : pool) th.join();
  for (int t = 0; t < kThreads; ++t)
    for (int k = 0; k < kSteps; ++k) ASSERT_EQ(threaded[t][k].bytes, sequential[t][k].bytes) << "thread " << t << " step " << k;
}

TEST(Runtime, RefusesUnavailableProvidersAndLibraries) {
  NEED_PACKAGE();
  RuntimeOptions cuda;
  cuda.device = "cuda";
  bool has_cuda = false;
  for (const auto& p : Ort::GetAvailableProviders()) has_cuda |= p == "CUDAExecutionProvider";
  if (!has_cuda) {
    try {
      Runtime rt(package(), cuda);
      FAIL() << "cuda accepted by a CPU-only ONNX Runtime";
    } catch (const BackendUnavailableError& e) {
      EXPECT_EQ(e.expected(), "CUDAExecutionProvider");
      EXPECT_NE(e.actual().find("CPUExecutionProvider"), std::string::npos);
    }
  }
  RuntimeOptions bad_device;
  bad_device.device = "tpu";
  EXPECT_THROW(Runtime(package(), bad_device), BackendUnavailableError);
  RuntimeOptions bad_level;
  bad_level.graph_optimization = "max";
  EXPECT_THROW(Runtime(package(), bad_level), InputError);
  EXPECT_THROW(Runtime(package()).stream(0), InputError);
  EXPECT_THROW(Runtime(package()).pool(0), InputError);
}

TEST(Runtime, APackageWithoutAStoredModelIdComputesItAndItsSnapshotsStillRestore) {
  NEED_PACKAGE();
  namespace fs = std::filesystem;
  const fs::path copy = fs::temp_directory_path() / ("memx-no-model-id-" + std::to_string(::getpid()));
  fs::remove_all(copy);
  fs::copy(package(), copy, fs::copy_options::recursive);
  std::stringstream text;
  text << std::ifstream(copy / "memx.json").rdbuf();
  nlohmann::json doc = nlohmann::json::parse(text.str());
  ASSERT_TRUE(doc.contains("model_id"));  // Python writes it at export
  const std::string stored = doc["model_id"].get<std::string>();
  doc.erase("model_id");  // as memx before the id was stored wrote it
  std::ofstream(copy / "memx.json") << doc.dump();
  Runtime rt(copy.string());
  EXPECT_EQ(rt.manifest().model_id, stored);  // computed as Python computes it
  std::mt19937 rng(3);
  Stream s = rt.stream(1);
  s.step(random_tokens(rng, rt.manifest(), 1, 8));
  const std::vector<uint8_t> snap = s.snapshot();
  Stream other = Runtime(package()).stream(1);
  other.restore(snap);  // the package with the stored id takes it: the same model
  EXPECT_EQ(other.segments(), 1);
  fs::remove_all(copy);
}
