// Fuzz properties of libmemx's readers and runtime (issue 17). Generated bad input of every
// kind gets a typed memx::Error or a correct result: never a crash (this suite also runs under
// ASan/UBSan), a hang, an exception that is not a memx::Error, or an accepted mutation that
// changes what is read. Each test prints its tally (cases, typed refusals, accepted).
//
//   MEMX_FUZZ_CASES  cases per test (default 3000; `make fuzz` runs many more)
//   MEMX_FUZZ_SEED   the seed (default 1); a failure names the case's index to replay it
//   MEMX_FUZZ_DIR    judge the cases tests/fuzz wrote there and write cpp-verdicts.json beside
//                    them (the Python side then compares verdicts case by case)
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "memx/memx.hpp"
#include "verdicts.hpp"

using namespace memx;
using namespace memx::testing;
using nlohmann::json;

namespace {

constexpr double kHangSeconds = 10.0;  // a case this slow counts as a hang (cases take well under 10 ms)

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoll(v, nullptr, 10) : fallback;
}

int64_t fuzz_cases() { return env_int("MEMX_FUZZ_CASES", 3000); }
uint64_t fuzz_seed() { return static_cast<uint64_t>(env_int("MEMX_FUZZ_SEED", 1)); }

struct Tally {
  std::string family;
  int64_t cases = 0, refused = 0, accepted = 0;
  ~Tally() { std::printf("fuzz %s: %lld cases, %lld typed refusals, %lld accepted\n", family.c_str(), (long long)cases, (long long)refused, (long long)accepted); }
};

// Runs one case, time-bounded, and counts its verdict; an exception that is not a memx::Error fails the test.
template <typename Fn>
std::string judge(Tally& tally, int64_t index, Fn run) {
  const auto t0 = std::chrono::steady_clock::now();
  std::string v = run();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ++tally.cases;
  (v == "ok" ? tally.accepted : tally.refused) += 1;
  EXPECT_LT(seconds, kHangSeconds) << tally.family << " case " << index << " took " << seconds << " s";
  EXPECT_EQ(v.rfind("not a memx error", 0), std::string::npos) << tally.family << " case " << index << ": " << v;
  return v;
}

// -- mutations ---------------------------------------------------------------------------------

std::vector<uint8_t> mutate_bytes(std::mt19937_64& rng, std::vector<uint8_t> blob) {
  static const uint8_t kInteresting[] = {0x00, 0xFF, 0x7F, 0x80, '"', '{', '}', '[', ']', ',', ':', '-', '9', '\\', 'e', '.'};
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    const std::size_t n = blob.size();
    const std::size_t at = n ? rng() % n : 0;
    switch (rng() % 7) {
      case 0:
        if (n) blob[at] ^= uint8_t(1u << (rng() % 8));
        break;
      case 1:
        if (n) blob[at] = kInteresting[rng() % sizeof kInteresting];
        break;
      case 2:
        for (std::size_t k = 1 + rng() % 8; k; --k) blob.insert(blob.begin() + static_cast<std::ptrdiff_t>(std::min(at, blob.size())), uint8_t(rng()));
        break;
      case 3:
        if (n) blob.erase(blob.begin() + at, blob.begin() + std::min(n, at + 1 + rng() % 16));
        break;
      case 4:
        blob.resize(at);
        break;
      case 5:
        if (n) {
          const std::size_t len = std::min(n - at, std::size_t(1 + rng() % 32));
          std::vector<uint8_t> piece(blob.begin() + at, blob.begin() + at + len);
          blob.insert(blob.begin() + rng() % (n + 1), piece.begin(), piece.end());
        }
        break;
      default:
        if (n >= 4) std::memset(blob.data() + std::min(at, n - 4), rng() % 2 ? 0xFF : 0x00, 4);
    }
  }
  return blob;
}

// JSON values that sit on the edges of what a field may hold
json tricky_value(std::mt19937_64& rng) {
  static const std::vector<json> kValues = {
      -1, 0, 1, 2, 7, 255, 65536, 65537, int64_t(1) << 31, (int64_t(1) << 32) + 1, (int64_t(1) << 53) + 1, INT64_MAX, uint64_t(1) << 63,
      UINT64_MAX, INT64_MIN, 0.5, 7.0, -0.0, 1e300, true, false, nullptr, "", "x", "float32", "<f4", "|b1", "segment", "batch", "step",
      "\xc3\xa9", json::array(), json::array({1}), json::array({"no"}), json::array({true, false}), json::object(), json::object({{"a", 1}})};
  return kValues[rng() % kValues.size()];
}

void pointers_of(const json& node, const json::json_pointer& at, std::vector<json::json_pointer>* out) {
  out->push_back(at);
  if (node.is_object()) {
    for (auto it = node.begin(); it != node.end(); ++it) pointers_of(it.value(), at / it.key(), out);
  } else if (node.is_array()) {
    for (std::size_t i = 0; i < node.size(); ++i) pointers_of(node[i], at / std::to_string(i), out);
  }
}

// one structural edit of a JSON document: a node replaced, deleted, given a sibling or a child
json mutate_json(std::mt19937_64& rng, json doc) {
  const int edits = 1 + static_cast<int>(rng() % 3);
  for (int e = 0; e < edits; ++e) {
    std::vector<json::json_pointer> at;
    pointers_of(doc, json::json_pointer(), &at);
    const json::json_pointer p = at[rng() % at.size()];
    const unsigned op = rng() % 4;
    if (op == 0 || p.empty()) {
      doc[p] = tricky_value(rng);
    } else if (op == 1) {
      json& parent = doc[p.parent_pointer()];
      if (parent.is_object()) parent.erase(p.back());
      else parent.erase(static_cast<std::size_t>(std::stoul(p.back())));
    } else if (op == 2 && doc[p].is_object()) {
      doc[p]["fuzz_" + std::to_string(rng() % 4)] = tricky_value(rng);
    } else if (op == 2 && doc[p].is_array()) {
      doc[p].push_back(doc[p].empty() ? tricky_value(rng) : doc[p][rng() % doc[p].size()]);
    } else {
      doc[p] = tricky_value(rng);
    }
  }
  return doc;
}

// -- snapshots: the corpus's model, schema and batch -------------------------------------------

struct SnapshotTarget {
  json doc = json::parse(data_file("snapshots/corpus.json"));
  std::vector<uint8_t> valid = bytes_of(data_file("snapshots/valid.snap"));
  std::string model_id = doc["model_id"].get<std::string>();
  int64_t batch = doc["batch"].get<int64_t>();
  std::vector<StateLayout> schema = schema_of(doc["schema"]);
};

constexpr std::size_t kPrefix = 14, kDigest = 32;

// the header as JSON and the payload of a snapshot memx wrote
std::pair<json, std::vector<uint8_t>> split(const std::vector<uint8_t>& blob) {
  uint32_t len = 0;
  for (int i = 0; i < 4; ++i) len |= uint32_t(blob[10 + i]) << (8 * i);
  json header = json::parse(blob.begin() + kPrefix, blob.begin() + kPrefix + len);
  return {header, std::vector<uint8_t>(blob.begin() + kPrefix + len, blob.end() - kDigest)};
}

// a snapshot with this header text and payload, checksum recomputed (a forgery, not corruption)
std::vector<uint8_t> sealed(const std::string& header, const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> blob = {'M', 'E', 'M', 'X', 'S', 'N', 'A', 'P', 1, 0};
  for (int i = 0; i < 4; ++i) blob.push_back(uint8_t(header.size() >> (8 * i)));
  blob.insert(blob.end(), header.begin(), header.end());
  blob.insert(blob.end(), payload.begin(), payload.end());
  const std::vector<uint8_t> digest = sha256(blob.data(), blob.size());
  blob.insert(blob.end(), digest.begin(), digest.end());
  return blob;
}

bool same_data(const SnapshotData& a, const SnapshotData& b) {
  if (a.model_id != b.model_id || a.pending_reset != b.pending_reset || a.segments != b.segments || a.states.size() != b.states.size()) return false;
  for (const auto& [name, t] : a.states) {
    auto it = b.states.find(name);
    if (it == b.states.end() || it->second.dtype != t.dtype || it->second.shape != t.shape || it->second.bytes != t.bytes) return false;
  }
  return true;
}

}  // namespace

TEST(Fuzz, SnapshotBytesAlteredAreRefusedUnlessUnchanged) {
  const SnapshotTarget target;
  Tally tally{"snapshot bytes (C++)"};
  std::mt19937_64 rng(fuzz_seed());
  for (int64_t i = 0; i < fuzz_cases(); ++i) {
    const std::vector<uint8_t> blob = mutate_bytes(rng, target.valid);
    const std::string v = judge(tally, i, [&] { return restore_verdict(blob, target.model_id, target.batch, target.schema); });
    if (v == "ok") EXPECT_EQ(blob, target.valid) << "case " << i << ": altered bytes were accepted";
  }
}

TEST(Fuzz, ForgedSnapshotHeadersAreJudgedByTypeAndRange) {
  const SnapshotTarget target;
  const auto [header, payload] = split(target.valid);
  Tally tally{"forged snapshot headers (C++)"};
  std::mt19937_64 rng(fuzz_seed() + 1);
  for (int64_t i = 0; i < fuzz_cases(); ++i) {
    const std::vector<uint8_t> blob = sealed(mutate_json(rng, header).dump(), payload);
    SnapshotData data;
    const std::string v = judge(tally, i, [&] { return restore_verdict(blob, target.model_id, target.batch, target.schema, &data); });
    if (v != "ok") continue;  // accepted: a forgery memx cannot tell from a snapshot; it must read back as itself
    SnapshotData again = decode_snapshot(encode_snapshot(data));
    EXPECT_TRUE(same_data(data, again)) << "case " << i;
    EXPECT_EQ(static_cast<int64_t>(data.pending_reset.size()), target.batch) << "case " << i;
    EXPECT_GE(data.segments, 0) << "case " << i;
  }
}

TEST(Fuzz, ManifestEditsGiveAManifestErrorOrAManifest) {
  const json base = json::parse(data_file("manifests/corpus.json"))["base"];
  const std::string text = base.dump();
  Tally tally{"manifests (C++)"};
  std::mt19937_64 rng(fuzz_seed() + 2);
  for (int64_t i = 0; i < fuzz_cases(); ++i) {
    std::string edited;
    if (i % 2) {
      const std::vector<uint8_t> b = mutate_bytes(rng, bytes_of(text));
      edited.assign(b.begin(), b.end());
    } else {
      edited = mutate_json(rng, base).dump();
    }
    judge(tally, i, [&] { return manifest_verdict(edited); });
  }
}

namespace {
const char* fuzz_package() { return std::getenv("MEMX_TEST_PACKAGE"); }

DType any_dtype(std::mt19937_64& rng) {
  static const DType kAll[] = {DType::Int64, DType::Int64, DType::Int64, DType::Int32, DType::Float32, DType::Float16, DType::BFloat16, DType::Int8, DType::UInt8, DType::Bool};
  return kAll[rng() % (sizeof kAll / sizeof kAll[0])];
}

// a tensor of some dtype and shape near [batch, segment], its bytes random or near the edges of int64
Tensor any_tensor(std::mt19937_64& rng, int64_t batch, int64_t max_len, int64_t vocab) {
  Shape shape;
  const int rank = static_cast<int>(rng() % 4);
  for (int r = 0; r < rank; ++r) {
    const int64_t pick = static_cast<int64_t>(rng() % 6);
    shape.push_back(pick == 0 ? 0 : pick == 1 ? batch : pick == 2 ? max_len : pick == 3 ? max_len + 1 : 1 + static_cast<int64_t>(rng() % max_len));
  }
  Tensor t(rng() % 3 ? DType::Int64 : any_dtype(rng), shape);
  if (t.dtype == DType::Int64) {
    static const int64_t kEdges[] = {-1, 0, 1, INT64_MIN, INT64_MAX};
    for (int64_t k = 0; k < t.size(); ++k)
      t.data<int64_t>()[k] = rng() % 8 ? static_cast<int64_t>(rng() % static_cast<uint64_t>(vocab + 2)) - 1 : kEdges[rng() % 5];
  } else {
    for (auto& b : t.bytes) b = uint8_t(rng());
  }
  return t;
}

Tensor maybe(std::mt19937_64& rng, Tensor good, const std::function<Tensor()>& bad) { return rng() % 3 ? good : bad(); }
}  // namespace

TEST(Fuzz, StreamInputsOutOfContractLeaveTheStateUnchanged) {
  if (!fuzz_package()) GTEST_SKIP() << "needs MEMX_TEST_PACKAGE (a memx package; `make cpp-test` exports one)";
  Runtime rt(fuzz_package());
  const Manifest& m = rt.manifest();
  if (!m.inputs.empty()) GTEST_SKIP() << "the fuzzed package must take tokens only";
  const int64_t batch = 2, max_len = m.segment_max;
  Stream s = rt.stream(batch);
  s.step(make_tokens(std::vector<int64_t>(batch * 4, 1), batch, 4));
  Tally tally{"stream inputs (C++)"};
  std::mt19937_64 rng(fuzz_seed() + 3);
  for (int64_t i = 0; i < fuzz_cases(); ++i) {
    const std::vector<uint8_t> before = s.snapshot();
    const int64_t len = 1 + static_cast<int64_t>(rng() % max_len);
    const Tensor tokens = maybe(rng, make_tokens(std::vector<int64_t>(batch * len, 3), batch, len), [&] { return any_tensor(rng, batch, max_len, m.vocab_size); });
    const Tensor lengths = maybe(rng, Tensor(), [&] { return any_tensor(rng, batch, max_len, max_len); });
    const Tensor reset = maybe(rng, Tensor(), [&] { return rng() % 2 ? make_reset(std::vector<bool>(rng() % 4, true)) : any_tensor(rng, batch, max_len, 2); });
    const unsigned what = static_cast<unsigned>(rng() % 8);
    const std::string v = judge(tally, i, [&] {
      return verdict_of([&] {
        if (what == 0) {
          s.reset({static_cast<int64_t>(rng() % 5) - 2});
        } else if (what == 1) {
          s.restore(mutate_bytes(rng, before));
        } else {
          s.step(tokens, lengths, reset);
        }
      });
    });
    if (v != "ok") EXPECT_EQ(s.snapshot(), before) << "case " << i << ": a refused call changed the stream (" << v << ")";
  }
}

// MEMX_FUZZ_DIR/cases.json: {"snapshot": {"model_id", "batch", "schema"}, "cases": [{"file", "kind": "snapshot"|"manifest", "batch"?}]}
TEST(Fuzz, PythonsGeneratedCasesGetTheirVerdictsHere) {
  const char* dir = std::getenv("MEMX_FUZZ_DIR");
  if (!dir) GTEST_SKIP() << "needs MEMX_FUZZ_DIR (tests/fuzz writes the cases and compares the verdicts)";
  const json doc = json::parse(text_file(std::string(dir) + "/cases.json"));
  const json& target = doc["snapshot"];
  const std::vector<StateLayout> schema = schema_of(target["schema"]);
  const std::string model_id = target["model_id"].get<std::string>();
  json verdicts = json::object();
  Tally tally{"Python's cases (C++)"};
  int64_t index = 0;
  for (const auto& c : doc["cases"]) {
    const std::string file = c["file"].get<std::string>();
    const std::string bytes = text_file(std::string(dir) + "/" + file);
    verdicts[file] = judge(tally, index++, [&] {
      if (c["kind"] == "manifest") return manifest_verdict(bytes);
      const json batch = c.contains("batch") ? c["batch"] : target["batch"];
      return restore_verdict(bytes_of(bytes), model_id, batch.is_null() ? -1 : batch.get<int64_t>(), schema);
    });
  }
  std::ofstream(std::string(dir) + "/cpp-verdicts.json") << verdicts.dump(1);
}
