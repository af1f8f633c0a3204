// Runtime: opens a package (manifest, file checks, sessions, custom-op library) and runs the
// graph pipeline of one step. Stream and StreamPool (stream.cc, pool.cc) build on run_graphs.
#include "memx/runtime.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <set>

#include "device_copy.hpp"
#include "onnx_scan.hpp"
#include "package.hpp"
#include "runtime_impl.hpp"
#include "stream_impl.hpp"

namespace memx {

namespace {

Ort::Env& ort_env(int severity) {
  static std::once_flag once;
  static std::unique_ptr<Ort::Env> env;
  std::call_once(once, [&] { env = std::make_unique<Ort::Env>(static_cast<OrtLoggingLevel>(std::clamp(severity, 0, 4)), "memx"); });
  return *env;
}

ONNXTensorElementDataType onnx_type(DType dtype) {
  switch (dtype) {
    case DType::Float32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    case DType::Float16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
    case DType::BFloat16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16;
    case DType::Int64: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
    case DType::Int32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
    case DType::Int8: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;
    case DType::UInt8: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    case DType::Bool: return ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL;
  }
  throw InternalError("unknown DType");
}

DType memx_type(ONNXTensorElementDataType type) {
  for (DType d : {DType::Float32, DType::Float16, DType::BFloat16, DType::Int64, DType::Int32, DType::Int8, DType::UInt8, DType::Bool})
    if (onnx_type(d) == type) return d;
  throw BackendRunError("graph produced a tensor of an unsupported element type", "float32/float16/bfloat16/int64/int32/int8/uint8/bool", "ONNX type " + std::to_string(type));
}

std::string join(const std::vector<std::string>& items) {
  std::string s = "[";
  for (std::size_t i = 0; i < items.size(); ++i) s += (i ? ", '" : "'") + items[i] + "'";
  return s + "]";
}

void append_provider(Ort::SessionOptions& so, const RuntimeOptions& options, std::vector<std::string>& providers) {
  const std::vector<std::string> available = Ort::GetAvailableProviders();
  auto need = [&](const std::string& name) {
    if (std::find(available.begin(), available.end(), name) == available.end())
      throw BackendUnavailableError("execution provider for device '" + options.device + "' is not in this ONNX Runtime build", name, "available providers " + join(available),
                                    "link libmemx against an ONNX Runtime built with CUDA/TensorRT (onnxruntime-gpu, JetPack)");
  };
  const std::string id = std::to_string(options.device_id);
  const OrtApi& api = Ort::GetApi();
  if (options.device == "tensorrt") {
    need("TensorrtExecutionProvider");
    OrtTensorRTProviderOptionsV2* trt = nullptr;
    Ort::ThrowOnError(api.CreateTensorRTProviderOptions(&trt));
    std::unique_ptr<OrtTensorRTProviderOptionsV2, decltype(api.ReleaseTensorRTProviderOptions)> guard(trt, api.ReleaseTensorRTProviderOptions);
    const char* keys[] = {"device_id"};
    const char* values[] = {id.c_str()};
    Ort::ThrowOnError(api.UpdateTensorRTProviderOptions(trt, keys, values, 1));
    so.AppendExecutionProvider_TensorRT_V2(*trt);
    providers.push_back("TensorrtExecutionProvider");
  }
  if (options.device == "cuda" || options.device == "tensorrt") {
    need("CUDAExecutionProvider");
    OrtCUDAProviderOptionsV2* cuda = nullptr;
    Ort::ThrowOnError(api.CreateCUDAProviderOptions(&cuda));
    std::unique_ptr<OrtCUDAProviderOptionsV2, decltype(api.ReleaseCUDAProviderOptions)> guard(cuda, api.ReleaseCUDAProviderOptions);
    const char* keys[] = {"device_id"};
    const char* values[] = {id.c_str()};
    Ort::ThrowOnError(api.UpdateCUDAProviderOptions(cuda, keys, values, 1));
    so.AppendExecutionProvider_CUDA_V2(*cuda);
    providers.push_back("CUDAExecutionProvider");
  }
  providers.push_back("CPUExecutionProvider");
}

GraphOptimizationLevel optimization_level(const std::string& level) {
  if (level == "all") return GraphOptimizationLevel::ORT_ENABLE_ALL;
  if (level == "extended") return GraphOptimizationLevel::ORT_ENABLE_EXTENDED;
  if (level == "basic") return GraphOptimizationLevel::ORT_ENABLE_BASIC;
  if (level == "disable") return GraphOptimizationLevel::ORT_DISABLE_ALL;
  throw InputError("unknown graph optimization level", "one of ['all', 'extended', 'basic', 'disable']", level);
}

// The kernel variant a memx custom-op library chose on this CPU ("avx2+fma", "neon", "portable"):
// the tail of its MemxOpsDescribe() ("memx 1: LocalGlobalAttention (...; kernel neon)"); empty
// for a library without it. ONNX Runtime has loaded the library already: RTLD_NOLOAD finds it.
std::string kernel_variant(const std::string& library) {
  void* handle = dlopen(library.c_str(), RTLD_LAZY | RTLD_NOLOAD);
  if (handle == nullptr) return "";
  using Describe = const char* (*)();
  const auto describe = reinterpret_cast<Describe>(dlsym(handle, "MemxOpsDescribe"));
  const std::string text = describe != nullptr ? describe() : "";
  dlclose(handle);
  const auto at = text.rfind("kernel ");
  const auto end = text.rfind(')');
  if (at == std::string::npos || end == std::string::npos || end < at + 7) return "";
  return text.substr(at + 7, end - at - 7);
}

}  // namespace

namespace detail {

Ort::Value wrap(const Ort::MemoryInfo& cpu, const Tensor& tensor) {
  return Ort::Value::CreateTensor(cpu, const_cast<uint8_t*>(tensor.bytes.data()), tensor.nbytes(), tensor.shape.data(), tensor.shape.size(), onnx_type(tensor.dtype));
}

Ort::Value owned_copy(const Tensor& tensor) {
  Ort::AllocatorWithDefaultOptions allocator;
  Ort::Value value = Ort::Value::CreateTensor(allocator, tensor.shape.data(), tensor.shape.size(), onnx_type(tensor.dtype));
  if (tensor.nbytes()) std::memcpy(value.GetTensorMutableRawData(), tensor.bytes.data(), tensor.nbytes());
  return value;
}

Tensor to_host(const Ort::Value& value) {
  auto info = value.GetTensorTypeAndShapeInfo();
  Tensor out(memx_type(info.GetElementType()), info.GetShape());
  if (!out.nbytes()) return out;
  const void* src = value.GetTensorRawData();
  if (value.GetTensorMemoryInfo().GetDeviceType() == OrtMemoryInfoDeviceType_CPU) {
    std::memcpy(out.bytes.data(), src, out.nbytes());
  } else {
    copy_device_to_host(out.bytes.data(), src, out.nbytes());
  }
  return out;
}

}  // namespace detail

Runtime::Impl::Impl(const std::string& dir, RuntimeOptions opts) : package_dir(dir), options(std::move(opts)) {
  manifest = Manifest::load(dir);
  detail::check_package_files(dir, manifest, options.verify_hashes);
  for (const auto& s : manifest.state) state_by_output[s.output] = &s;
  Ort::Env& env = ort_env(options.log_severity);
  if (options.device != "cpu" && options.device != "cuda" && options.device != "tensorrt")
    throw BackendUnavailableError("unknown device for onnxruntime", "one of ['cpu', 'cuda', 'tensorrt']", options.device);
  session_options = std::make_unique<Ort::SessionOptions>();
  session_options->SetLogSeverityLevel(options.log_severity);
  if (options.intra_op_threads > 0) session_options->SetIntraOpNumThreads(options.intra_op_threads);
  if (options.inter_op_threads > 0) session_options->SetInterOpNumThreads(options.inter_op_threads);
  session_options->SetGraphOptimizationLevel(optimization_level(options.graph_optimization));
  if (options.flush_denormals) session_options->AddConfigEntry("session.set_denormal_as_zero", "1");
  if (options.cpu_build != "auto" && options.cpu_build != "on" && options.cpu_build != "off")
    throw InputError("unknown cpu_build choice", "auto, on or off", options.cpu_build);
  if (options.cpu_build == "on" && manifest.cpu_build_graphs.empty())
    throw BackendUnavailableError("the package has no ONNX Runtime CPU build", "memx.json onnxruntime_cpu", "none",
                                  "run `memx build " + dir + " --backend onnxruntime`");
  const bool use_build = options.cpu_build == "on" || (options.cpu_build == "auto" && options.device == "cpu");
  append_provider(*session_options, options, providers);
  std::string library = options.custom_op_library;
  if (library.empty())
    if (const char* env = std::getenv("MEMX_OPS_LIBRARY")) library = env;
  if (manifest.custom_op_domains.empty()) {
    custom_ops = "none used";
  } else if (library.empty()) {
    custom_ops = "reference body (no kernel library)";
  } else {
    if (!std::filesystem::is_regular_file(library))
      throw BackendUnavailableError("custom-op library not found", "an existing libmemx_ops.so", library);
    try {
      session_options->RegisterCustomOpsLibrary(library.c_str());
    } catch (const Ort::Exception& e) {
      throw BackendUnavailableError(std::string("custom-op library cannot be registered: ") + e.what(), "a memx custom-op library", library);
    }
    const std::string variant = kernel_variant(library);
    custom_ops = "kernel (" + std::filesystem::path(library).filename().string() + (variant.empty() ? "" : ", " + variant) + ")";
  }
  cpu_memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  if (options.device != "cpu") device_memory = Ort::MemoryInfo("Cuda", OrtArenaAllocator, options.device_id, OrtMemTypeDefault);
  std::set<std::string> listed;
  for (const auto& [rel, _] : manifest.files) listed.insert(rel);
  for (const auto& [name, file] : manifest.cpu_build_graphs) detail::check_external_data(dir, file, listed);  // as Python's open checks every graph file
  auto load = [&](const GraphSpec& g) {
    auto built = manifest.cpu_build_graphs.find(g.name);
    if (use_build && built != manifest.cpu_build_graphs.end()) {  // its external data checked above, with every build graph's
      const std::string path = detail::safe_join(dir, built->second);
      try {
        auto session = std::make_unique<Ort::Session>(env, path.c_str(), *session_options);
        graph_files[g.name] = built->second;
        return session;
      } catch (const Ort::Exception& e) {  // an ONNX Runtime without one of its fused kernels: "auto" runs the graph as exported
        cpu_build_refused += (cpu_build_refused.empty() ? "" : "; ") + g.name + ": " + e.what();
        if (options.cpu_build == "on")
          throw BackendUnavailableError("ONNX Runtime " + std::string(Ort::GetVersionString()) + " cannot load the CPU build of graph '" + g.name + "': " + e.what(),
                                        "a graph this ONNX Runtime loads", path, "rebuild it with this ONNX Runtime, or open with cpu_build = \"off\"");
      }
    }
    detail::check_external_data(dir, g.file, listed);
    const std::string path = detail::safe_join(dir, g.file);
    try {
      auto session = std::make_unique<Ort::Session>(env, path.c_str(), *session_options);
      graph_files[g.name] = g.file;
      return session;
    } catch (const Ort::Exception& e) {
      throw BackendRunError("ONNX Runtime cannot load graph '" + g.name + "': " + e.what(), "a loadable ONNX model", path);
    }
  };
  for (const auto& g : manifest.graphs) sessions.push_back(load(g));
  if (manifest.decode) {
    decode_open_session = load(manifest.decode->open);
    decode_session = load(manifest.decode->decode);
  }
}

std::map<std::string, Tensor> Runtime::Impl::run_decode_graph(const GraphSpec& g, const std::map<std::string, const Tensor*>& feeds) const {
  const Ort::Session* session = g.role == "decode_open" ? decode_open_session.get() : decode_session.get();
  if (session == nullptr) throw BackendUnavailableError("this package has no decode graphs", "a package with decode graphs", "none");
  std::vector<Ort::Value> owned;
  owned.reserve(g.inputs.size());
  Ort::IoBinding binding(*const_cast<Ort::Session*>(session));
  for (const auto& t : g.inputs) {
    auto fed = feeds.find(t.name);
    if (fed == feeds.end()) throw InternalError("decode graph input has no value", t.name, "nothing fed");
    owned.push_back(detail::wrap(cpu_memory, *fed->second));
    binding.BindInput(t.name.c_str(), owned.back());
  }
  for (const auto& t : g.outputs) binding.BindOutput(t.name.c_str(), cpu_memory);
  try {
    const_cast<Ort::Session*>(session)->Run(Ort::RunOptions{nullptr}, binding);
    binding.SynchronizeOutputs();
  } catch (const Ort::Exception& e) {
    throw BackendRunError("onnxruntime failed to run graph '" + g.name + "': " + e.what());
  }
  std::vector<std::string> names = binding.GetOutputNames();
  std::vector<Ort::Value> values = binding.GetOutputValues();
  std::map<std::string, Tensor> out;
  for (std::size_t k = 0; k < names.size(); ++k) out.emplace(names[k], detail::to_host(values[k]));
  return out;
}

std::map<std::string, Ort::Value> Runtime::Impl::run_graphs(const std::map<std::string, const Ort::Value*>& feeds, bool states_on_device) const {
  std::map<std::string, Ort::Value> produced;
  for (std::size_t i = 0; i < manifest.graphs.size(); ++i) {
    const GraphSpec& g = manifest.graphs[i];
    Ort::IoBinding binding(*sessions[i]);
    for (const auto& t : g.inputs) {
      auto made = produced.find(t.name);
      if (made != produced.end()) {
        binding.BindInput(t.name.c_str(), made->second);
        continue;
      }
      auto fed = feeds.find(t.name);
      if (fed == feeds.end()) throw InternalError("graph input has no value", t.name, "nothing fed");
      binding.BindInput(t.name.c_str(), *fed->second);
    }
    for (const auto& t : g.outputs) {
      const bool keep_on_device = states_on_device && on_device() && state_by_output.count(t.name);
      binding.BindOutput(t.name.c_str(), keep_on_device ? device_memory : cpu_memory);
    }
    try {
      sessions[i]->Run(Ort::RunOptions{nullptr}, binding);
      binding.SynchronizeOutputs();
    } catch (const Ort::Exception& e) {
      throw BackendRunError("onnxruntime failed to run graph '" + g.name + "': " + e.what());
    }
    std::vector<std::string> names = binding.GetOutputNames();
    std::vector<Ort::Value> values = binding.GetOutputValues();
    for (std::size_t k = 0; k < names.size(); ++k) produced.insert_or_assign(names[k], std::move(values[k]));
  }
  return produced;
}

void Runtime::Impl::check_new_states(const std::map<std::string, Ort::Value>& produced, int64_t batch) const {
  for (const auto& s : manifest.state) {
    auto it = produced.find(s.output);
    if (it == produced.end()) throw BackendRunError("graph did not produce state output", s.output, "missing");
    const auto info = it->second.GetTensorTypeAndShapeInfo();
    Shape want = {batch};
    want.insert(want.end(), s.dims.begin(), s.dims.end());
    if (info.GetShape() != want) throw StateError("backend returned state '" + s.name + "' with the wrong shape", shape_str(want), shape_str(info.GetShape()));
    if (!is_floating(s.dtype)) continue;
    const bool on_cpu = it->second.GetTensorMemoryInfo().GetDeviceType() == OrtMemoryInfoDeviceType_CPU;
    const Tensor host = on_cpu ? Tensor() : detail::to_host(it->second);
    const int64_t bad = first_non_finite(s.dtype, on_cpu ? it->second.GetTensorRawData() : host.bytes.data(), numel(want));
    if (bad >= 0) {
      const int64_t row_size = numel(want) / std::max<int64_t>(batch, 1);
      throw NonFiniteStateError("step produced NaN/Inf in state '" + s.name + "'; state left unchanged", "finite values", "non-finite in rows [" + std::to_string(bad / row_size) + "]");
    }
  }
}

Runtime::Runtime(const std::string& package_dir, RuntimeOptions options) : impl_(std::make_shared<Impl>(package_dir, std::move(options))) {}
Runtime::Runtime(Runtime&&) noexcept = default;
Runtime& Runtime::operator=(Runtime&&) noexcept = default;
Runtime::~Runtime() = default;

const Manifest& Runtime::manifest() const { return impl_->manifest; }
const std::string& Runtime::package_dir() const { return impl_->package_dir; }
const RuntimeOptions& Runtime::options() const { return impl_->options; }

std::map<std::string, std::string> Runtime::describe() const {
  std::string providers;
  for (const auto& p : impl_->providers) providers += (providers.empty() ? "" : ",") + p;
  std::string graph_files;  // "step=onnxruntime-cpu/step-HASH.onnx,...", by graph name
  for (const auto& [name, file] : impl_->graph_files) graph_files += (graph_files.empty() ? "" : ",") + name + "=" + file;
  return {{"backend", "onnxruntime"}, {"device", impl_->options.device}, {"providers", providers}, {"custom_ops", impl_->custom_ops},
          {"package", impl_->package_dir}, {"family", impl_->manifest.family}, {"precision", impl_->manifest.precision},
          {"onnxruntime", Ort::GetVersionString()}, {"verified", impl_->options.verify_hashes ? "sha256" : "sizes only"}, {"graph_files", graph_files},
          {"cpu_build_refused", impl_->cpu_build_refused}};
}

Runtime::StepResult Runtime::run_step(const Tensor& tokens, const Tensor& lengths, const Tensor& reset, const std::map<std::string, Tensor>& states,
                                      const StepInputs& inputs) const {
  return detail::run_step_host(*impl_, tokens, lengths, reset, states, inputs);
}
SnapshotData Runtime::fresh_state(int64_t batch) const { return detail::fresh_state(*impl_, batch); }
std::vector<uint8_t> Runtime::snapshot_of(const SnapshotData& st) const { return detail::snapshot_of(*impl_, st); }
SnapshotData Runtime::restore_from(const std::vector<uint8_t>& blob, int64_t batch) const { return detail::restore_from(*impl_, blob, batch); }

namespace detail {

Runtime::StepResult run_step_host(const Runtime::Impl& rt, const Tensor& tokens, const Tensor& lengths, const Tensor& reset, const std::map<std::string, Tensor>& states,
                                  const StepInputs& inputs) {
  const int64_t batch = tokens.shape.empty() ? 0 : tokens.shape[0];
  check_inputs(inputs, rt.manifest, batch, tokens.shape.size() == 2 ? tokens.shape[1] : 0);
  std::vector<Ort::Value> owned;
  owned.reserve(3 + inputs.size() + rt.manifest.state.size());  // no reallocation: feeds point into it
  std::map<std::string, const Ort::Value*> feeds;
  auto feed = [&](const std::string& name, const Tensor& t) {
    owned.push_back(detail::wrap(rt.cpu_memory, t));
    feeds[name] = &owned.back();
  };
  feed("tokens", tokens);
  feed("lengths", lengths);
  feed("reset", reset);
  for (const auto& [name, t] : inputs) feed(name, t);
  for (const auto& s : rt.manifest.state) {
    auto it = states.find(s.name);
    if (it == states.end()) throw StateError("state tensor missing", s.name, "not given");
    Shape want = {batch};
    want.insert(want.end(), s.dims.begin(), s.dims.end());
    if (it->second.shape != want || it->second.dtype != s.dtype)
      throw StateError("state '" + s.name + "' has the wrong layout", std::string(dtype_name(s.dtype)) + shape_str(want), it->second.describe());
    feed(s.input, it->second);
  }
  std::map<std::string, Ort::Value> produced = rt.run_graphs(feeds, false);
  rt.check_new_states(produced, batch);
  Runtime::StepResult result;
  for (const auto& o : rt.manifest.outputs) result.outputs.emplace(o.name, detail::to_host(produced.at(o.name)));
  for (const auto& s : rt.manifest.state) result.states.emplace(s.name, detail::to_host(produced.at(s.output)));
  return result;
}

SnapshotData fresh_state(const Runtime::Impl& rt, int64_t batch) {
  SnapshotData st;
  st.model_id = rt.manifest.model_id;
  for (const auto& s : rt.manifest.state) {
    Shape shape = {batch};
    shape.insert(shape.end(), s.dims.begin(), s.dims.end());
    st.states.emplace(s.name, Tensor(s.dtype, shape));
    st.order.push_back(s.name);
  }
  st.pending_reset.assign(batch, true);
  return st;
}

// snapshots are bound to memx.json's model_id; packages exported before it was stored have none
const std::string& snapshot_model_id(const Manifest& m) {
  if (m.model_id.empty())
    throw ManifestError("package manifest has no model_id, which snapshots are bound to", "a model_id in memx.json", "none",
                        "the package was exported by an older memx: re-export it (or open it once with this memx's Python and re-save)");
  return m.model_id;
}

std::vector<uint8_t> snapshot_of(const Runtime::Impl& rt, const SnapshotData& st) {
  SnapshotData data = st;
  data.model_id = snapshot_model_id(rt.manifest);
  data.order.clear();
  for (const auto& s : rt.manifest.state) data.order.push_back(s.name);
  if (data.states.count("decode.position"))  // a generating stream's decode.* tensors, in the order Python writes them
    for (const auto& l : decode_schema(rt.manifest)) data.order.push_back(l.name);
  return encode_snapshot(data);
}

SnapshotData restore_from(const Runtime::Impl& rt, const std::vector<uint8_t>& blob, int64_t batch) {
  SnapshotData data = decode_snapshot(blob);
  const Manifest& m = rt.manifest;
  std::vector<StateLayout> schema;
  for (const auto& s : m.state) schema.push_back({s.name, s.dtype, s.dims});
  const bool generating = std::any_of(data.states.begin(), data.states.end(), [](const auto& kv) { return kv.first.rfind("decode.", 0) == 0; });
  if (generating) {  // a stream's partial generated segment: the package's decode schema too (memx/runtimes/generation.py split_snapshot)
    if (!m.decode) {
      std::vector<std::string> want, got;
      for (const auto& s : schema) want.push_back(s.name);
      for (const auto& [name, _] : data.states) got.push_back(name);
      std::sort(want.begin(), want.end());
      throw SnapshotMismatchError("snapshot holds a partial generated segment, but this package has no decode graphs", join(want), join(got));
    }
    for (const auto& l : decode_schema(m)) schema.push_back(l);
  }
  check_snapshot(data, snapshot_model_id(m), batch, schema);
  if (generating) {
    const Tensor& pos = data.states.at("decode.position");
    for (int64_t i = 0; i < pos.size(); ++i)
      if (pos.data<int64_t>()[i] < 0 || pos.data<int64_t>()[i] > m.decode->capacity)
        throw SnapshotMismatchError("snapshot decode position out of range", "0.." + std::to_string(m.decode->capacity), std::to_string(pos.data<int64_t>()[i]));
    const Tensor& tok = data.states.at("decode.tokens");
    for (int64_t i = 0; i < tok.size(); ++i)
      if (tok.data<int64_t>()[i] < 0 || tok.data<int64_t>()[i] >= m.vocab_size)
        throw SnapshotMismatchError("snapshot decode tokens outside the vocabulary", "0.." + std::to_string(m.vocab_size - 1), std::to_string(tok.data<int64_t>()[i]));
  }
  return data;
}

}  // namespace detail

}  // namespace memx
