// Sampling and generation in libmemx (memx/runtimes/sampling.py and generation.py's twins). The
// generation tests use MEMX_TEST_PACKAGE (rmt-tiny: it has decode graphs).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>

#include "generation_fixtures.hpp"
#include "memx/memx.hpp"

using namespace memx;

namespace {
using memx_test::ids;
}  // namespace

TEST(Sampling, SplitMix64IsThePublishedGenerator) {
  SplitMix64 rng(0);
  EXPECT_EQ(rng.next_u64(), 0xE220A8397B1DCDAFull);
  SplitMix64 a(7), b(7);
  EXPECT_EQ(a.uniform(), static_cast<double>(b.next_u64() >> 11) / 9007199254740992.0);
}

TEST(Sampling, GreedyTopKAndTopPPickTheMostLikelyToken) {
  const float logits[] = {2.0f, 1.0f, 0.5f, 3.0f, -1.0f};
  SplitMix64 rng(1);
  EXPECT_EQ(sample(logits, 5, SamplingOptions{0.0, 0, 1.0}, rng), 3);
  for (uint64_t s = 0; s < 20; ++s) {
    SplitMix64 r(s);
    EXPECT_EQ(sample(logits, 5, SamplingOptions{1.0, 1, 1.0}, r), 3);
    SplitMix64 q(s);
    EXPECT_EQ(sample(logits, 5, SamplingOptions{1.0, 0, 0.6}, q), 3);  // token 3 alone holds >= 60% of the mass
  }
  std::vector<int> counts(5, 0);
  for (uint64_t s = 0; s < 4000; ++s) {
    SplitMix64 r(s);
    ++counts[sample(logits, 5, SamplingOptions{}, r)];
  }
  double z = 0;
  for (float l : logits) z += std::exp(l - 3.0);
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(counts[i] / 4000.0, std::exp(logits[i] - 3.0) / z, 0.03) << i;
}

TEST(Sampling, BadOptionsAreTypedErrors) {
  EXPECT_THROW((SamplingOptions{-1.0, 0, 1.0}.check()), InputError);
  EXPECT_THROW((SamplingOptions{1.0, -2, 1.0}.check()), InputError);
  EXPECT_THROW((SamplingOptions{1.0, 0, 0.0}.check()), InputError);
  EXPECT_THROW((SamplingOptions{std::nan(""), 0, 1.0}.check()), InputError);
}

TEST(Generation, DecodingTokenByTokenEqualsSteppingWholeSegments) {
  NEED_DECODE_PACKAGE(rt);
  const Manifest& m = rt.manifest();
  const int64_t g = 4, segments = 16;
  const std::vector<int64_t> tokens = ids(g * segments, m.vocab_size, 3);
  Stream gen = rt.stream(), ref = rt.stream();
  gen.set_segment_len(g);
  for (int64_t k = 0; k < segments; ++k) {
    const std::vector<int64_t> seg(tokens.begin() + k * g, tokens.begin() + (k + 1) * g);
    const Tensor logits = ref.step(make_tokens(seg, 1, g)).outputs.at("logits");  // [1, g, V]
    for (int64_t i = 0; i < g; ++i) {
      gen.append(make_tokens({seg[i]}, 1, 1));
      const Tensor next = gen.next_logits();
      for (int64_t v = 0; v < m.vocab_size; ++v) ASSERT_NEAR(next.data<float>()[v], logits.data<float>()[i * m.vocab_size + v], 1e-4);
    }
    ASSERT_EQ(gen.position()[0], 0);
    for (const auto& [name, want] : ref.state()) {
      const Tensor got = gen.state().at(name);
      for (int64_t j = 0; j < want.size(); ++j) ASSERT_NEAR(got.data<float>()[j], want.data<float>()[j], 1e-5) << name;
    }
  }
  EXPECT_EQ(gen.segments(), segments);
}

TEST(Generation, SeededGenerationRepeatsAndBadInputLeavesTheStreamUnchanged) {
  NEED_DECODE_PACKAGE(rt);
  const Manifest& m = rt.manifest();
  Stream a = rt.stream(), b = rt.stream();
  a.set_segment_len(8);
  b.set_segment_len(8);
  a.append(make_tokens(ids(11, m.vocab_size, 1), 1, 11));
  b.restore(a.snapshot());
  SamplingOptions so{0.9, 10, 0.95};
  const auto ra = a.generate(20, so, 5), rb = b.generate(20, so, 5);
  EXPECT_EQ(ra, rb);
  const std::vector<uint8_t> before = a.snapshot();
  EXPECT_THROW(a.append(make_tokens({m.vocab_size}, 1, 1)), TokenRangeError);
  EXPECT_THROW(a.append(Tensor(DType::Int64, {1, 0})), InputError);
  EXPECT_THROW(a.generate(-1), InputError);
  EXPECT_THROW(a.generate(3, SamplingOptions{1.0, 0, 2.0}), InputError);
  EXPECT_THROW(a.generate(3, so, 0, {m.vocab_size}), InputError);
  EXPECT_THROW(a.set_segment_len(m.decode->capacity + 1), InputError);
  EXPECT_EQ(a.snapshot(), before);
  Stream fresh = rt.stream();
  EXPECT_THROW(fresh.next_logits(), InputError);
  a.append(make_tokens({1, 2, 3}, 1, 3));
  EXPECT_THROW(a.step(make_tokens({1, 2}, 1, 2)), InputError);  // an open segment: flush first
  a.flush();
  EXPECT_EQ(a.position()[0], 0);
  EXPECT_NO_THROW(a.step(make_tokens({1, 2}, 1, 2)));
}

TEST(Generation, AStreamsMidSegmentSnapshotRestoresIntoAPoolStream) {
  NEED_DECODE_PACKAGE(rt);
  Stream s = rt.stream();
  s.set_segment_len(8);
  s.append(make_tokens({1, 2, 3}, 1, 3));
  StreamPool pool = rt.pool(4);
  pool.set_segment_len(8);
  const int64_t id = pool.open();
  pool.restore(id, s.snapshot());  // pools generate too (test_pool_generation.cc): the open segment comes along
  EXPECT_EQ(pool.position(id), 3);
  EXPECT_EQ(pool.snapshot(id), s.snapshot());
  EXPECT_THROW(pool.step({{id, {4}}}), InputError);  // an open segment: flush first
}
