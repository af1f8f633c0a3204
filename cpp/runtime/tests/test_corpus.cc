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
json corpus() {
  std::ifstream in(std::string(MEMX_TEST_DATA_DIR) + "/manifests/corpus.json");
  if (!in) throw std::runtime_error("cannot read " + std::string(MEMX_TEST_DATA_DIR) + "/manifests/corpus.json");
  std::stringstream text;
  text << in.rdbuf();
  return json::parse(text.str());
}

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

// the most derived error type name, as Python names it
std::string verdict(const std::string& text, std::string* model_id) {
  try {
    Manifest m = Manifest::parse(text);
    *model_id = m.model_id;
    return "ok";
  } catch (const ManifestVersionError&) {
    return "ManifestVersionError";
  } catch (const ManifestError&) {
    return "ManifestError";
  } catch (const Error& e) {
    return std::string("other memx error: ") + e.what();
  }
}
}  // namespace

TEST(Corpus, CppReaderGivesEveryRecordedVerdict) {
  json doc = corpus();
  ASSERT_GE(doc["cases"].size(), 20u);
  for (const auto& c : doc["cases"]) {
    std::string id;
    std::string got = verdict(case_text(doc["base"], c), &id);
    EXPECT_EQ(got, c["verdict"].get<std::string>()) << c["name"];
    if (c.contains("model_id")) EXPECT_EQ(id, c["model_id"].get<std::string>()) << c["name"];
  }
}
