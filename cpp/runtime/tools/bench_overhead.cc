// memx-bench-overhead PACKAGE [--steps N] [--rounds R] [--segment-len S] [--threads T]
// Per-step cost of memx::Stream::step against a hand-written loop over a bare Ort::Session::Run
// that feeds the state outputs back as inputs (what a user would otherwise write). Both run the
// same single-graph package on the same thread settings, in alternating rounds. Prints one JSON
// line: medians of per-step microseconds and the overhead. Used by benchmarks/cpp_overhead.py.
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "memx/memx.hpp"

namespace {
using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

ONNXTensorElementDataType onnx_type(memx::DType d) {
  return d == memx::DType::Float16 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s PACKAGE [--steps N] [--rounds R] [--segment-len S] [--threads T]\n", argv[0]);
    return 2;
  }
  std::string package = argv[1];
  int steps = 200, rounds = 7, threads = 1;
  int64_t seg = 0;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    int v = std::stoi(argv[i + 1]);
    if (flag == "--steps") steps = v;
    else if (flag == "--rounds") rounds = v;
    else if (flag == "--segment-len") seg = v;
    else if (flag == "--threads") threads = v;
  }
  try {
    memx::RuntimeOptions options;
    options.intra_op_threads = threads;
    memx::Runtime rt(package, options);
    const memx::Manifest& m = rt.manifest();
    if (m.graphs.size() != 1) throw memx::InputError("overhead benchmark needs a single-graph package", "1 graph", std::to_string(m.graphs.size()));
    if (!seg) seg = m.segment_max;
    std::vector<int64_t> ids(seg);
    for (int64_t i = 0; i < seg; ++i) ids[i] = (i * 7 + 3) % m.vocab_size;
    const memx::Tensor tokens = memx::make_tokens(ids, 1, seg);

    // the bare loop: one session, inputs/outputs by name, state fed back by hand
    Ort::Env env(ORT_LOGGING_LEVEL_ERROR, "bare");
    Ort::SessionOptions so;
    so.SetIntraOpNumThreads(threads);
    Ort::Session session(env, (package + "/" + m.graphs[0].file).c_str(), so);
    Ort::MemoryInfo cpu = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    std::vector<int64_t> tok(ids), len = {seg};
    bool reset_flag[1] = {true};
    int64_t tshape[2] = {1, seg}, bshape[1] = {1};
    std::vector<std::string> in_names = {"tokens", "lengths", "reset"}, out_names;
    std::vector<std::vector<uint8_t>> state_bufs;
    std::vector<memx::Shape> state_shapes;
    for (const auto& s : m.state) {
      in_names.push_back(s.input);
      memx::Shape shape = {1};
      shape.insert(shape.end(), s.dims.begin(), s.dims.end());
      state_shapes.push_back(shape);
      state_bufs.emplace_back(memx::numel(shape) * memx::dtype_size(s.dtype), 0);
    }
    for (const auto& t : m.graphs[0].outputs) out_names.push_back(t.name);
    std::vector<const char*> in_c, out_c;
    for (auto& n : in_names) in_c.push_back(n.c_str());
    for (auto& n : out_names) out_c.push_back(n.c_str());
    auto bare_step = [&]() {
      std::vector<Ort::Value> inputs;
      inputs.push_back(Ort::Value::CreateTensor<int64_t>(cpu, tok.data(), tok.size(), tshape, 2));
      inputs.push_back(Ort::Value::CreateTensor<int64_t>(cpu, len.data(), 1, bshape, 1));
      inputs.push_back(Ort::Value::CreateTensor<bool>(cpu, reset_flag, 1, bshape, 1));
      for (std::size_t k = 0; k < state_bufs.size(); ++k)
        inputs.push_back(Ort::Value::CreateTensor(cpu, state_bufs[k].data(), state_bufs[k].size(), state_shapes[k].data(), state_shapes[k].size(), onnx_type(m.state[k].dtype)));
      std::vector<Ort::Value> outputs = session.Run(Ort::RunOptions{nullptr}, in_c.data(), inputs.data(), inputs.size(), out_c.data(), out_c.size());
      for (std::size_t k = 0; k < m.state.size(); ++k) {  // carry the state: copy the output into the input buffer
        auto at = std::find(out_names.begin(), out_names.end(), m.state[k].output) - out_names.begin();
        std::memcpy(state_bufs[k].data(), outputs[at].GetTensorRawData(), state_bufs[k].size());
      }
      reset_flag[0] = false;
    };
    memx::Stream stream = rt.stream(1);
    std::vector<double> bare_us, memx_us;
    for (int w = 0; w < 20; ++w) bare_step(), stream.step(tokens);  // warm-up
    for (int r = 0; r < rounds; ++r) {
      for (int order = 0; order < 2; ++order) {
        const bool bare_first = (r + order) % 2 == 0;
        const auto t0 = Clock::now();
        for (int s = 0; s < steps; ++s) {
          if (bare_first) bare_step();
          else stream.step(tokens);
        }
        const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / steps;
        (bare_first ? bare_us : memx_us).push_back(us);
      }
    }
    const double b = median(bare_us), x = median(memx_us);
    std::printf("{\"package\": \"%s\", \"segment_len\": %lld, \"steps\": %d, \"rounds\": %d, \"bare_run_us\": %.3f, \"memx_step_us\": %.3f, \"overhead_us\": %.3f, \"ratio\": %.4f}\n",
                package.c_str(), static_cast<long long>(seg), steps, rounds, b, x, x - b, x / b);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "memx-bench-overhead: %s\n", e.what());
    return 1;
  }
  return 0;
}
