// Sampling: candidates sorted by logit (ties: lower id first), cut to top_k, probabilities
// exp((x - max) / T) summed in that order, cut to the smallest prefix whose mass reaches top_p,
// and the first token whose running sum exceeds u times the kept mass (memx/runtimes/sampling.py).
#include "memx/sampling.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "memx/errors.hpp"

namespace memx {

uint64_t SplitMix64::next_u64() {
  state_ += 0x9E3779B97F4A7C15ull;
  uint64_t z = state_;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double SplitMix64::uniform() { return static_cast<double>(next_u64() >> 11) * (1.0 / 9007199254740992.0); }

void SamplingOptions::check() const {
  if (!(temperature >= 0) || !std::isfinite(temperature))
    throw InputError("temperature must be a finite number >= 0", ">= 0 (0: greedy)", std::to_string(temperature));
  if (top_k < 0) throw InputError("top_k must be an int >= 0", ">= 0 (0: no cut)", std::to_string(top_k));
  if (!(top_p > 0 && top_p <= 1)) throw InputError("top_p must be in (0, 1]", "0 < top_p <= 1", std::to_string(top_p));
}

int64_t sample(const float* logits, int64_t vocab, const SamplingOptions& options, SplitMix64& rng) {
  if (options.temperature == 0) return std::max_element(logits, logits + vocab) - logits;  // the first maximum
  std::vector<int64_t> order(static_cast<std::size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return -static_cast<double>(logits[a]) < -static_cast<double>(logits[b]); });
  if (options.top_k > 0 && options.top_k < vocab) order.resize(static_cast<std::size_t>(options.top_k));
  const double top = logits[order[0]], t = options.temperature;
  std::vector<double> probs(order.size());
  for (std::size_t i = 0; i < order.size(); ++i) probs[i] = std::exp((static_cast<double>(logits[order[i]]) - top) / t);
  double total = 0.0;
  for (double p : probs) total += p;
  std::size_t kept = probs.size();
  if (options.top_p < 1) {
    double mass = 0.0;
    for (std::size_t i = 0; i < probs.size(); ++i) {  // the smallest prefix whose mass reaches top_p
      mass += probs[i];
      if (mass >= options.top_p * total) {
        kept = i + 1;
        break;
      }
    }
  }
  double mass = 0.0;
  for (std::size_t i = 0; i < kept; ++i) mass += probs[i];
  const double target = rng.uniform() * mass;
  double running = 0.0;
  for (std::size_t i = 0; i < kept; ++i) {
    running += probs[i];
    if (running > target) return order[i];
  }
  return order[kept - 1];  // rounding left the target at the very end
}

}  // namespace memx
