// memx-run: stream a token file through a memx package with libmemx, write the outputs and the
// step latency percentiles. The C++ twin of `memx profile` for devices without Python.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "memx/memx.hpp"

namespace {

const char* kUsage = R"(usage: memx-run PACKAGE --tokens TOKENS.npy [options]
       memx-run PACKAGE --tokens PROMPT.npy --generate N [sampling options]

Streams TOKENS (int64 [T] for one stream or [B, T] for B streams stepped together) through the
package segment by segment, carrying the memory across steps, and reports step latency.
With --generate, TOKENS is a prompt: it is appended (whole segments through the step graphs,
the rest through the decode graphs), then N tokens are generated one at a time (the memory is
written each time a segment fills) and printed with tokens/s, the same tokens `memx generate`
draws for the same seed.

options:
  --tokens FILE         token ids (.npy, int64 or int32), [T] or [B, T]
  --segment-len S       tokens per step (default: the package's maximum); a shorter last
                        segment is padded and masked by lengths
  --out DIR             write DIR/<output>.npy ([steps, B, ...] per output) and
                        DIR/state.<name>.npy (the final state, [B, ...])
  --input NAME=FILE     an extra step input of the package (memx.json "inputs"), one .npy of
                        [steps, B, ...] holding each step's value ("segment" axes S long);
                        once per extra input
  --snapshot-in FILE    restore the stream from this snapshot before the first step
  --snapshot-out FILE   write the stream's snapshot after the last step
  --device D            cpu (default), cuda or tensorrt (needs an ONNX Runtime built with them)
  --ops-lib FILE        libmemx_ops.so for memx custom ops (default: $MEMX_OPS_LIBRARY, else
                        the ops' ONNX reference bodies)
  --threads N           ONNX Runtime intra-op threads (default: ONNX Runtime's choice)
  --graph-optimization L  ONNX Runtime graph optimizations: all (default), extended, basic,
                        disable (as the Python runtime's graph_optimization option)
  --cpu-build C         auto (default: on device cpu, the graphs memx build --backend onnxruntime
                        wrote, where the package has them), on (required) or off
  --flush-denormals     flush denormal floats to zero (ONNX Runtime's session.set_denormal_as_zero)
  --warmup N            untimed steps before the timed stream (default 0; they advance a copy)
  --no-verify           check package files by size only (default: size and sha256)
  --json FILE           write the latency report as JSON
  --quiet               print nothing but errors
  --help                this text

generation (a package with decode graphs):
  --generate N          generate N tokens after the prompt
  --temperature T       softmax temperature, 0 is greedy (default 1)
  --top-k K             sample among the K most likely tokens (default 0: all)
  --top-p P             sample among the most likely tokens holding mass P (default 1)
  --seed S              sampler seed (SplitMix64, row b uses S + b; default 0)
  --stop-token ID       stop a row after this token (repeatable)
  --pool N              generate with a StreamPool (max_batch N): each row of PROMPT is its own
                        stream (trailing -1s pad shorter prompts) and samples with seed S, as it
                        would alone (no --snapshot-in/--snapshot-out)
  (--segment-len sets the generation segment: tokens before the memory is written;
   --out DIR writes DIR/generated.npy, [N, B], -1 after a row stopped)

example:
  memx-run rmt.memx --tokens prompt.npy --generate 64 --temperature 0.8 --top-k 40 --seed 7

exit status: 0 success, 1 a memx error (message on stderr), 2 bad command line)";

struct Args {
  std::string package, tokens, out, snapshot_in, snapshot_out, json, ops_lib, device = "cpu", graph_optimization = "all", cpu_build = "auto";
  int64_t segment_len = 0, warmup = 0, generate = -1, top_k = 0, pool = 0;
  double temperature = 1.0, top_p = 1.0;
  uint64_t seed = 0;
  std::vector<int64_t> stop_tokens;
  int threads = 0;
  bool quiet = false, verify = true, flush_denormals = false;
  std::map<std::string, std::string> inputs;  // extra step input name -> .npy file
};

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

int64_t parse_int(const std::string& flag, const std::string& value, int64_t min) {
  std::size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || v < min) throw UsageError(flag + " expects an integer >= " + std::to_string(min) + ", got '" + value + "'");
  return v;
}

double parse_double(const std::string& flag, const std::string& value) {
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size()) throw UsageError(flag + " expects a number, got '" + value + "'");
  return v;
}

Args parse_args(int argc, char** argv) {
  Args a;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") throw UsageError("");
    else if (arg == "--tokens") a.tokens = value();
    else if (arg == "--segment-len") a.segment_len = parse_int(arg, value(), 1);
    else if (arg == "--out") a.out = value();
    else if (arg == "--snapshot-in") a.snapshot_in = value();
    else if (arg == "--snapshot-out") a.snapshot_out = value();
    else if (arg == "--device") a.device = value();
    else if (arg == "--ops-lib") a.ops_lib = value();
    else if (arg == "--threads") a.threads = static_cast<int>(parse_int(arg, value(), 1));
    else if (arg == "--graph-optimization") a.graph_optimization = value();
    else if (arg == "--cpu-build") a.cpu_build = value();
    else if (arg == "--flush-denormals") a.flush_denormals = true;
    else if (arg == "--warmup") a.warmup = parse_int(arg, value(), 0);
    else if (arg == "--json") a.json = value();
    else if (arg == "--quiet") a.quiet = true;
    else if (arg == "--generate") a.generate = parse_int(arg, value(), 0);
    else if (arg == "--temperature") a.temperature = parse_double(arg, value());
    else if (arg == "--top-k") a.top_k = parse_int(arg, value(), 0);
    else if (arg == "--top-p") a.top_p = parse_double(arg, value());
    else if (arg == "--seed") a.seed = static_cast<uint64_t>(parse_int(arg, value(), 0));
    else if (arg == "--stop-token") a.stop_tokens.push_back(parse_int(arg, value(), 0));
    else if (arg == "--pool") a.pool = parse_int(arg, value(), 1);
    else if (arg == "--no-verify") a.verify = false;
    else if (arg == "--input") {
      const std::string spec = value();
      const auto eq = spec.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size()) throw UsageError("--input expects NAME=FILE, got '" + spec + "'");
      if (!a.inputs.emplace(spec.substr(0, eq), spec.substr(eq + 1)).second) throw UsageError("--input " + spec.substr(0, eq) + " given twice");
    }
    else if (!arg.empty() && arg[0] == '-') throw UsageError("unknown option " + arg);
    else positional.push_back(arg);
  }
  if (positional.size() != 1) throw UsageError("expected one PACKAGE, got " + std::to_string(positional.size()));
  if (a.tokens.empty()) throw UsageError("--tokens is required");
  if (a.pool && a.generate < 0) throw UsageError("--pool needs --generate");
  if (a.pool && (!a.snapshot_in.empty() || !a.snapshot_out.empty())) throw UsageError("--snapshot-in/--snapshot-out take one stream: not with --pool");
  a.package = positional[0];
  return a;
}

// tokens [B, T] (int64) from the file; [T] becomes [1, T]; int32 is widened.
memx::Tensor load_tokens(const std::string& path) {
  memx::Tensor t = memx::read_npy(path);
  if (t.dtype == memx::DType::Int32) {
    memx::Tensor wide(memx::DType::Int64, t.shape);
    std::copy(t.data<int32_t>(), t.data<int32_t>() + t.size(), wide.data<int64_t>());
    t = std::move(wide);
  }
  if (t.dtype != memx::DType::Int64) throw memx::DTypeError("token file must hold integer ids", "int64 or int32", memx::dtype_name(t.dtype));
  if (t.shape.size() == 1) t.shape.insert(t.shape.begin(), 1);
  if (t.shape.size() != 2) throw memx::RankError("token file must be [T] or [B, T]", "rank 1 or 2", "rank " + std::to_string(t.shape.size()));
  if (t.shape[1] == 0) throw memx::ShapeError("token file holds no tokens", "T >= 1", "T = 0");
  return t;
}

std::string json_string(const std::string& s) {  // a JSON string literal
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += c;
    else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else out += c;
  }
  return out + "\"";
}

double percentile(std::vector<double> v, double q) {  // linear interpolation, like numpy
  std::sort(v.begin(), v.end());
  const double pos = q / 100.0 * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

// segment k of every row: [B, S] padded with 0, and the real lengths
std::pair<memx::Tensor, memx::Tensor> segment(const memx::Tensor& tokens, int64_t k, int64_t seg) {
  const int64_t batch = tokens.shape[0], total = tokens.shape[1];
  const int64_t begin = k * seg, len = std::min(seg, total - begin);
  memx::Tensor ids(memx::DType::Int64, {batch, seg});
  for (int64_t b = 0; b < batch; ++b) std::copy_n(tokens.data<int64_t>() + b * total + begin, len, ids.data<int64_t>() + b * seg);
  return {ids, memx::make_lengths(std::vector<int64_t>(batch, len))};
}

// each extra input's file [steps, B, ...]: the value of step k is [B, ...]
std::map<std::string, memx::Tensor> load_inputs(const std::map<std::string, std::string>& files, int64_t steps) {
  std::map<std::string, memx::Tensor> loaded;
  for (const auto& [name, path] : files) {
    memx::Tensor t = memx::read_npy(path);
    if (t.shape.size() < 2 || t.shape[0] != steps)
      throw memx::ShapeError("input file for '" + name + "' must be [steps, B, ...] with one value per step", "[" + std::to_string(steps) + ", B, ...]", memx::shape_str(t.shape));
    loaded.emplace(name, std::move(t));
  }
  return loaded;
}

memx::StepInputs inputs_of_step(const std::map<std::string, memx::Tensor>& files, int64_t k) {
  memx::StepInputs step;
  for (const auto& [name, t] : files) {
    memx::Tensor row = t.rows(k, k + 1);
    row.shape.erase(row.shape.begin());  // [B, ...]
    step.emplace(name, std::move(row));
  }
  return step;
}

void write_outputs(const std::string& dir, const std::map<std::string, std::vector<memx::Tensor>>& steps, const memx::Stream& stream) {
  std::filesystem::create_directories(dir);
  for (const auto& [name, per_step] : steps) {
    std::vector<const memx::Tensor*> parts;
    for (const auto& t : per_step) parts.push_back(&t);
    memx::Tensor stacked = memx::concat_rows(parts);  // [steps * B, ...]
    stacked.shape[0] = static_cast<int64_t>(per_step.size());
    stacked.shape.insert(stacked.shape.begin() + 1, per_step.front().shape[0]);  // [steps, B, ...]
    memx::write_npy(dir + "/" + name + ".npy", stacked);
  }
  for (const auto& [name, t] : stream.state()) memx::write_npy(dir + "/state." + name + ".npy", t);
}

// what a --generate run made
struct Generation {
  std::vector<std::vector<int64_t>> rounds;  // [N][B]: -1 after a row stopped
  double prompt_s = 0, gen_s = 0;
  int64_t segment_len = 0;
  std::string summary;  // what the stream (or pool) holds after it
};

memx::SamplingOptions sampling_of(const Args& a) {
  memx::SamplingOptions sampling;
  sampling.temperature = a.temperature;
  sampling.top_k = a.top_k;
  sampling.top_p = a.top_p;
  return sampling;
}

double seconds(std::chrono::steady_clock::time_point from, std::chrono::steady_clock::time_point to) { return std::chrono::duration<double>(to - from).count(); }

void print_token(const Args& a, int64_t batch, int64_t token) {
  if (a.quiet || batch != 1) return;
  std::printf("%lld ", static_cast<long long>(token));
  std::fflush(stdout);
}

// one Stream of B rows: row b samples with seed + b
Generation generate_stream(const Args& a, memx::Runtime& rt, const memx::Tensor& prompt) {
  const int64_t batch = prompt.shape[0];
  memx::Stream stream = rt.stream(batch);
  if (!a.snapshot_in.empty()) stream.restore(memx::read_file(a.snapshot_in));
  stream.set_segment_len(a.segment_len);
  Generation g;
  const auto t0 = std::chrono::steady_clock::now();
  stream.append(prompt);
  const auto t1 = std::chrono::steady_clock::now();
  g.rounds = stream.generate(a.generate, sampling_of(a), a.seed, a.stop_tokens, [&](const std::vector<int64_t>& tokens) { print_token(a, batch, tokens[0]); });
  g.prompt_s = seconds(t0, t1);
  g.gen_s = seconds(t1, std::chrono::steady_clock::now());
  g.segment_len = stream.segment_len();
  g.summary = std::to_string(stream.segments()) + " segments written";
  if (!a.snapshot_out.empty()) {
    const std::vector<uint8_t> snap = stream.snapshot();
    memx::write_file_atomic(a.snapshot_out, snap.data(), snap.size());
  }
  return g;
}

// a StreamPool: each row its own stream (trailing -1s pad), every stream sampling with seed
Generation generate_pool(const Args& a, memx::Runtime& rt, const memx::Tensor& prompt) {
  const int64_t batch = prompt.shape[0], total = prompt.shape[1];
  memx::StreamPool pool = rt.pool(a.pool);
  pool.set_segment_len(a.segment_len);
  std::vector<int64_t> ids;
  std::map<int64_t, std::vector<int64_t>> prompts;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t* row = prompt.data<int64_t>() + b * total;
    int64_t n = total;
    while (n > 0 && row[n - 1] == -1) --n;
    ids.push_back(pool.open());
    prompts[ids.back()].assign(row, row + n);
  }
  Generation g;
  const auto t0 = std::chrono::steady_clock::now();
  pool.append(prompts);
  const auto t1 = std::chrono::steady_clock::now();
  const auto tokens = pool.generate(ids, a.generate, sampling_of(a), a.seed, a.stop_tokens, [&](const std::map<int64_t, int64_t>& round) {
    if (round.count(ids[0])) print_token(a, batch, round.at(ids[0]));
  });
  g.prompt_s = seconds(t0, t1);
  g.gen_s = seconds(t1, std::chrono::steady_clock::now());
  std::size_t longest = 0;
  for (const auto& [id, t] : tokens) longest = std::max(longest, t.size());
  g.rounds.assign(longest, std::vector<int64_t>(batch, -1));
  for (int64_t b = 0; b < batch; ++b)
    for (std::size_t k = 0; k < tokens.at(ids[b]).size(); ++k) g.rounds[k][b] = tokens.at(ids[b])[k];
  g.segment_len = pool.segment_len();
  g.summary = "a pool of " + std::to_string(batch) + " streams, at most " + std::to_string(a.pool) + " per call";
  return g;
}

// --generate: append the prompt, then generate token by token
int run_generate(const Args& a, memx::Runtime& rt, const memx::Tensor& prompt) {
  const int64_t batch = prompt.shape[0];
  const Generation g = a.pool ? generate_pool(a, rt, prompt) : generate_stream(a, rt, prompt);
  int64_t produced = 0;
  memx::Tensor generated(memx::DType::Int64, {static_cast<int64_t>(g.rounds.size()), batch});
  for (std::size_t k = 0; k < g.rounds.size(); ++k)
    for (int64_t b = 0; b < batch; ++b) {
      generated.data<int64_t>()[k * batch + b] = g.rounds[k][b];
      produced += g.rounds[k][b] >= 0;
    }
  const double rate = g.gen_s > 0 ? static_cast<double>(produced) / g.gen_s : 0.0;
  if (!a.out.empty()) {
    std::filesystem::create_directories(a.out);
    memx::write_npy(a.out + "/generated.npy", generated);
  }
  if (!a.json.empty()) {
    char numbers[512];
    std::snprintf(numbers, sizeof numbers,
                  "\"batch\": %lld, \"prompt_tokens\": %lld, \"prompt_seconds\": %.6f, \"new_tokens\": %lld, \"generate_seconds\": %.6f, \"tokens_per_s\": %.3f, \"segment_len\": %lld",
                  static_cast<long long>(batch), static_cast<long long>(prompt.shape[1]), g.prompt_s, static_cast<long long>(produced), g.gen_s, rate,
                  static_cast<long long>(g.segment_len));
    const std::string pool = a.pool ? ", \"pool_max_batch\": " + std::to_string(a.pool) : "";
    const std::string report = "{\"format\": \"memx.run.generate\", \"version\": 1, \"package\": " + json_string(a.package) + ", " + numbers + pool + "}\n";
    memx::write_file_atomic(a.json, report.data(), report.size());
  }
  if (!a.quiet) {
    if (batch == 1) std::printf("\n");
    std::printf("%lld tokens in %.3f s (%.1f tokens/s); prompt of %lld x %lld tokens in %.3f s; %s, segment length %lld\n", static_cast<long long>(produced), g.gen_s, rate,
                static_cast<long long>(batch), static_cast<long long>(prompt.shape[1]), g.prompt_s, g.summary.c_str(), static_cast<long long>(g.segment_len));
  }
  return 0;
}

int run(const Args& a) {
  memx::RuntimeOptions options;
  options.device = a.device;
  options.custom_op_library = a.ops_lib;
  options.intra_op_threads = a.threads;
  options.graph_optimization = a.graph_optimization;
  options.verify_hashes = a.verify;
  options.cpu_build = a.cpu_build;
  options.flush_denormals = a.flush_denormals;
  memx::Runtime rt(a.package, options);
  const memx::Manifest& m = rt.manifest();
  const memx::Tensor tokens = load_tokens(a.tokens);
  if (a.generate >= 0) return run_generate(a, rt, tokens);
  const int64_t batch = tokens.shape[0], seg = a.segment_len ? a.segment_len : m.segment_max;
  if (seg < m.segment_min || seg > m.segment_max)  // before any buffer of that length is made
    throw memx::SegmentLengthError("segment length (--segment-len) outside what the package allows", std::to_string(m.segment_min) + ".." + std::to_string(m.segment_max) + " tokens",
                                   std::to_string(seg));
  const int64_t steps = (tokens.shape[1] + seg - 1) / seg;
  const std::map<std::string, memx::Tensor> inputs = load_inputs(a.inputs, steps);
  memx::Stream stream = rt.stream(batch);
  if (!a.snapshot_in.empty()) stream.restore(memx::read_file(a.snapshot_in));
  if (a.warmup > 0) {  // warm up on a copy of the stream, so the timed stream is untouched
    memx::Stream warm = rt.stream(batch);
    warm.restore(stream.snapshot());
    for (int64_t k = 0; k < a.warmup; ++k) {
      auto [ids, lens] = segment(tokens, k % steps, seg);
      warm.step(ids, lens, memx::Tensor(), inputs_of_step(inputs, k % steps));
    }
  }
  std::map<std::string, std::vector<memx::Tensor>> outputs;
  std::vector<double> ms;
  ms.reserve(steps);
  for (int64_t k = 0; k < steps; ++k) {
    auto [ids, lens] = segment(tokens, k, seg);
    const memx::StepInputs extras = inputs_of_step(inputs, k);
    const auto t0 = std::chrono::steady_clock::now();
    memx::StepOutputs out = stream.step(ids, lens, memx::Tensor(), extras);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    if (!a.out.empty())
      for (auto& [name, t] : out.outputs) outputs[name].push_back(std::move(t));
  }
  if (!a.out.empty()) write_outputs(a.out, outputs, stream);
  if (!a.snapshot_out.empty()) {
    const std::vector<uint8_t> snap = stream.snapshot();
    memx::write_file_atomic(a.snapshot_out, snap.data(), snap.size());
  }
  double total = 0;
  for (double v : ms) total += v;
  const double p50 = percentile(ms, 50), p90 = percentile(ms, 90), p99 = percentile(ms, 99), mean = total / static_cast<double>(ms.size());
  const double tokens_per_s = static_cast<double>(batch * tokens.shape[1]) / (total / 1000.0);
  auto desc = rt.describe();
  if (!a.json.empty()) {
    char numbers[512];
    std::snprintf(numbers, sizeof numbers,
                  "\"batch\": %lld, \"segment_len\": %lld, \"steps\": %lld, \"p50_ms\": %.6f, \"p90_ms\": %.6f, \"p99_ms\": %.6f, \"mean_ms\": %.6f, \"tokens_per_s\": %.3f}\n",
                  static_cast<long long>(batch), static_cast<long long>(seg), static_cast<long long>(steps), p50, p90, p99, mean, tokens_per_s);
    const std::string report = "{\"format\": \"memx.run\", \"version\": 1, \"package\": " + json_string(a.package) + ", \"family\": " + json_string(m.family) +
                               ", \"device\": " + json_string(a.device) + ", \"custom_ops\": " + json_string(desc["custom_ops"]) +
                               ", \"graph_files\": " + json_string(desc["graph_files"]) + ", " + numbers;
    memx::write_file_atomic(a.json, report.data(), report.size());
  }
  if (!a.quiet) {
    std::printf("memx-run %s (%s, %s, onnxruntime %s, memx ops: %s, graphs: %s)\n", a.package.c_str(), m.family.c_str(), desc["providers"].c_str(), desc["onnxruntime"].c_str(),
                desc["custom_ops"].c_str(), desc["graph_files"].c_str());
    std::printf("%lld steps of B=%lld x S=%lld: p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  mean %.3f ms  %.0f tokens/s\n", static_cast<long long>(steps),
                static_cast<long long>(batch), static_cast<long long>(seg), p50, p90, p99, mean, tokens_per_s);
    if (!a.out.empty()) std::printf("outputs and final state written to %s\n", a.out.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  try {
    args = parse_args(argc, argv);
  } catch (const UsageError& e) {
    const bool help = std::string(e.what()).empty();
    if (!help) std::fprintf(stderr, "memx-run: %s\n\n", e.what());
    std::fprintf(help ? stdout : stderr, "%s\n", kUsage);
    return help ? 0 : 2;
  }
  try {
    return run(args);
  } catch (const memx::Error& e) {
    std::fprintf(stderr, "memx-run: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "memx-run: unexpected error: %s\n", e.what());
    return 1;
  }
}
