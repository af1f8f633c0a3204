// StreamPool::Impl, shared by pool.cc (steps, snapshots) and pool_generation.cc (append, generate).
#pragma once

#include <map>
#include <utility>
#include <vector>

#include "memx/runtime.hpp"
#include "runtime_impl.hpp"
#include "stream_impl.hpp"

namespace memx {

struct StreamPool::Impl {
  std::shared_ptr<const Runtime::Impl> rt;
  int64_t max_batch = 64;
  std::map<int64_t, SnapshotData> slots;      // batch-1 step state per open stream (no decode.* tensors)
  std::map<int64_t, detail::DecodeRows> gen;  // batch-1 generation rows, once a stream appends
  // float32 [1, V]: last real logits of a stream's last step while it has no generation rows
  // (package with decode graphs; Stream::Impl::step_logits), carried into its rows when it appends
  std::map<int64_t, Tensor> step_logits;
  int64_t segment_len = 0;                    // generation segment length (0: the decode capacity)
  int64_t next_id = 0;
  std::map<int64_t, StepInputs> checked;  // step: each stream's extra inputs with a batch axis of 1, checked

  SnapshotData& slot(int64_t id);
  const SnapshotData& slot(int64_t id) const;
  // a step would skip the memory write of the stream's open (generated) segment
  void check_no_open_segment(int64_t id) const;
  // last: each stream's float32 [1, V] logits of its last real token (package with decode graphs)
  void run_chunk(const std::vector<int64_t>& chunk, const std::map<int64_t, PoolInput>& inputs, std::map<int64_t, std::map<std::string, Tensor>>& results,
                 std::map<int64_t, SnapshotData>& updates, std::map<int64_t, Tensor>& last) const;
  // the stream's next-token logits (float32 [1, V]) as held, or nullptr
  const Tensor* logits_of(int64_t id) const;
  // after a committed step: the stream's last real logits predict its next token (Stream::step)
  void keep_step_logits(int64_t id, Tensor last);

  // generation (pool_generation.cc): append checked tokens to streams, in this order, all or nothing
  using Tokens = std::vector<std::pair<int64_t, std::vector<int64_t>>>;
  void append(const Tokens& tokens, int64_t segment_len);
};

}  // namespace memx
