// libmemx_ops: ONNX Runtime custom-op library for domain "memx" (lite custom-op API).
// Load it with SessionOptions.register_custom_ops_library(path); memx's onnxruntime backend
// does so automatically for packages that use memx ops.
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#include <onnxruntime_lite_custom_op.h>
#undef ORT_API_MANUAL_INIT

#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "local_global_attention.h"

#define MEMX_EXPORT __attribute__((visibility("default")))

namespace {

using FloatTensor = Ort::Custom::Tensor<float>;
using IntTensor = Ort::Custom::Tensor<int64_t>;

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

struct LocalGlobalAttentionKernel {
  LocalGlobalAttentionKernel(const OrtApi* /*api*/, const OrtKernelInfo* info) {
    Ort::ConstKernelInfo kernel_info(info);
    const std::string pattern = kernel_info.GetAttribute<std::string>("pattern");
    if (!memx::ParsePattern(pattern, &params_.pattern))
      ORT_CXX_API_THROW("memx.LocalGlobalAttention: pattern must be 'band' or 'chunked', got '" + pattern + "'", ORT_INVALID_ARGUMENT);
    params_.window = kernel_info.GetAttribute<int64_t>("window");
    params_.causal = kernel_info.GetAttribute<int64_t>("causal") != 0;
    if (params_.window < 1) ORT_CXX_API_THROW("memx.LocalGlobalAttention: window must be >= 1", ORT_INVALID_ARGUMENT);
  }

  Ort::Status Compute(const FloatTensor& q, const FloatTensor& k, const FloatTensor& v, const IntTensor& lengths,
                      std::optional<const FloatTensor*> mem_k, std::optional<const FloatTensor*> mem_v, FloatTensor& out) {
    const std::vector<int64_t> shape = q.Shape();
    if (shape.size() != 4 || k.Shape() != shape || v.Shape() != shape)
      return Error("q, k, v must share one [B, H, S, D] shape; got q " + ShapeText(shape) + ", k " + ShapeText(k.Shape()) + ", v " + ShapeText(v.Shape()));
    memx::AttentionShape dims{shape[0], shape[1], shape[2], shape[3], 0};
    if (lengths.Shape() != std::vector<int64_t>{dims.batch})
      return Error("lengths must be [B] = [" + std::to_string(dims.batch) + "]; got " + ShapeText(lengths.Shape()));
    const bool has_memory = mem_k.has_value() && *mem_k != nullptr;
    if (has_memory != (mem_v.has_value() && *mem_v != nullptr)) return Error("mem_k and mem_v must be given together");
    if (has_memory) {
      const std::vector<int64_t> ms = (*mem_k)->Shape();
      if (ms.size() != 4 || ms[0] != dims.batch || ms[1] != dims.heads || ms[3] != dims.head_dim || (*mem_v)->Shape() != ms)
        return Error("mem_k, mem_v must be [B, H, M, D] = [" + std::to_string(dims.batch) + ", " + std::to_string(dims.heads) + ", M, " +
                     std::to_string(dims.head_dim) + "]; got " + ShapeText(ms) + " and " + ShapeText((*mem_v)->Shape()));
      dims.memory = ms[2];
    }
    float* result = out.Allocate(shape);
    memx::LocalGlobalAttentionForward(params_, dims, q.Data(), k.Data(), v.Data(), lengths.Data(), has_memory ? (*mem_k)->Data() : nullptr,
                                      has_memory ? (*mem_v)->Data() : nullptr, result);
    return Ort::Status{nullptr};
  }

  static Ort::Status Error(const std::string& message) {
    return Ort::Status(("memx.LocalGlobalAttention: " + message).c_str(), ORT_INVALID_ARGUMENT);
  }

  memx::LocalGlobalParams params_;
};

}  // namespace

extern "C" {

// The entry point ONNX Runtime calls (RegisterCustomOpsLibrary / register_custom_ops_library).
MEMX_EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  Ort::InitApi(api_base->GetApi(ORT_API_VERSION));
  try {
    // The domain and ops must outlive every session that uses them: process lifetime.
    static Ort::CustomOpDomain domain{"memx"};
    static std::unique_ptr<Ort::Custom::OrtLiteCustomOp> attention{
        Ort::Custom::CreateLiteCustomOp<LocalGlobalAttentionKernel>("LocalGlobalAttention", "CPUExecutionProvider")};
    static std::once_flag added;
    std::call_once(added, [] { domain.Add(attention.get()); });
    Ort::UnownedSessionOptions session_options(options);
    session_options.Add(domain);
    return nullptr;
  } catch (const std::exception& e) {
    return Ort::Status(e).release();
  }
}

// For `memx inspect` and tests: what this library provides.
MEMX_EXPORT const char* MemxOpsDescribe() {
  static const std::string text = std::string("memx 1: LocalGlobalAttention (CPUExecutionProvider, float32; kernel ") + memx::KernelVariant() + ")";
  return text.c_str();
}

}  // extern "C"
