// What the shared corpora and the fuzz suite compare: a memx error's type name as Python names
// it ("ok" when nothing was thrown), and the files under tests/data.
#pragma once

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "memx/memx.hpp"

namespace memx::testing {

inline std::string text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

inline std::string data_file(const std::string& relative) { return text_file(std::string(MEMX_TEST_DATA_DIR) + "/" + relative); }

inline std::vector<uint8_t> bytes_of(const std::string& text) { return std::vector<uint8_t>(text.begin(), text.end()); }

// "ok" if `run` returns, else the most derived memx error type name, as Python names it; any
// other exception is "not a memx error: ..." (the fuzz suite counts those as failures)
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
  } catch (const std::exception& e) {
    return std::string("not a memx error: ") + e.what();
  }
}

// a schema {"name": {"shape": [...], "dtype": "float32"}, ...} as check_snapshot takes it
inline std::vector<StateLayout> schema_of(const nlohmann::json& schema) {
  std::vector<StateLayout> out;
  for (auto it = schema.begin(); it != schema.end(); ++it)
    out.push_back({it.key(), dtype_from_name(it.value()["dtype"].get<std::string>()), it.value()["shape"].get<Shape>()});
  return out;
}

// decode + check into a stream of model_id / batch (-1: any) / schema, as Stream::restore does
inline std::string restore_verdict(const std::vector<uint8_t>& blob, const std::string& model_id, int64_t batch, const std::vector<StateLayout>& schema,
                                   SnapshotData* out = nullptr) {
  SnapshotData data;
  std::string v = verdict_of([&] {
    data = decode_snapshot(blob);
    check_snapshot(data, model_id, batch, schema);
  });
  if (out) *out = std::move(data);
  return v;
}

inline std::string manifest_verdict(const std::string& text, std::string* model_id = nullptr) {
  return verdict_of([&] {
    Manifest m = Manifest::parse(text);
    if (model_id) *model_id = m.model_id;
  });
}

}  // namespace memx::testing
