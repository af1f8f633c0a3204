// Runtime::Impl: the ONNX Runtime sessions of one package and the graph pipeline of one step.
// Shared (const) by the Runtime, its Streams and its StreamPools, so they outlive the Runtime.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "memx/runtime.hpp"

namespace memx {

struct Runtime::Impl {
  std::string package_dir;
  RuntimeOptions options;
  Manifest manifest;
  std::unique_ptr<Ort::SessionOptions> session_options;
  std::vector<std::unique_ptr<Ort::Session>> sessions;  // one per graph, in manifest order
  Ort::MemoryInfo cpu_memory{nullptr};
  Ort::MemoryInfo device_memory{nullptr};  // set for CUDA/TensorRT providers
  std::vector<std::string> providers;
  std::string custom_ops;  // what runs the memx ops
  std::string cpu_build_refused;  // why ONNX Runtime could not load the package's CPU build ("auto" then ran the graphs as exported); empty: it did not refuse
  std::map<std::string, std::string> graph_files;  // graph name -> the package file its session runs (a CPU build's or the graph as exported)
  std::map<std::string, const StateSpec*> state_by_output;
  // the decode graphs (manifest "decode"), loaded at open when the package has them
  std::unique_ptr<Ort::Session> decode_open_session, decode_session;

  Impl(const std::string& dir, RuntimeOptions opts);

  bool on_device() const { return static_cast<bool>(device_memory); }

  // Run every graph in order. `feeds` holds tokens, lengths, reset and the state inputs; with
  // states_on_device, state outputs stay in device memory (others always come to the host).
  // Returns every graph output by name. Throws BackendRunError on ONNX Runtime failures.
  std::map<std::string, Ort::Value> run_graphs(const std::map<std::string, const Ort::Value*>& feeds, bool states_on_device) const;

  // Run one decode graph on host tensors (every input of `graph` in `feeds`): its outputs, on the host.
  std::map<std::string, Tensor> run_decode_graph(const GraphSpec& graph, const std::map<std::string, const Tensor*>& feeds) const;

  // Check the new states (shape, finiteness) before a caller commits them.
  void check_new_states(const std::map<std::string, Ort::Value>& produced, int64_t batch) const;
};

namespace detail {
// A CPU Ort::Value over a host tensor's bytes (no copy: the tensor must outlive the value).
Ort::Value wrap(const Ort::MemoryInfo& cpu, const Tensor& tensor);
// A CPU Ort::Value owning a copy of the tensor.
Ort::Value owned_copy(const Tensor& tensor);
// Host copy of any tensor value (device memory is copied through the CUDA runtime).
Tensor to_host(const Ort::Value& value);

// The Runtime operations, usable by Streams and pools that outlive their Runtime object.
Runtime::StepResult run_step_host(const Runtime::Impl& rt, const Tensor& tokens, const Tensor& lengths, const Tensor& reset, const std::map<std::string, Tensor>& states,
                                  const StepInputs& inputs = {});
SnapshotData fresh_state(const Runtime::Impl& rt, int64_t batch);
std::vector<uint8_t> snapshot_of(const Runtime::Impl& rt, const SnapshotData& st);
SnapshotData restore_from(const Runtime::Impl& rt, const std::vector<uint8_t>& blob, int64_t batch);
}  // namespace detail

}  // namespace memx
