// memx::Runtime / Stream / StreamPool: the C++ twin of memx/runtimes/base.py (DESIGN.md §5).
//
//   memx::Runtime rt("pkg.memx");                 // CPU; RuntimeOptions for threads, providers, kernels
//   memx::Stream s = rt.stream();                // zero state, reset on the first step
//   auto out = s.step(memx::make_tokens(ids, 1, 16));
//   std::vector<uint8_t> snap = s.snapshot();    // same bytes as Python's Stream.snapshot()
//   memx::StreamPool pool = rt.pool(64);          // many streams, one batched call per step
//   pool.append({{a, prompt_a}, {b, prompt_b}});   // generation: ragged prompts, then pool.generate({a, b}, 64, ...)
//
// Contract, as in Python: a step is transactional (on any error the stream's state is
// unchanged); bad input throws a typed memx::Error naming the expected and the actual value;
// nothing calls exit().
//
// Threading: one Runtime may be shared by any number of threads (its ONNX Runtime sessions
// are, and it holds no per-call state); a Stream or StreamPool belongs to one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "memx/errors.hpp"
#include "memx/manifest.hpp"
#include "memx/sampling.hpp"
#include "memx/snapshot.hpp"
#include "memx/tensor.hpp"

namespace memx {

struct RuntimeOptions {
  // "cpu" (default), "cuda" or "tensorrt": the ONNX Runtime execution provider. CUDA and
  // TensorRT need an ONNX Runtime build that has them (else BackendUnavailableError); with
  // them a Stream keeps its state on the device between steps (I/O binding).
  std::string device = "cpu";
  int device_id = 0;
  int intra_op_threads = 0;  // 0: ONNX Runtime's default
  int inter_op_threads = 0;
  std::string graph_optimization = "all";  // all | extended | basic | disable
  // libmemx_ops.so for the memx custom ops; empty: $MEMX_OPS_LIBRARY if set, else the ops run
  // their ONNX reference bodies (same results, slower)
  std::string custom_op_library;
  // The graphs `memx build --backend onnxruntime` rewrote into ONNX Runtime's fused CPU kernels
  // (manifest onnxruntime_cpu): "auto" runs them on device "cpu" (the graphs as exported where
  // this ONNX Runtime cannot load them), "on" always (else BackendUnavailableError), "off" never.
  // The Python runtime's cpu_build option decides alike, so both run the same graphs.
  std::string cpu_build = "auto";
  // ONNX Runtime's session.set_denormal_as_zero: masked attention on the CPU makes denormal
  // probabilities, up to 2x slower on x86; flushed, results move by less than 1e-38 per term.
  bool flush_denormals = false;
  bool verify_hashes = true;  // check each listed file's sha256 at open (false: sizes only; describe() says which)
  int log_severity = 3;        // ONNX Runtime log level (3: errors only)
};

// A package's extra step inputs by name (manifest "inputs"), each with its batch axis.
using StepInputs = std::map<std::string, Tensor>;

// One stream's input to StreamPool::step for a package with extra inputs: its tokens and each
// extra input without the batch axis ("segment" axes as long as the tokens).
struct PoolInput {
  std::vector<int64_t> tokens;
  std::map<std::string, Tensor> inputs;
};

struct StepOutputs {
  std::map<std::string, Tensor> outputs;  // by output name, batch axis first
};

class Runtime;

class Stream {
 public:
  Stream(Stream&&) noexcept;
  Stream& operator=(Stream&&) noexcept;
  ~Stream();

  // tokens int64 [B, S]; lengths int64 [B] (empty tensor: all S); reset bool [B] (empty: none);
  // inputs: the package's extra step inputs (manifest "inputs"), every one and no other.
  StepOutputs step(const Tensor& tokens, const Tensor& lengths = Tensor(), const Tensor& reset = Tensor(), const StepInputs& inputs = {});
  // rows start anew at the next step (their state is zeroed now); no rows: all
  void reset(const std::vector<int64_t>& rows = {});
  std::vector<uint8_t> snapshot() const;
  void restore(const std::vector<uint8_t>& blob);  // refuses (state unchanged) on any mismatch
  std::map<std::string, Tensor> state() const;     // host copies, (B, ...) each
  int64_t batch_size() const;
  int64_t segments() const;
  bool state_on_device() const;  // true once a step ran on a CUDA/TensorRT provider

  // --- generation (package with decode graphs; memx/runtimes/stream.py has the same calls) ---
  // Consume tokens int64 [B, n] (or [n] for batch 1): whole segments through the step graphs,
  // the rest into the decode cache; memory is written each time a segment fills. All or nothing.
  void append(const Tensor& tokens);
  // float32 [B, V]: logits of each row's next token (after append, or a step)
  Tensor next_logits() const;
  // Generate up to max_new_tokens: each round samples every running row's token (row b with
  // SplitMix64 seeded seed + b, as Python), appends it, calls callback(tokens) and records it;
  // stopped rows read -1. A row stops after one of stop_tokens.
  std::vector<std::vector<int64_t>> generate(int64_t max_new_tokens, const SamplingOptions& options = {}, uint64_t seed = 0,
                                             const std::vector<int64_t>& stop_tokens = {},
                                             const std::function<void(const std::vector<int64_t>&)>& callback = nullptr);
  void flush();  // write the memory of the partial segment now (a shorter segment)
  // tokens a segment holds before its memory is written: 1..decode capacity, 0 for the capacity
  void set_segment_len(int64_t segment_len);
  int64_t segment_len() const;
  std::vector<int64_t> position() const;  // tokens each row holds in its open segment

  struct Impl;

 private:
  friend class Runtime;
  explicit Stream(std::unique_ptr<Impl> impl);
  void append_counts(const Tensor& tokens, const std::vector<int64_t>& counts);
  Tensor next_logits_unchecked() const;
  std::unique_ptr<Impl> impl_;
};

class StreamPool {
 public:
  StreamPool(StreamPool&&) noexcept;
  StreamPool& operator=(StreamPool&&) noexcept;
  ~StreamPool();

  int64_t open();
  void close(int64_t id);
  void reset(int64_t id);
  bool contains(int64_t id) const;
  std::size_t size() const;
  std::vector<uint8_t> snapshot(int64_t id) const;
  void restore(int64_t id, const std::vector<uint8_t>& blob);
  std::map<std::string, Tensor> state(int64_t id) const;
  // Step each stream by its own 1-D segment (lengths may differ). Rows are padded to the
  // longest segment and masked by lengths; at most max_batch rows per call. Returns per stream
  // its outputs without the batch axis, cut to its own length. All or nothing.
  std::map<int64_t, std::map<std::string, Tensor>> step(const std::map<int64_t, std::vector<int64_t>>& inputs);
  // The same for a package with extra step inputs: each stream's tokens and extra inputs
  // ("segment" axes padded with the input's pad value).
  std::map<int64_t, std::map<std::string, Tensor>> step(const std::map<int64_t, PoolInput>& inputs);

  // --- generation (package with decode graphs; memx/runtimes/pool.py has the same calls) ---
  // A step refuses a stream with an open segment (flush it first). Snapshots of a generating
  // stream carry its open segment, in the bytes of Stream::snapshot().
  //
  // Append each stream's tokens (any number >= 1 each, ragged): whole segments through the step
  // graphs, the rest into its decode cache; memory is written each time a segment fills. At most
  // max_batch rows per call. All or nothing.
  void append(const std::map<int64_t, std::vector<int64_t>>& inputs);
  Tensor next_logits(int64_t id) const;  // float32 [V]: logits of the stream's next token (after append, or after a step)
  int64_t position(int64_t id) const;    // tokens the stream holds in its open segment
  void flush();                                 // write the open segments of every stream now (shorter segments)
  void flush(const std::vector<int64_t>& ids);  // ... of these streams
  // {stream id: token} of one round, for the streams still running
  using RoundCallback = std::function<void(const std::map<int64_t, int64_t>&)>;
  // Generate for streams ids together, up to max_new_tokens each: every round samples each
  // running stream's token, appends them all (batched), calls callback(round). A stream stops
  // after one of stop_tokens. Every stream samples from its own SplitMix64 seeded with `seed`, so
  // it draws what it draws alone (Stream::generate with that seed). Returns each stream's tokens.
  std::map<int64_t, std::vector<int64_t>> generate(const std::vector<int64_t>& ids, int64_t max_new_tokens, const SamplingOptions& options = {}, uint64_t seed = 0,
                                                   const std::vector<int64_t>& stop_tokens = {}, const RoundCallback& callback = nullptr);
  // The same with a seed per stream (streams not in `seeds`: seed 0).
  std::map<int64_t, std::vector<int64_t>> generate(const std::vector<int64_t>& ids, int64_t max_new_tokens, const SamplingOptions& options,
                                                   const std::map<int64_t, uint64_t>& seeds, const std::vector<int64_t>& stop_tokens = {},
                                                   const RoundCallback& callback = nullptr);
  // tokens a segment holds before its memory is written, for every stream: 1..decode capacity, 0 for the capacity
  void set_segment_len(int64_t segment_len);
  int64_t segment_len() const;

  struct Impl;

 private:
  friend class Runtime;
  explicit StreamPool(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class Runtime {
 public:
  explicit Runtime(const std::string& package_dir, RuntimeOptions options = {});
  Runtime(Runtime&&) noexcept;
  Runtime& operator=(Runtime&&) noexcept;
  ~Runtime();

  const Manifest& manifest() const;
  const std::string& package_dir() const;
  const RuntimeOptions& options() const;
  // what runs: device, providers of the sessions, what runs the memx ops
  std::map<std::string, std::string> describe() const;

  Stream stream(int64_t batch_size = 1) const;
  StreamPool pool(int64_t max_batch = 64) const;

  // One validated call of the step graphs on host tensors: returns outputs and new states
  // by state name; touches nothing. tokens int64 [B, S], lengths int64 [B], reset bool [B].
  struct StepResult {
    std::map<std::string, Tensor> outputs;
    std::map<std::string, Tensor> states;
  };
  StepResult run_step(const Tensor& tokens, const Tensor& lengths, const Tensor& reset, const std::map<std::string, Tensor>& states,
                      const StepInputs& inputs = {}) const;

  // Zero state with every row pending reset (the graph substitutes the learned initial state).
  SnapshotData fresh_state(int64_t batch) const;
  std::vector<uint8_t> snapshot_of(const SnapshotData& st) const;
  // decode + check model, batch (-1: any), state layout and finiteness
  SnapshotData restore_from(const std::vector<uint8_t>& blob, int64_t batch) const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

// Input checks shared by Stream and StreamPool (memx/runtimes/inputs.py).
void check_tokens(const Tensor& tokens, int64_t batch, const Manifest& manifest);
Tensor checked_lengths(const Tensor& lengths, int64_t batch, int64_t segment_len);
Tensor checked_reset(const Tensor& reset, int64_t batch);
constexpr int64_t kMaxBatch = int64_t(1) << 16;  // the batch dim's upper bound in exported graphs
// A batch size or pool capacity in 1..kMaxBatch (InputError naming `name` otherwise).
void check_count(int64_t value, const std::string& name);
// The extra step inputs: every declared one and no other, of its dtype and shape, in range.
void check_inputs(const StepInputs& inputs, const Manifest& manifest, int64_t batch, int64_t segment_len);

}  // namespace memx
