// The shared manifest corpus (tests/data/manifests/corpus.json): every case gets the verdict
// it records, the one Python's reader gives too (tests/package/test_corpus.py).
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "memx/memx.hpp"

using namespace memx;
using nlohmann::json;

namespace {
std::string data_file(const std::string& relative) {
  const std::string path = std::string(MEMX_TEST_DATA_DIR) + "/" + relative;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

json corpus() { return json::parse(data_file("manifests/corpus.json")); }

// a corpus path ["state", 0, "dtype"] -> the node's parent and the last key
json::json_pointer pointer(const json& path) {
  json::json_pointer p;
  for (const auto& key : path) p /= key.is_number() ? std::to_string(key.get<int>()) : key.get<std::string>();
  return p;
}

std::string case_text(const json& base, const json& c) {
  if (c.contains("raw")) return c["raw"].get<std::string>();
  json doc = base;
  for (const auto& edit : c.value("set", json::array())) doc[pointer(edit[0])] = edit[1];
  for (const auto& path : c.value("delete", json::array())) {
    json::json_pointer p = pointer(path);
    doc[p.parent_pointer()].erase(p.back());
  }
  for (const auto& edit : c.value("append", json::array())) doc[pointer(edit[0])].push_back(edit[1]);
  return doc.dump();
}

// "ok" if `run` returns, else the most derived memx error type name, as Python names it
template <typename Fn>
std::string verdict_of(Fn run) {
  try {
    run();
    return "ok";
  } catch (const ManifestVersionError&) {
    return "ManifestVersionError";
  } catch (const ManifestError&) {
    return "ManifestError";
  } catch (const SnapshotCorruptError&) {
    return "SnapshotCorruptError";
  } catch (const SnapshotMismatchError&) {
    return "SnapshotMismatchError";
  } catch (const NonFiniteStateError&) {
    return "NonFiniteStateError";
  } catch (const Error& e) {
    return std::string("other memx error: ") + e.what();
  }
}

std::string restore_verdict(const std::vector<uint8_t>& blob, const json& doc, int64_t batch, SnapshotData* out) {
  std::vector<StateLayout> schema;
  for (auto it = doc["schema"].begin(); it != doc["schema"].end(); ++it)
    schema.push_back({it.key(), dtype_from_name(it.value()["dtype"].get<std::string>()), it.value()["shape"].get<Shape>()});
  return verdict_of([&] {
    *out = decode_snapshot(blob);
    check_snapshot(*out, doc["model_id"].get<std::string>(), batch, schema);
  });
}

std::string verdict(const std::string& text, std::string* model_id) {
  return verdict_of([&] { *model_id = Manifest::parse(text).model_id; });
}
}  // namespace

TEST(Corpus, CppReaderGivesEveryRecordedVerdict) {
  json doc = corpus();
  ASSERT_GE(doc["cases"].size(), 20u);
  for (const auto& c : doc["cases"]) {
    std::string id;
    std::string got = verdict(case_text(doc["base"], c), &id);
    EXPECT_EQ(got, c.value("cpp_verdict", c["verdict"].get<std::string>())) << c["name"];
    if (c.contains("cpp_model_id")) {
      EXPECT_EQ(id, c["cpp_model_id"].get<std::string>()) << c["name"];
    } else if (c.contains("model_id")) {
      EXPECT_EQ(id, c["model_id"].get<std::string>()) << c["name"];
    }
  }
}

TEST(Corpus, CppReaderGivesEverySnapshotItsRecordedVerdict) {
  const json doc = json::parse(data_file("snapshots/corpus.json"));
  ASSERT_GE(doc["cases"].size(), 60u);
  for (const auto& c : doc["cases"]) {
    const std::string text = data_file("snapshots/" + c["file"].get<std::string>());
    const std::vector<uint8_t> blob(text.begin(), text.end());
    const json batch = c.contains("batch") ? c["batch"] : doc["batch"];
    SnapshotData data;
    EXPECT_EQ(restore_verdict(blob, doc, batch.is_null() ? -1 : batch.get<int64_t>(), &data), c["verdict"].get<std::string>()) << c["name"];
    if (c["verdict"] != "ok") continue;
    EXPECT_EQ(data.segments, c["segments"].get<int64_t>()) << c["name"];
    EXPECT_EQ(data.pending_reset, c["pending_reset"].get<std::vector<bool>>()) << c["name"];
    if (!c.value("canonical", true)) continue;  // hand-edited bytes: not what an encoder writes
    data.order.clear();
    for (const auto& name : {"memory", "position"}) data.order.push_back(name);  // the order Python wrote them in
    EXPECT_EQ(encode_snapshot(data), blob) << c["name"] << ": C++ re-encodes to other bytes";
  }
}
