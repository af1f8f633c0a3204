// Choosing the next token from logits, the twin of memx/runtimes/sampling.py: the same
// SplitMix64 draws and the same float64 arithmetic in the same order, so a seed gives the
// same tokens in Python and C++.
#pragma once

#include <cstdint>
#include <vector>

namespace memx {

// SplitMix64 (Steele, Lea & Flood 2014): 64-bit state, one add and a mix per draw.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed = 0) : state_(seed) {}
  uint64_t next_u64();
  double uniform();  // [0, 1) from the top 53 bits

 private:
  uint64_t state_;
};

// temperature 0 is greedy (argmax, lowest id on ties); top_k 0 keeps every token; top_p 1 keeps all mass.
struct SamplingOptions {
  double temperature = 1.0;
  int64_t top_k = 0;
  double top_p = 1.0;
  void check() const;  // InputError naming the expected and actual value
};

// One token id from `vocab` float32 logits. Greedy draws no random number.
int64_t sample(const float* logits, int64_t vocab, const SamplingOptions& options, SplitMix64& rng);

}  // namespace memx
