// StreamPool generation (memx/runtimes/pool.py's twin): ragged streams batched in chunks generate
// exactly what each stream generates alone with memx::Stream, snapshots of generating pool
// streams continue anywhere, and bad input changes no stream. Uses MEMX_TEST_PACKAGE (rmt-tiny:
// it has decode graphs).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <set>

#include "generation_fixtures.hpp"
#include "memx/memx.hpp"

using namespace memx;

namespace {
using memx_test::ids;

constexpr int64_t kSegment = 8;  // generation segment length: prompts and generations cross several

// 32 prompts of lengths 1..37: some shorter than a segment, some several segments long
std::vector<std::vector<int64_t>> ragged_prompts(int64_t vocab) {
  std::vector<std::vector<int64_t>> prompts;
  for (int i = 0; i < 32; ++i) prompts.push_back(ids(1 + (i * 7) % 37, vocab, 100 + i));
  return prompts;
}

Stream alone_with(const Runtime& rt, const std::vector<int64_t>& prompt) {
  Stream s = rt.stream();
  s.set_segment_len(kSegment);
  s.append(make_tokens(prompt, 1, static_cast<int64_t>(prompt.size())));
  return s;
}

// a batch-1 Stream's rounds as one stream's tokens
std::vector<int64_t> column(const std::vector<std::vector<int64_t>>& rounds) {
  std::vector<int64_t> out;
  for (const auto& r : rounds) out.push_back(r[0]);
  return out;
}

struct Pool {
  StreamPool pool;
  std::vector<int64_t> id;
};

Pool pool_with(const Runtime& rt, const std::vector<std::vector<int64_t>>& prompts, int64_t max_batch) {
  Pool p{rt.pool(max_batch), {}};
  p.pool.set_segment_len(kSegment);
  std::map<int64_t, std::vector<int64_t>> inputs;
  for (const auto& prompt : prompts) {
    p.id.push_back(p.pool.open());
    inputs[p.id.back()] = prompt;
  }
  p.pool.append(inputs);
  return p;
}

// the step state (the manifest's state tensors), byte for byte
void expect_same_state(const Runtime& rt, const std::map<std::string, Tensor>& got, const std::map<std::string, Tensor>& want) {
  for (const auto& s : rt.manifest().state) EXPECT_EQ(got.at(s.name).bytes, want.at(s.name).bytes) << s.name;
}

// float32 tensors of one shape within atol: rows padded to another length in a pool's batched
// call sum in another order than a stream alone, so the last bits may differ
void expect_close(const Tensor& got, const Tensor& want, float atol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;  // a pool row's (S, V) is a stream's (1, S, V)
  ASSERT_EQ(got.dtype, DType::Float32) << what;
  float worst = 0.0f;
  for (int64_t k = 0; k < got.size(); ++k) worst = std::max(worst, std::abs(got.data<float>()[k] - want.data<float>()[k]));
  EXPECT_LE(worst, atol) << what;
}

void expect_close_state(const Runtime& rt, const std::map<std::string, Tensor>& got, const std::map<std::string, Tensor>& want) {
  for (const auto& s : rt.manifest().state) expect_close(got.at(s.name), want.at(s.name), 1e-5f, s.name);
}

std::vector<std::vector<uint8_t>> snapshots(const StreamPool& pool, const std::vector<int64_t>& id) {
  std::vector<std::vector<uint8_t>> out;
  for (int64_t i : id) out.push_back(pool.snapshot(i));
  return out;
}
}  // namespace

TEST(PoolGeneration, RaggedStreamsInChunksGenerateWhatEachStreamGeneratesAlone) {
  NEED_DECODE_PACKAGE(rt);
  const int64_t v = rt.manifest().vocab_size;
  const auto prompts = ragged_prompts(v);
  const SamplingOptions greedy{0.0, 0, 1.0}, sampled{0.9, 12, 0.95};
  // greedy: stop at tokens the first streams emit alone, at different depths, so streams finish at different times
  std::vector<int64_t> greedy_stops;
  for (int i = 0; i < 3; ++i) greedy_stops.push_back(column(alone_with(rt, prompts[i]).generate(20, greedy))[5 + 6 * i]);
  const std::vector<int64_t> sampled_stops = {3, 17, 42};
  for (bool sample : {false, true}) {
    const SamplingOptions& so = sample ? sampled : greedy;
    const std::vector<int64_t>& stops = sample ? sampled_stops : greedy_stops;
    Pool p = pool_with(rt, prompts, 5);  // 32 streams: chunks of 5
    std::map<int64_t, uint64_t> seeds;
    for (std::size_t i = 0; i < prompts.size(); ++i) seeds[p.id[i]] = 7 + 3 * i;
    int64_t rounds = 0;
    auto first = p.pool.generate(p.id, 24, so, seeds, stops, [&](const std::map<int64_t, int64_t>&) { ++rounds; });
    // then more tokens for every third stream alone: different max_new_tokens per stream
    std::vector<int64_t> more;
    for (std::size_t i = 0; i < prompts.size(); i += 3) more.push_back(p.id[i]);
    auto second = p.pool.generate(more, 13, so, 5, {});
    std::set<std::size_t> lengths;
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      Stream alone = alone_with(rt, prompts[i]);
      ASSERT_EQ(p.pool.next_logits(p.id[i]).shape, Shape{v});
      ASSERT_EQ(first.at(p.id[i]), column(alone.generate(24, so, seeds[p.id[i]], stops))) << "stream " << i << (sample ? " sampled" : " greedy");
      if (i % 3 == 0) ASSERT_EQ(second.at(p.id[i]), column(alone.generate(13, so, 5))) << "stream " << i;
      EXPECT_EQ(p.pool.position(p.id[i]), alone.position()[0]);
      EXPECT_EQ(p.pool.snapshot(p.id[i]), alone.snapshot()) << "stream " << i;  // the same bytes: state, open segment, logits
      lengths.insert(first.at(p.id[i]).size());
    }
    EXPECT_GT(lengths.size(), 1u) << "every stream ran the same number of tokens: the stop tokens never fired";
    EXPECT_EQ(rounds, static_cast<int64_t>(std::max_element(first.begin(), first.end(), [](auto& a, auto& b) { return a.second.size() < b.second.size(); })->second.size()));
  }
}

TEST(PoolGeneration, FlushWritesOpenSegmentsAndStepsNeedIt) {
  NEED_DECODE_PACKAGE(rt);
  const int64_t v = rt.manifest().vocab_size;
  const auto prompts = ragged_prompts(v);
  Pool p = pool_with(rt, {prompts[2], prompts[3], prompts[5]}, 2);  // open segments of 7, 6 and 4 tokens
  std::vector<Stream> alone;
  for (int i : {2, 3, 5}) alone.push_back(alone_with(rt, prompts[i]));
  const int64_t a = p.id[0];
  ASSERT_GT(p.pool.position(a), 0);
  try {
    p.pool.step({{a, {1, 2}}});
    FAIL() << "a step over an open segment must be refused";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), "stream " + std::to_string(a) + " holds a partial segment from append/generate: a step would skip its memory write: expected an empty "
                                     "segment (position 0), got position " + std::to_string(p.pool.position(a)) + " (pool.flush([sid]) first)");
  }
  p.pool.flush();  // one batched step over open segments of 7, 6 and 4 tokens (padded to 7)
  for (std::size_t i = 0; i < alone.size(); ++i) {
    alone[i].flush();
    EXPECT_EQ(p.pool.position(p.id[i]), 0);
    expect_close_state(rt, p.pool.state(p.id[i]), alone[i].state());
  }
  const auto out = p.pool.step({{a, {1, 2}}});  // after a flush, a step goes on from the written memory
  const auto want = alone[0].step(make_tokens({1, 2}, 1, 2)).outputs.at("logits");
  expect_close(out.at(a).at("logits"), want, 1e-4f, "logits");
  for (std::size_t i = 0; i < alone.size(); ++i) expect_close_state(rt, p.pool.state(p.id[i]), alone[i].state());
}

TEST(PoolGeneration, AMidSegmentSnapshotContinuesIdenticallyInAFreshPoolAndInAStream) {
  NEED_DECODE_PACKAGE(rt);
  const int64_t v = rt.manifest().vocab_size;
  const SamplingOptions so{0.9, 12, 0.95};
  Pool p = pool_with(rt, {ids(kSegment + 2, v, 1), ids(3, v, 2)}, 4);
  p.pool.generate(p.id, 1, so, 11);  // three tokens into its second segment
  const int64_t a = p.id[0];
  ASSERT_EQ(p.pool.position(a), 3);
  const std::vector<uint8_t> snap = p.pool.snapshot(a);

  StreamPool fresh = rt.pool(4);
  fresh.set_segment_len(kSegment);
  fresh.open();  // another stream first: the restored stream's id differs from the original's
  const int64_t b = fresh.open();
  fresh.restore(b, snap);
  EXPECT_EQ(fresh.position(b), 3);
  EXPECT_EQ(fresh.snapshot(b), snap);
  Stream s = rt.stream();
  s.set_segment_len(kSegment);
  s.restore(snap);

  const auto want = p.pool.generate({a}, 3 * kSegment, so, 99).at(a);
  EXPECT_EQ(fresh.generate({b}, 3 * kSegment, so, 99).at(b), want);
  EXPECT_EQ(column(s.generate(3 * kSegment, so, 99)), want);
  EXPECT_EQ(fresh.snapshot(b), p.pool.snapshot(a));
  EXPECT_EQ(s.snapshot(), p.pool.snapshot(a));

  // and the other way: a Stream's mid-segment snapshot restores into a pool stream
  s.append(make_tokens({1, 2}, 1, 2));
  fresh.restore(b, s.snapshot());
  EXPECT_EQ(fresh.position(b), s.position()[0]);
  EXPECT_EQ(fresh.generate({b}, 5, so, 4).at(b), column(s.generate(5, so, 4)));
  fresh.reset(b);  // a reset stream starts over: no open segment, no logits
  EXPECT_EQ(fresh.position(b), 0);
  EXPECT_THROW(fresh.next_logits(b), InputError);
}

TEST(PoolGeneration, BadInputThrowsTypedErrorsAndChangesNoStream) {
  NEED_DECODE_PACKAGE(rt);
  const Manifest& m = rt.manifest();
  const int64_t v = m.vocab_size;
  // open segments of 3, 3, 2, 1 and 6 tokens (segments of 8), in chunks of 2
  Pool p = pool_with(rt, {ids(3, v, 1), ids(11, v, 2), ids(2, v, 3), ids(9, v, 4), ids(6, v, 5)}, 2);
  const int64_t a = p.id[0], b = p.id[1], last = p.id[4];
  const int64_t never = p.pool.open(), closed = p.pool.open();
  p.id.push_back(never);
  p.pool.close(closed);
  const auto before = snapshots(p.pool, p.id);
  auto unchanged = [&] { EXPECT_EQ(snapshots(p.pool, p.id), before); };

  EXPECT_THROW(p.pool.append({{a, {1}}, {b, {}}}), InputError);  // empty prompt
  try {
    p.pool.append({{a, {1, 2}}, {b, {4, v, -1, v + 5}}});
    FAIL() << "a token outside the vocabulary must be refused";
  } catch (const TokenRangeError& e) {  // the smallest id if negative, else the largest (Python's choice)
    EXPECT_EQ(std::string(e.what()), "token id outside the vocabulary: expected 0.." + std::to_string(v - 1) + ", got -1 at [row, position] [0, 2]");
  }
  EXPECT_THROW(p.pool.append({{a, {1}}, {closed, {1}}}), InputError);
  EXPECT_THROW(p.pool.append({{a, {1}}, {12345, {1}}}), InputError);
  EXPECT_THROW(p.pool.generate({a, b}, -1), InputError);
  EXPECT_THROW(p.pool.generate({a, closed}, 3), InputError);
  EXPECT_THROW(p.pool.generate({a, b, a}, 3), InputError);
  EXPECT_THROW(p.pool.generate({a, never}, 3), InputError);  // no logits: nothing appended yet
  EXPECT_THROW(p.pool.generate({a}, 3, SamplingOptions{1.0, 0, 2.0}), InputError);
  EXPECT_THROW(p.pool.generate({a}, 3, {}, 0, {v}), InputError);
  EXPECT_THROW(p.pool.next_logits(never), InputError);
  EXPECT_THROW(p.pool.next_logits(closed), InputError);
  EXPECT_THROW(p.pool.position(closed), InputError);
  EXPECT_THROW(p.pool.flush({a, closed}), InputError);
  EXPECT_THROW(p.pool.step({{b, {1}}, {a, {1, 2}}}), InputError);  // open segments
  EXPECT_THROW(p.pool.set_segment_len(m.decode->capacity + 1), InputError);
  EXPECT_THROW(p.pool.set_segment_len(-1), InputError);
  EXPECT_EQ(p.pool.segment_len(), kSegment);
  unchanged();

  // a failure in a later chunk, after the first chunk ran: no stream changes
  p.pool.set_segment_len(4);  // the last stream holds 6 > 4 tokens in its open segment
  try {
    p.pool.append({{a, {1}}, {b, {2}}, {p.id[2], {3}}, {p.id[3], {4}}, {last, {5}}});
    FAIL() << "a partial segment longer than the segment length must be refused";
  } catch (const InputError& e) {
    EXPECT_EQ(e.actual(), "[6]");
  }
  p.pool.set_segment_len(kSegment);
  unchanged();
  EXPECT_EQ(p.pool.generate({}, 5).size(), 0u);
  EXPECT_EQ(p.pool.generate({a, b}, 0).at(a).size(), 0u);
  unchanged();
}

TEST(PoolGeneration, SeedsAreKeptPerStream) {
  NEED_DECODE_PACKAGE(rt);
  const int64_t v = rt.manifest().vocab_size;
  const SamplingOptions so{1.0, 0, 1.0};
  const std::vector<int64_t> prompt = ids(4, v, 8);
  Pool one = pool_with(rt, {prompt, prompt, prompt}, 8);
  // one seed for all: identical streams draw identical tokens (each from its own generator, not seed + row)
  auto same = one.pool.generate(one.id, 12, so, 21);
  EXPECT_EQ(same.at(one.id[0]), same.at(one.id[1]));
  EXPECT_EQ(same.at(one.id[0]), column(alone_with(rt, prompt).generate(12, so, 21)));
  // a seed map: streams not named sample with seed 0
  Pool two = pool_with(rt, {prompt, prompt}, 8);
  auto mapped = two.pool.generate(two.id, 12, so, std::map<int64_t, uint64_t>{{two.id[0], 21}});
  EXPECT_EQ(mapped.at(two.id[0]), same.at(one.id[0]));
  EXPECT_EQ(mapped.at(two.id[1]), column(alone_with(rt, prompt).generate(12, so, 0)));
}

TEST(PoolGeneration, AStepLeavesTheNextTokenLogitsAsStreamStepDoes) {
  NEED_DECODE_PACKAGE(rt);
  const Manifest& m = rt.manifest();
  const int64_t v = m.vocab_size;
  const int64_t longest = std::min<int64_t>(m.segment_max, 3 * kSegment);
  std::vector<std::vector<int64_t>> prompts;  // ragged: each row's own last token gives its logits
  for (int i = 0; i < 7; ++i) prompts.push_back(ids(1 + (i * 5) % longest, v, 300 + i));
  const SamplingOptions greedy{0.0, 0, 1.0}, sampled{0.9, 12, 0.95};
  // the stream alone with the same history: its row as the pool's call padded it (to the longest
  // prompt of its chunk of 3), masked by its length; the same bytes as the pool's row
  auto stepped_alone = [&](std::size_t i) {
    int64_t width = 0;
    for (std::size_t j = i - i % 3; j < std::min(prompts.size(), i - i % 3 + 3); ++j) width = std::max<int64_t>(width, static_cast<int64_t>(prompts[j].size()));
    std::vector<int64_t> row = prompts[i];
    row.resize(width, 0);
    Stream s = rt.stream();
    s.set_segment_len(kSegment);
    s.step(make_tokens(row, 1, width), make_lengths({static_cast<int64_t>(prompts[i].size())}));
    return s;
  };
  for (bool sample : {false, true}) {
    const SamplingOptions& so = sample ? sampled : greedy;
    StreamPool pool = rt.pool(3);  // 7 streams: chunks of 3
    pool.set_segment_len(kSegment);
    std::vector<int64_t> id;
    std::map<int64_t, std::vector<int64_t>> inputs;
    for (const auto& prompt : prompts) {
      id.push_back(pool.open());
      inputs[id.back()] = prompt;
    }
    pool.step(inputs);
    std::map<int64_t, uint64_t> seeds;
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      seeds[id[i]] = 40 + i;
      Stream alone = stepped_alone(i);
      EXPECT_EQ(pool.next_logits(id[i]).bytes, alone.next_logits().bytes) << "stream " << i;
      EXPECT_EQ(pool.position(id[i]), 0);
      EXPECT_EQ(pool.snapshot(id[i]), alone.snapshot()) << "stream " << i;  // a stream that only stepped: the plain snapshot
    }
    const auto got = pool.generate(id, 3 * kSegment, so, seeds);
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      Stream alone = stepped_alone(i);
      EXPECT_EQ(got.at(id[i]), column(alone.generate(3 * kSegment, so, seeds[id[i]]))) << "stream " << i << (sample ? " sampled" : " greedy");
      EXPECT_EQ(pool.snapshot(id[i]), alone.snapshot()) << "stream " << i;
    }
  }

  // a stream that generates already: flushed, stepped, generating again (its generation rows take the step's logits)
  Pool p = pool_with(rt, {prompts[3]}, 2);
  Stream alone = alone_with(rt, prompts[3]);
  const int64_t a = p.id[0];
  p.pool.generate({a}, 5, sampled, 2);
  alone.generate(5, sampled, 2);
  p.pool.flush({a});
  alone.flush();
  p.pool.step({{a, {4, 5, 6}}});
  alone.step(make_tokens({4, 5, 6}, 1, 3));
  EXPECT_EQ(p.pool.next_logits(a).bytes, alone.next_logits().bytes);
  EXPECT_EQ(p.pool.snapshot(a), alone.snapshot());
  EXPECT_EQ(p.pool.generate({a}, 2 * kSegment, sampled, 9).at(a), column(alone.generate(2 * kSegment, sampled, 9)));
  EXPECT_EQ(p.pool.snapshot(a), alone.snapshot());

  // the logits of a step go with the stream's state: a reset, a restore or a close drops them
  const int64_t b = p.pool.open();
  p.pool.step({{b, {1, 2, 3}}});
  const std::vector<uint8_t> plain = p.pool.snapshot(b);
  p.pool.reset(b);
  EXPECT_THROW(p.pool.next_logits(b), InputError);
  p.pool.step({{b, {1, 2, 3}}});
  p.pool.restore(b, plain);  // a plain snapshot holds no logits (as Stream::restore)
  EXPECT_THROW(p.pool.next_logits(b), InputError);
}

TEST(PoolGeneration, FlushRefusesAStreamGivenTwiceAndChangesNoStream) {
  NEED_DECODE_PACKAGE(rt);
  const int64_t v = rt.manifest().vocab_size;
  Pool p = pool_with(rt, {ids(3, v, 1), ids(5, v, 2)}, 2);  // open segments of 3 and 5 tokens
  const int64_t a = p.id[0], b = p.id[1];
  const auto before = snapshots(p.pool, p.id);
  try {
    p.pool.flush({a, b, a});
    FAIL() << "a stream given twice must be refused (as pool.generate, Python's pool.flush)";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), "a stream is given twice to pool.flush: expected each stream once, got [" + std::to_string(a) + ", " + std::to_string(b) + ", " +
                                         std::to_string(a) + "]");
  }
  EXPECT_EQ(snapshots(p.pool, p.id), before);
  p.pool.flush({a, b});
  EXPECT_EQ(p.pool.position(a), 0);
  EXPECT_EQ(p.pool.position(b), 0);
}
