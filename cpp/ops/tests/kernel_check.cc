// memx-ops-check: runs every LocalGlobalAttention kernel variant compiled into this binary
// (memx::baseline and memx::avx2 / memx::neon, the object libraries of libmemx_ops, no ONNX
// Runtime) on cases written by Python, and prints per case and variant the max abs error against
// the expected output (torch's reference) and against the baseline variant, as JSON.
//
//   memx-ops-check DIR [--repeat N [--only VARIANT]] [--out FILE]
//
// DIR/cases.txt, one case a line ('#' starts a comment):
//   case NAME pattern=band|chunked window=W causal=0|1 batch=B heads=H seq=S dim=D memory=M [expected=1|0]
// and beside it raw little-endian arrays, C order: NAME.q.bin, NAME.k.bin, NAME.v.bin (float32
// [B,H,S,D]), NAME.lengths.bin (int64 [B]), NAME.mem_k.bin, NAME.mem_v.bin (float32 [B,H,M,D],
// only when M > 0), NAME.expected.bin (float32 [B,H,S,D], unless expected=0).
// --repeat N: also time each variant N times per case (after one warm-up run): "median_ms";
// --only VARIANT times that variant alone (benchmarks/kernel_variants.py counts its instructions).
//
// Exit status: 0 when every case ran (judging the errors is the caller's job); 2 on bad input or
// usage, with one line on stderr: "memx-ops-check: <Kind>: <what was expected, what was found>".
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "local_global_attention.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "memx-ops-check reads little-endian arrays as they are: build it for a little-endian target"
#endif

namespace {

constexpr int64_t kMaxElements = int64_t{1} << 28;  // per array (1 GiB of float32): refuse, don't try

// A refusal of the input: kind names the problem class, message says expected and found.
struct InputError : std::runtime_error {
  InputError(std::string kind_, const std::string& message) : std::runtime_error(message), kind(std::move(kind_)) {}
  std::string kind;
};

struct Case {
  std::string name;
  memx::LocalGlobalParams params;
  memx::AttentionShape shape;
  bool has_expected = true;
  std::vector<float> q, k, v, mem_k, mem_v, expected;
  std::vector<int64_t> lengths;
};

std::string ShapeText(const std::vector<int64_t>& dims) {
  std::string text = "[";
  for (size_t i = 0; i < dims.size(); ++i) text += (i ? ", " : "") + std::to_string(dims[i]);
  return text + "]";
}

int64_t Elements(const std::string& where, const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) {
    if (d != 0 && n > kMaxElements / d)
      throw InputError("TooLarge", where + ": " + ShapeText(dims) + " has more than " + std::to_string(kMaxElements) + " elements");
    n *= d;
  }
  return n;
}

// The whole file as T[count]; its size must be exactly count * sizeof(T).
template <typename T>
std::vector<T> ReadArray(const std::string& dir, const std::string& file, const std::vector<int64_t>& dims, const char* dtype) {
  const std::string path = dir + "/" + file;
  const int64_t count = Elements(file, dims);
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw InputError("MissingFile", "expected " + path + " (" + dtype + " " + ShapeText(dims) + "), found no readable file");
  const std::streamoff size = in.tellg();
  const int64_t want = count * static_cast<int64_t>(sizeof(T));
  if (size != want)
    throw InputError("SizeMismatch", file + ": expected " + std::to_string(want) + " bytes (" + dtype + " " + ShapeText(dims) + "), got " +
                                         std::to_string(static_cast<long long>(size)) + " bytes");
  std::vector<T> data(static_cast<size_t>(count));
  in.seekg(0);
  if (count && !in.read(reinterpret_cast<char*>(data.data()), want)) throw InputError("ReadError", "could not read " + path);
  return data;
}

int64_t ParseInt(const std::string& where, const std::string& key, const std::string& text, int64_t lo, int64_t hi) {
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno == ERANGE || value < lo || value > hi)
    throw InputError("BadValue", where + ": " + key + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" + text + "'");
  return value;
}

bool SafeName(const std::string& name) {
  if (name.empty() || name[0] == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'; });
}

// One "case NAME key=value ..." line of cases.txt, then its arrays.
Case ParseCase(const std::string& dir, const std::string& line, int line_no) {
  std::istringstream tokens(line);
  std::string word, name;
  tokens >> word >> name;
  const std::string where = "cases.txt line " + std::to_string(line_no);
  if (word != "case") throw InputError("BadManifest", where + ": expected 'case NAME key=value ...', got '" + line + "'");
  if (!SafeName(name)) throw InputError("BadManifest", where + ": expected a case name of letters, digits, '-', '_', '.', got '" + name + "'");
  std::map<std::string, std::string> fields;
  while (tokens >> word) {
    const size_t eq = word.find('=');
    if (eq == std::string::npos) throw InputError("BadManifest", where + ": expected key=value, got '" + word + "'");
    fields[word.substr(0, eq)] = word.substr(eq + 1);
  }
  static const char* const kKeys[] = {"pattern", "window", "causal", "batch", "heads", "seq", "dim", "memory", "expected"};
  for (const auto& [key, value] : fields)
    if (std::find_if(std::begin(kKeys), std::end(kKeys), [&](const char* k) { return key == k; }) == std::end(kKeys))
      throw InputError("BadManifest", where + ": unknown key '" + key + "' (expected pattern, window, causal, batch, heads, seq, dim, memory, expected)");
  auto need = [&](const char* key) -> const std::string& {
    const auto it = fields.find(key);
    if (it == fields.end()) throw InputError("BadManifest", where + ": case '" + name + "' has no " + key + "=");
    return it->second;
  };
  Case c;
  c.name = name;
  const int64_t big = int64_t{1} << 31;
  if (!memx::ParsePattern(need("pattern"), &c.params.pattern))
    throw InputError("BadValue", where + ": pattern must be 'band' or 'chunked', got '" + need("pattern") + "'");
  c.params.window = ParseInt(where, "window", need("window"), 1, big);
  c.params.causal = ParseInt(where, "causal", need("causal"), 0, 1) != 0;
  c.shape.batch = ParseInt(where, "batch", need("batch"), 0, big);
  c.shape.heads = ParseInt(where, "heads", need("heads"), 0, big);
  c.shape.seq = ParseInt(where, "seq", need("seq"), 0, big);
  c.shape.head_dim = ParseInt(where, "dim", need("dim"), 1, big);
  c.shape.memory = ParseInt(where, "memory", need("memory"), 0, big);
  if (fields.count("expected")) c.has_expected = ParseInt(where, "expected", fields["expected"], 0, 1) != 0;

  const memx::AttentionShape& s = c.shape;
  const std::vector<int64_t> qkv{s.batch, s.heads, s.seq, s.head_dim}, mem{s.batch, s.heads, s.memory, s.head_dim};
  c.q = ReadArray<float>(dir, name + ".q.bin", qkv, "float32");
  c.k = ReadArray<float>(dir, name + ".k.bin", qkv, "float32");
  c.v = ReadArray<float>(dir, name + ".v.bin", qkv, "float32");
  c.lengths = ReadArray<int64_t>(dir, name + ".lengths.bin", {s.batch}, "int64");
  if (s.memory) {
    c.mem_k = ReadArray<float>(dir, name + ".mem_k.bin", mem, "float32");
    c.mem_v = ReadArray<float>(dir, name + ".mem_v.bin", mem, "float32");
  }
  if (c.has_expected) c.expected = ReadArray<float>(dir, name + ".expected.bin", qkv, "float32");
  return c;
}

std::vector<Case> ReadCases(const std::string& dir) {
  std::ifstream manifest(dir + "/cases.txt");
  if (!manifest) throw InputError("MissingFile", "expected " + dir + "/cases.txt (one 'case NAME key=value ...' a line), found no readable file");
  std::vector<Case> cases;
  std::string line;
  for (int line_no = 1; std::getline(manifest, line); ++line_no) {
    const size_t start = line.find_first_not_of(" \t\r");
    if (start == std::string::npos || line[start] == '#') continue;
    cases.push_back(ParseCase(dir, line.substr(start), line_no));
    for (size_t i = 0; i + 1 < cases.size(); ++i)
      if (cases[i].name == cases.back().name)
        throw InputError("BadManifest", "cases.txt line " + std::to_string(line_no) + ": case '" + cases.back().name + "' appears twice");
  }
  if (cases.empty()) throw InputError("BadManifest", "expected at least one case in " + dir + "/cases.txt, found none");
  return cases;
}

// max |a - b|; -1 when the two disagree on a NaN or an infinity (printed as null).
double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i]))) continue;
    const double d = std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
    if (!std::isfinite(d)) return -1.0;
    worst = std::max(worst, d);
  }
  return worst;
}

std::vector<float> Run(const memx::KernelInfo& kernel, const Case& c) {
  std::vector<float> out(c.q.size(), std::nanf(""));
  kernel.forward(c.params, c.shape, c.q.data(), c.k.data(), c.v.data(), c.lengths.data(), c.shape.memory ? c.mem_k.data() : nullptr,
                 c.shape.memory ? c.mem_v.data() : nullptr, out.data());
  return out;
}

double MedianMs(const memx::KernelInfo& kernel, const Case& c, int repeat) {
  Run(kernel, c);  // warm-up
  std::vector<double> ms;
  for (int i = 0; i < repeat; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    Run(kernel, c);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

std::string Number(double x) {
  if (x < 0 || !std::isfinite(x)) return "null";
  char text[32];
  std::snprintf(text, sizeof text, "%.9g", x);
  return text;
}

const char* Architecture() {
#if defined(__aarch64__)
  return "aarch64";
#elif defined(__x86_64__)
  return "x86_64";
#else
  return "other";
#endif
}

struct Options {
  std::string dir, out, only;
  int repeat = 0;
};

constexpr char kUsage[] = "usage: memx-ops-check DIR [--repeat N [--only VARIANT]] [--out FILE]";

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == "--repeat" || arg == "--out" || arg == "--only") && i + 1 < argc) {
      const std::string value = argv[++i];
      if (arg == "--out")
        o.out = value;
      else if (arg == "--only")
        o.only = value;
      else
        o.repeat = static_cast<int>(ParseInt("--repeat", "N", value, 1, 100000));
    } else if (!arg.empty() && arg[0] != '-' && o.dir.empty()) {
      o.dir = arg;
    } else {
      throw InputError("Usage", "unexpected argument '" + arg + "' (" + kUsage + ")");
    }
  }
  if (o.dir.empty()) throw InputError("Usage", std::string("expected a case directory (") + kUsage + ")");
  if (!o.only.empty() && !o.repeat) throw InputError("Usage", std::string("--only needs --repeat N (") + kUsage + ")");
  return o;
}

int Main(int argc, char** argv) {
  if (argc == 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::printf("%s\nRuns every LocalGlobalAttention kernel variant built in on DIR/cases.txt; prints JSON (see kernel_check.cc).\n", kUsage);
    return 0;
  }
  const Options options = ParseArgs(argc, argv);
  const std::vector<memx::KernelInfo> kernels = memx::RunnableKernels();  // baseline last
  std::string available;
  for (const auto& kernel : kernels) available += std::string(available.empty() ? "" : ", ") + kernel.variant;
  if (!options.only.empty() && std::none_of(kernels.begin(), kernels.end(), [&](const memx::KernelInfo& k) { return options.only == k.variant; }))
    throw InputError("Usage", "--only: expected one of the variants built in and runnable here (" + available + "), got '" + options.only + "'");
  const std::vector<Case> cases = ReadCases(options.dir);

  std::ostringstream json;
  json << "{\"tool\": \"memx-ops-check\", \"arch\": \"" << Architecture() << "\", \"variants\": [";
  for (size_t i = 0; i < kernels.size(); ++i) json << (i ? ", " : "") << "{\"variant\": \"" << kernels[i].variant << "\", \"name\": \"" << kernels[i].name << "\"}";
  json << "],\n \"cases\": [";
  for (size_t n = 0; n < cases.size(); ++n) {
    const Case& c = cases[n];
    std::vector<std::vector<float>> outputs;
    for (const auto& kernel : kernels) outputs.push_back(Run(kernel, c));
    json << (n ? ",\n  " : "\n  ") << "{\"name\": \"" << c.name << "\", \"max_abs_err\": {";
    for (size_t i = 0; c.has_expected && i < kernels.size(); ++i)
      json << (i ? ", " : "") << "\"" << kernels[i].variant << "\": " << Number(MaxAbsDiff(outputs[i], c.expected));
    json << "}, \"max_abs_diff_vs_baseline\": {";
    for (size_t i = 0; i + 1 < kernels.size(); ++i)
      json << (i ? ", " : "") << "\"" << kernels[i].variant << "\": " << Number(MaxAbsDiff(outputs[i], outputs.back()));
    json << "}";
    if (options.repeat) {
      json << ", \"median_ms\": {";
      const char* sep = "";
      for (const auto& kernel : kernels) {
        if (!options.only.empty() && options.only != kernel.variant) continue;
        json << sep << "\"" << kernel.variant << "\": " << Number(MedianMs(kernel, c, options.repeat));
        sep = ", ";
      }
      json << "}";
    }
    json << "}";
  }
  json << "]}\n";
  if (options.out.empty()) {
    std::fputs(json.str().c_str(), stdout);
  } else {
    std::ofstream out(options.out);
    if (!(out << json.str())) throw InputError("WriteError", "could not write " + options.out);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const InputError& e) {
    std::fprintf(stderr, "memx-ops-check: %s: %s\n", e.kind.c_str(), e.what());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "memx-ops-check: OutOfMemory: the cases do not fit in memory\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "memx-ops-check: Error: %s\n", e.what());
  }
  return 2;
}
