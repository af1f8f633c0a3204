// What the generation tests share (test_generation.cc, test_pool_generation.cc): the package
// under test (MEMX_TEST_PACKAGE, rmt-tiny: it has decode graphs), a skip when it is absent or
// has no decode graphs, and seeded random token ids.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>

#include "memx/memx.hpp"

namespace memx_test {

inline const char* package() { return std::getenv("MEMX_TEST_PACKAGE"); }

// n ids uniform in [0, vocab), the same for the same seed
inline std::vector<int64_t> ids(int64_t n, int64_t vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int64_t> id(0, vocab - 1);
  std::vector<int64_t> v(n);
  for (auto& x : v) x = id(rng);
  return v;
}

}  // namespace memx_test

// Opens MEMX_TEST_PACKAGE as `rt`, or skips the test saying what is missing.
#define NEED_DECODE_PACKAGE(rt)                                                                                        \
  if (!memx_test::package()) GTEST_SKIP() << "needs MEMX_TEST_PACKAGE (a memx package; `make cpp-test` exports one)"; \
  memx::Runtime rt(memx_test::package());                                                                              \
  if (!rt.manifest().decode) GTEST_SKIP() << "MEMX_TEST_PACKAGE has no decode graphs"
