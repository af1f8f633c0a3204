#include "onnx_scan.hpp"

#include <filesystem>
#include <set>

#include "memx/errors.hpp"
#include "memx/npy.hpp"
#include "package.hpp"

namespace memx::detail {

namespace {

// ONNX field numbers (onnx.proto3)
enum : uint32_t {
  kModelGraph = 7, kModelFunctions = 25,
  kGraphNode = 1, kGraphInitializer = 5, kGraphSparseInitializer = 15,
  kNodeAttribute = 5,
  kAttributeTensor = 5, kAttributeGraph = 6, kAttributeTensors = 10, kAttributeGraphs = 11, kAttributeSparseTensor = 22, kAttributeSparseTensors = 23,
  kTensorExternalData = 13,
  kEntryKey = 1, kEntryValue = 2,
  kSparseValues = 1, kSparseIndices = 2,
  kFunctionNode = 7,
};

struct Field {
  uint32_t number = 0;
  uint32_t wire = 0;
  const uint8_t* data = nullptr;  // payload of length-delimited fields
  std::size_t size = 0;
};

class Reader {
 public:
  Reader(const uint8_t* p, std::size_t n) : p_(p), end_(p + n) {}

  bool next(Field& f) {
    if (p_ >= end_) return false;
    const uint64_t tag = varint();
    f.number = static_cast<uint32_t>(tag >> 3);
    f.wire = static_cast<uint32_t>(tag & 7);
    f.data = nullptr;
    f.size = 0;
    switch (f.wire) {
      case 0: varint(); break;
      case 1: skip(8); break;
      case 5: skip(4); break;
      case 2: {
        const uint64_t n = varint();
        if (n > static_cast<uint64_t>(end_ - p_)) fail();
        f.data = p_;
        f.size = static_cast<std::size_t>(n);
        p_ += n;
        break;
      }
      default: fail();
    }
    return true;
  }

 private:
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ >= end_) fail();
      const uint8_t b = *p_++;
      v |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    fail();
  }
  void skip(std::size_t n) {
    if (n > static_cast<std::size_t>(end_ - p_)) fail();
    p_ += n;
  }
  [[noreturn]] static void fail() { throw PackageError("ONNX file is not a well-formed protobuf message", "an ONNX ModelProto", "malformed bytes"); }

  const uint8_t* p_;
  const uint8_t* end_;
};

using Out = std::vector<std::string>;
void graph(const uint8_t* p, std::size_t n, Out& out, int depth);

void tensor(const uint8_t* p, std::size_t n, Out& out) {
  Reader r(p, n);
  for (Field f; r.next(f);) {
    if (f.number != kTensorExternalData || f.wire != 2) continue;
    std::string key, value;
    Reader e(f.data, f.size);
    for (Field kv; e.next(kv);) {
      if (kv.wire != 2) continue;
      if (kv.number == kEntryKey) key.assign(reinterpret_cast<const char*>(kv.data), kv.size);
      if (kv.number == kEntryValue) value.assign(reinterpret_cast<const char*>(kv.data), kv.size);
    }
    if (key == "location") out.push_back(value);
  }
}

void sparse_tensor(const uint8_t* p, std::size_t n, Out& out) {
  Reader r(p, n);
  for (Field f; r.next(f);)
    if (f.wire == 2 && (f.number == kSparseValues || f.number == kSparseIndices)) tensor(f.data, f.size, out);
}

void attribute(const uint8_t* p, std::size_t n, Out& out, int depth) {
  Reader r(p, n);
  for (Field f; r.next(f);) {
    if (f.wire != 2) continue;
    if (f.number == kAttributeTensor || f.number == kAttributeTensors) tensor(f.data, f.size, out);
    if (f.number == kAttributeSparseTensor || f.number == kAttributeSparseTensors) sparse_tensor(f.data, f.size, out);
    if (f.number == kAttributeGraph || f.number == kAttributeGraphs) graph(f.data, f.size, out, depth + 1);
  }
}

void node(const uint8_t* p, std::size_t n, Out& out, int depth) {
  Reader r(p, n);
  for (Field f; r.next(f);)
    if (f.number == kNodeAttribute && f.wire == 2) attribute(f.data, f.size, out, depth);
}

void graph(const uint8_t* p, std::size_t n, Out& out, int depth) {
  if (depth > 64) throw PackageError("ONNX subgraphs nest too deeply", "at most 64 levels", "more");
  Reader r(p, n);
  for (Field f; r.next(f);) {
    if (f.wire != 2) continue;
    if (f.number == kGraphInitializer) tensor(f.data, f.size, out);
    if (f.number == kGraphSparseInitializer) sparse_tensor(f.data, f.size, out);
    if (f.number == kGraphNode) node(f.data, f.size, out, depth);
  }
}

}  // namespace

std::vector<std::string> external_data_locations(const std::vector<uint8_t>& model_bytes) {
  Out out;
  Reader r(model_bytes.data(), model_bytes.size());
  for (Field f; r.next(f);) {
    if (f.wire != 2) continue;
    if (f.number == kModelGraph) graph(f.data, f.size, out, 0);
    if (f.number == kModelFunctions) {
      Reader fn(f.data, f.size);
      for (Field g; fn.next(g);)
        if (g.number == kFunctionNode && g.wire == 2) node(g.data, g.size, out, 0);
    }
  }
  return out;
}

void check_external_data(const std::string& root, const std::string& relative_model, const std::set<std::string>& listed) {
  const std::string model = safe_join(root, relative_model);
  const std::filesystem::path model_dir = std::filesystem::path(relative_model).parent_path();
  for (const std::string& location : external_data_locations(read_file(model))) {
    if (std::filesystem::path(location).is_absolute())
      throw UnsafePathError("ONNX external data must be a relative path inside the package", "a relative path inside the package", location);
    const std::string rel = (model_dir / location).lexically_normal().generic_string();
    try {
      safe_join(root, rel);
    } catch (const UnsafePathError&) {
      throw UnsafePathError("ONNX external data of '" + relative_model + "' leaves the package directory", "a path inside " + root, location);
    }
    // an unlisted file has no size or hash to check: refused, as Python's Package.check_files refuses it
    if (!listed.count(rel)) throw PackageFileError("external data '" + rel + "' of " + relative_model + " is not listed in the manifest", "listed in files", "unlisted");
  }
}

}  // namespace memx::detail
