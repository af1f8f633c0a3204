// The shared manifest corpus (tests/data/manifests/corpus.json): every case gets the verdict
// it records, the one Python's reader gives too (tests/package/test_corpus.py).
#include <gtest/gtest.h>

#include <string>

#include <nlohmann/json.hpp>

#include "memx/memx.hpp"
#include "verdicts.hpp"

using namespace memx;
using namespace memx::testing;
using nlohmann::json;

namespace {
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

}  // namespace

TEST(Corpus, CppReaderGivesEveryRecordedVerdict) {
  json doc = corpus();
  ASSERT_GE(doc["cases"].size(), 20u);
  for (const auto& c : doc["cases"]) {
    std::string id;
    std::string got = manifest_verdict(case_text(doc["base"], c), &id);
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
    EXPECT_EQ(restore_verdict(blob, doc["model_id"].get<std::string>(), batch.is_null() ? -1 : batch.get<int64_t>(), schema_of(doc["schema"]), &data),
              c["verdict"].get<std::string>())
        << c["name"];
    if (c["verdict"] != "ok") continue;
    EXPECT_EQ(data.segments, c["segments"].get<int64_t>()) << c["name"];
    EXPECT_EQ(data.pending_reset, c["pending_reset"].get<std::vector<bool>>()) << c["name"];
    if (!c.value("canonical", true)) continue;  // hand-edited bytes: not what an encoder writes
    data.order.clear();
    for (const auto& name : {"memory", "position"}) data.order.push_back(name);  // the order Python wrote them in
    EXPECT_EQ(encode_snapshot(data), blob) << c["name"] << ": C++ re-encodes to other bytes";
  }
}
