// The package manifest (memx.json), read and validated like memx/package/manifest.py:
// unknown format versions, missing or mistyped fields, unknown keys and inconsistent wiring
// are refused with a ManifestError naming the field, the expected and the actual value.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "memx/tensor.hpp"

namespace memx {

constexpr const char* kManifestFormat = "memx.package";
constexpr int kManifestFormatVersion = 1;
constexpr const char* kManifestFile = "memx.json";

// One dimension of a manifest shape: a fixed size or a symbolic name ("batch", "segment").
struct Dim {
  int64_t size = -1;  // -1 when symbolic
  std::string name;   // empty when fixed
  bool fixed() const { return name.empty(); }
};

struct TensorSpec {
  std::string name;
  DType dtype = DType::Float32;
  std::vector<Dim> shape;
};

struct GraphSpec {
  std::string name, file, role;
  std::vector<TensorSpec> inputs, outputs;
  std::map<std::string, std::string> consumes;  // input name -> graph that produced it earlier
};

struct StateSpec {
  std::string name;
  Shape dims;  // the fixed dims after the batch axis
  DType dtype = DType::Float32;
  std::string precision, input, output, graph;
};

// An extra step input beyond tokens/lengths/reset (memx.json "inputs"): fed by the caller each
// step; shape is batch, then fixed dims or "segment" (the tokens' length, padded with `pad` in
// pools); integer inputs carry their range [low, high).
struct InputSpec {
  std::string name;
  DType dtype = DType::Int64;
  std::vector<Dim> shape;
  std::optional<std::pair<int64_t, int64_t>> range;
  double pad = 0;
};

struct OutputSpec {
  std::string name;
  DType dtype = DType::Float32;
  std::vector<Dim> shape;
  std::optional<int> segment_axis;  // positions past lengths[b] along this axis are zero
  std::string graph;
};

// One tensor of the decode cache (memx.json "decode.cache"): batch axis 0, fixed dims after;
// `graph` is the decode graph that writes it ("decode_open": from the read memory, once a
// segment; "decode": the segment's tokens, slot by slot; runtimes start it from zeros).
struct CacheSpec {
  std::string name;
  Shape dims;  // the fixed dims after the batch axis
  DType dtype = DType::Float32;
  std::string input, output, graph;
};

// Token-by-token decoding inside a segment (memx.json "decode"):
//   decode_open(reset, *state_in) -> *cache_out of the "decode_open" entries
//   decode(tokens [B, new], lengths, position, *cache_in) -> logits [B, new, V], *cache_out of the "decode" entries
// Only the step graphs write memory: a runtime steps a segment's tokens when it is full.
struct DecodeSpec {
  int64_t capacity = 0;  // tokens one segment holds while decoding
  GraphSpec open, decode;
  std::vector<CacheSpec> cache;
};

struct FileEntry {
  int64_t bytes = 0;
  std::string sha256;
};

struct Manifest {
  std::string family;
  std::optional<std::string> preset;
  int64_t vocab_size = 0;
  int64_t segment_min = 1, segment_max = 1;
  std::vector<GraphSpec> graphs;  // run in this order each step
  std::vector<StateSpec> state;
  std::vector<OutputSpec> outputs;
  std::vector<InputSpec> inputs;  // extra step inputs, in the order the graphs take them
  std::string precision;
  std::map<std::string, FileEntry> files;
  std::vector<std::string> custom_op_domains;
  std::optional<std::string> weights_sha256;  // provenance.weights_sha256
  bool causal = false;
  std::optional<std::string> task;
  std::optional<DecodeSpec> decode;  // decode graphs (causal families)
  // onnxruntime_cpu.graphs (memx build --backend onnxruntime): graph name -> the file of that graph
  // rewritten into ONNX Runtime's fused CPU kernels, run on the CPU provider instead of graph.file
  std::map<std::string, std::string> cpu_build_graphs;
  std::string model_id;  // what snapshots are bound to: memx.json's model_id, written by Python at export; empty if absent

  // Parse and validate manifest text; `source` names the file in error messages.
  static Manifest parse(const std::string& json_text, const std::string& source = kManifestFile);
  static Manifest load(const std::string& package_dir);

  const StateSpec* find_state(const std::string& name) const;
  std::vector<std::string> step_inputs() const;  // tokens, lengths, reset, extra inputs, state inputs
};

}  // namespace memx
