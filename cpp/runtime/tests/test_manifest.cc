#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "memx/memx.hpp"
#include "pyjson.hpp"
#include "package.hpp"

using namespace memx;
using nlohmann::json;

namespace {
const char* kValid = R"J({"format": "memx.package", "format_version": 1, "family": "rmt", "preset": "rmt-tiny", "config": {"d_model": 32, "dropout": 0.0, "eps": 1e-05, "scale": 0.125, "name": "r\u00e9sum\u00e9", "layers": [1, 2], "flag": true, "none": null}, "vocab_size": 64, "segment": {"min": 1, "max": 16}, "graphs": [{"name": "step", "file": "step.onnx", "role": "step", "inputs": [{"name": "tokens", "dtype": "int64", "shape": ["batch", "segment"]}, {"name": "lengths", "dtype": "int64", "shape": ["batch"]}, {"name": "reset", "dtype": "bool", "shape": ["batch"]}, {"name": "state_in.memory", "dtype": "float32", "shape": ["batch", 4, 32]}], "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", "segment", 64]}, {"name": "state_out.memory", "dtype": "float32", "shape": ["batch", 4, 32]}]}], "state": [{"name": "memory", "shape": ["batch", 4, 32], "dtype": "float32", "precision": "fp32", "input": "state_in.memory", "output": "state_out.memory", "graph": "step"}], "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", "segment", 64], "segment_axis": 1, "graph": "step"}], "precision": "fp32", "provenance": {"weights_sha256": "abababababababababababababababababababababababababababababababab", "memx_version": "0.1.0"}, "files": {"step.onnx": {"bytes": 10, "sha256": "0000000000000000000000000000000000000000000000000000000000000000"}}})J";

json valid() { return json::parse(kValid); }

template <typename E>
E refused(const json& m) {
  try {
    Manifest::parse(m.dump());
  } catch (const E& e) {
    return e;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong error type: " << e.what();
    throw;
  }
  ADD_FAILURE() << "manifest was accepted";
  throw std::runtime_error("accepted");
}
}  // namespace

TEST(Manifest, ParsesEveryField) {
  Manifest m = Manifest::parse(kValid);
  EXPECT_EQ(m.family, "rmt");
  EXPECT_EQ(m.preset.value(), "rmt-tiny");
  EXPECT_EQ(m.vocab_size, 64);
  EXPECT_EQ(m.segment_min, 1);
  EXPECT_EQ(m.segment_max, 16);
  ASSERT_EQ(m.graphs.size(), 1u);
  EXPECT_EQ(m.graphs[0].inputs.size(), 4u);
  EXPECT_EQ(m.graphs[0].inputs[0].shape[1].name, "segment");
  ASSERT_EQ(m.state.size(), 1u);
  EXPECT_EQ(m.state[0].dims, (Shape{4, 32}));
  EXPECT_EQ(m.state[0].dtype, DType::Float32);
  EXPECT_EQ(m.outputs[0].segment_axis.value(), 1);
  EXPECT_EQ(m.files.at("step.onnx").bytes, 10);
  EXPECT_EQ(m.step_inputs(), (std::vector<std::string>{"tokens", "lengths", "reset", "state_in.memory"}));
}

TEST(Manifest, ModelIdIsComputedAsPythonComputesItAndAStoredOneMustMatch) {
  const std::string computed = Manifest::parse(kValid).model_id;  // written before the id was stored: computed
  ASSERT_EQ(computed.size(), 64u);
  json with_id = valid();
  with_id["model_id"] = computed;
  EXPECT_EQ(Manifest::parse(with_id.dump()).model_id, computed);
  with_id["model_id"] = std::string(64, 'e');
  auto edited = refused<ManifestError>(with_id);
  EXPECT_EQ(edited.expected(), computed.substr(0, 16));
  EXPECT_EQ(edited.actual(), std::string(16, 'e'));
  with_id["model_id"] = "EEEE";
  auto e = refused<ManifestError>(with_id);
  EXPECT_EQ(e.expected(), "64 lowercase hex digits");
  EXPECT_EQ(e.actual(), "EEEE");
}

TEST(Manifest, FloatsInTheConfigAreWrittenAsPythonWritesThem) {
  for (const auto& [x, text] : std::vector<std::pair<double, std::string>>{
           {1e-05, "1e-05"}, {0.0001, "0.0001"}, {0.125, "0.125"}, {0.0, "0.0"}, {-0.0, "-0.0"}, {1e16, "1e+16"}, {1e15, "1000000000000000.0"},
           {123.0, "123.0"}, {0.1, "0.1"}, {1.0 / 3, "0.3333333333333333"}, {-2.5e-300, "-2.5e-300"}, {6.02214076e23, "6.02214076e+23"}})
    EXPECT_EQ(detail::python_float_repr(x), text);
}

TEST(Manifest, RefusesUnknownFormatVersionNamingBoth) {
  json m = valid();
  m["format_version"] = 2;
  auto e = refused<ManifestVersionError>(m);
  EXPECT_EQ(e.expected(), "1");
  EXPECT_EQ(e.actual(), "2");
  EXPECT_NE(std::string(e.what()).find("upgrade memx"), std::string::npos);
}

TEST(Manifest, RefusesWhatIsNotAMemxManifest) {
  EXPECT_THROW(Manifest::parse("{not json"), ManifestError);
  EXPECT_THROW(Manifest::parse("[1, 2]"), ManifestError);
  json m = valid();
  m["format"] = "onnx";
  EXPECT_EQ(refused<ManifestError>(m).actual(), "\"onnx\"");
}

TEST(Manifest, RefusesMissingAndMistypedFields) {
  json missing = valid();
  missing.erase("vocab_size");
  auto e = refused<ManifestError>(missing);
  EXPECT_NE(std::string(e.what()).find("vocab_size is missing"), std::string::npos);
  json mistyped = valid();
  mistyped["vocab_size"] = "64";
  auto t = refused<ManifestError>(mistyped);
  EXPECT_EQ(t.expected(), "int");
  EXPECT_EQ(t.actual(), "str");
  json boolean = valid();
  boolean["segment"]["max"] = true;  // a bool is not an int
  refused<ManifestError>(boolean);
}

TEST(Manifest, RefusesUnknownFields) {
  json m = valid();
  m["surprise"] = 1;
  EXPECT_EQ(refused<ManifestError>(m).actual(), "[\"surprise\"]");
  json nested = valid();
  nested["state"][0]["extra"] = 1;
  refused<ManifestError>(nested);
}

TEST(Manifest, RefusesInconsistentContent) {
  json seg = valid();
  seg["segment"]["min"] = 20;
  refused<ManifestError>(seg);
  json dtype = valid();
  dtype["state"][0]["dtype"] = "float64";
  EXPECT_EQ(refused<ManifestError>(dtype).actual(), "float64");
  json batch_not_first = valid();
  batch_not_first["state"][0]["shape"] = json::array({4, "batch", 32});
  refused<ManifestError>(batch_not_first);
  json same_buffer = valid();
  same_buffer["state"][0]["output"] = "state_in.memory";
  refused<ManifestError>(same_buffer);
  json unwired = valid();
  unwired["state"][0]["output"] = "state_out.other";
  refused<ManifestError>(unwired);
  json unknown_graph = valid();
  unknown_graph["outputs"][0]["graph"] = "decoder";
  refused<ManifestError>(unknown_graph);
  json unlisted = valid();
  unlisted["files"] = json::object();
  refused<ManifestError>(unlisted);
  json precision = valid();
  precision["precision"] = "int4";
  refused<ManifestError>(precision);
  json no_source = valid();
  no_source["graphs"][0]["inputs"].push_back({{"name", "mystery"}, {"dtype", "float32"}, {"shape", {1}}});
  refused<ManifestError>(no_source);
}

TEST(Package, RefusesPathsThatLeaveThePackage) {
  const auto root = std::filesystem::temp_directory_path() / "memx-gtest-pkg";
  std::filesystem::create_directories(root);
  EXPECT_THROW(detail::safe_join(root.string(), "../outside.onnx"), UnsafePathError);
  EXPECT_THROW(detail::safe_join(root.string(), "/etc/passwd"), UnsafePathError);
  EXPECT_THROW(detail::safe_join(root.string(), "a/../../x"), UnsafePathError);
  EXPECT_THROW(detail::safe_join(root.string(), ""), UnsafePathError);
  EXPECT_EQ(detail::safe_join(root.string(), "sub/step.onnx"), (std::filesystem::weakly_canonical(root) / "sub/step.onnx").string());
}

TEST(Package, RefusesMissingOrResizedFiles) {
  const auto root = std::filesystem::temp_directory_path() / "memx-gtest-files";
  std::filesystem::remove_all(root);
  std::filesystem::create_directories(root);
  Manifest m = Manifest::parse(kValid);
  EXPECT_THROW(detail::check_package_files(root.string(), m, false), PackageFileError);
  std::ofstream(root / "step.onnx") << "0123456789";  // the recorded 10 bytes
  EXPECT_NO_THROW(detail::check_package_files(root.string(), m, false));
  try {
    detail::check_package_files(root.string(), m, true);  // the recorded hash is all zeros
    ADD_FAILURE() << "hash mismatch accepted";
  } catch (const PackageFileError& e) {
    EXPECT_EQ(e.expected(), "0000000000000000");
  }
  std::ofstream(root / "step.onnx") << "01234567890";
  try {
    detail::check_package_files(root.string(), m, false);
    ADD_FAILURE() << "size mismatch accepted";
  } catch (const PackageFileError& e) {
    EXPECT_EQ(e.expected(), "10 bytes");
    EXPECT_EQ(e.actual(), "11 bytes");
  }
  std::filesystem::remove_all(root);
}

TEST(Package, MissingManifestIsAManifestError) {
  EXPECT_THROW(Manifest::load("/nonexistent/pkg.memx"), ManifestError);
  EXPECT_THROW(Runtime("/nonexistent/pkg.memx"), ManifestError);
}
