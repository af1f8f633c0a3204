// Extra step inputs (memx.json "inputs") through Stream and StreamPool. The package comes from
// the environment: MEMX_TEST_INPUTS_PACKAGE, the encoder-decoder of tests/models/byo_models.py
// (type_ids [batch, segment] in 0..1, speaker [batch] in 0..2, decoder_ids [batch, 4] in 0..31),
// exported by `make cpp-test`.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>

#include "memx/memx.hpp"

using namespace memx;

namespace {
const char* package() { return std::getenv("MEMX_TEST_INPUTS_PACKAGE"); }

#define NEED_PACKAGE() \
  if (!package()) GTEST_SKIP() << "needs MEMX_TEST_INPUTS_PACKAGE (a package with extra step inputs; `make cpp-test` exports one)"

Tensor ints(std::mt19937& rng, Shape shape, int64_t high) {
  std::uniform_int_distribution<int64_t> v(0, high - 1);
  Tensor t(DType::Int64, shape);
  for (int64_t i = 0; i < t.size(); ++i) t.data<int64_t>()[i] = v(rng);
  return t;
}

// one stream's extra inputs without the batch axis, for a segment of `seg` tokens
std::map<std::string, Tensor> extras(std::mt19937& rng, int64_t seg) {
  return {{"type_ids", ints(rng, {seg}, 2)}, {"speaker", ints(rng, {}, 3)}, {"decoder_ids", ints(rng, {4}, 32)}};
}

StepInputs with_batch_axis(const std::map<std::string, Tensor>& inputs) {
  StepInputs out;
  for (auto [name, t] : inputs) {
    t.shape.insert(t.shape.begin(), 1);
    out.emplace(name, t);
  }
  return out;
}

float max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape, b.shape);
  float d = 0;
  for (int64_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(a.data<float>()[i] - b.data<float>()[i]));
  return d;
}
}  // namespace

TEST(ExtraInputs, TheManifestDeclaresThem) {
  NEED_PACKAGE();
  Runtime rt(package());
  const auto& in = rt.manifest().inputs;
  ASSERT_EQ(in.size(), 3u);
  EXPECT_EQ(in[0].name, "type_ids");
  EXPECT_EQ(in[0].shape.at(1).name, "segment");
  EXPECT_EQ(in[1].range, std::make_optional(std::make_pair<int64_t, int64_t>(0, 3)));
  EXPECT_EQ(in[2].shape.at(1).size, 4);
}

TEST(ExtraInputs, PoolPadsThemAndEqualsSteppingEachAlone) {
  NEED_PACKAGE();
  Runtime rt(package());
  const Manifest& m = rt.manifest();
  StreamPool pool = rt.pool(2);  // 3 streams -> chunks of 2 and 1
  std::vector<int64_t> ids;
  std::vector<Stream> alone;
  for (int i = 0; i < 3; ++i) ids.push_back(pool.open()), alone.push_back(rt.stream(1));
  std::mt19937 rng(3);
  std::uniform_int_distribution<int64_t> len(1, m.segment_max);
  for (int step = 0; step < 40; ++step) {
    std::map<int64_t, PoolInput> inputs;
    for (int i = 0; i < 3; ++i) {
      const int64_t seg = len(rng);
      PoolInput in;
      Tensor ids_t = ints(rng, {seg}, m.vocab_size);
      in.tokens.assign(ids_t.data<int64_t>(), ids_t.data<int64_t>() + seg);
      in.inputs = extras(rng, seg);
      inputs[ids[i]] = in;
    }
    auto results = pool.step(inputs);
    for (const auto& [id, in] : inputs) {
      auto single = alone[id].step(make_tokens(in.tokens, 1, static_cast<int64_t>(in.tokens.size())), Tensor(), Tensor(), with_batch_axis(in.inputs));
      for (const auto& o : m.outputs) {
        Tensor want = single.outputs.at(o.name);
        want.shape.erase(want.shape.begin());
        ASSERT_LE(max_abs_diff(results.at(id).at(o.name), want), 1e-5f) << o.name << " stream " << id << " step " << step;
      }
    }
  }
  for (int i = 0; i < 3; ++i) EXPECT_LE(max_abs_diff(pool.state(ids[i]).at("memory"), alone[i].state().at("memory")), 1e-5f);
}

TEST(ExtraInputs, BadInputsThrowTypedErrorsAndLeaveTheStream) {
  NEED_PACKAGE();
  Runtime rt(package());
  Stream s = rt.stream(2);
  std::mt19937 rng(1);
  const Tensor tokens = ints(rng, {2, 5}, rt.manifest().vocab_size);
  StepInputs good = {{"type_ids", ints(rng, {2, 5}, 2)}, {"speaker", ints(rng, {2}, 3)}, {"decoder_ids", ints(rng, {2, 4}, 32)}};
  s.step(tokens, Tensor(), Tensor(), good);
  const auto before = s.state();
  auto expect_refused = [&](StepInputs given, auto error_type, const std::string& text) {
    try {
      s.step(tokens, Tensor(), Tensor(), given);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const decltype(error_type)& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
    EXPECT_EQ(s.state().at("memory").bytes, before.at("memory").bytes);
    EXPECT_EQ(s.segments(), 1);
  };
  StepInputs missing = good;
  missing.erase("speaker");
  expect_refused(missing, InputError(""), "missing step inputs");
  StepInputs unknown = good;
  unknown.emplace("speakr", good.at("speaker"));
  expect_refused(unknown, InputError(""), "unknown step inputs");
  StepInputs out_of_range = good;
  out_of_range.at("speaker").data<int64_t>()[1] = 3;
  expect_refused(out_of_range, TokenRangeError(""), "'speaker' has a value outside its range: expected 0..2, got 3");
  StepInputs wrong_dtype = good;
  wrong_dtype.at("decoder_ids") = Tensor(DType::Int32, {2, 4});
  expect_refused(wrong_dtype, DTypeError(""), "'decoder_ids' has the wrong dtype: expected int64, got int32");
  StepInputs wrong_shape = good;
  wrong_shape.at("type_ids") = Tensor(DType::Int64, {2, 4});
  expect_refused(wrong_shape, InputError(""), "'type_ids' has the wrong shape: expected [2, 5], got [2, 4]");
  StreamPool pool = rt.pool();
  const int64_t id = pool.open();
  EXPECT_THROW(pool.step(std::map<int64_t, std::vector<int64_t>>{{id, {1, 2}}}), InputError);  // tokens alone: inputs missing
  EXPECT_EQ(pool.state(id).at("memory").bytes, Tensor(DType::Float32, {1, 16}).bytes);
}
