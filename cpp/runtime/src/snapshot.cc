// Snapshot bytes, identical to memx/package/snapshot.py's encode/decode.
#include "memx/snapshot.hpp"

#include <algorithm>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "memx/errors.hpp"
#include "memx/runtime.hpp"
#include "pyjson.hpp"
#include "limits.hpp"

namespace memx {

using nlohmann::json;

namespace {
constexpr char kMagic[8] = {'M', 'E', 'M', 'X', 'S', 'N', 'A', 'P'};
constexpr std::size_t kPrefix = 8 + 2 + 4;  // magic, u16 version, u32 header length
constexpr std::size_t kDigest = 32;

std::string hex_prefix(const uint8_t* p, std::size_t n) {
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (std::size_t i = 0; i < n; ++i) s += hex[p[i] >> 4], s += hex[p[i] & 15];
  return s;
}

std::string bytes_repr(const std::vector<uint8_t>& blob) {  // like Python's b'...' of the first 8 bytes
  std::string s = "b'";
  for (std::size_t i = 0; i < blob.size() && i < 8; ++i) {
    uint8_t c = blob[i];
    if (c >= 0x20 && c < 0x7F && c != '\'' && c != '\\') {
      s += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      s += buf;
    }
  }
  return s + "'";
}

std::string python_list(const std::vector<std::string>& items) {  // ['a', 'b'], as Python prints a list of names
  std::string s = "[";
  for (std::size_t i = 0; i < items.size(); ++i) s += (i ? ", '" : "'") + items[i] + "'";
  return s + "]";
}

// -- header fields: the twin of memx/package/snapshot.py's check_header, checked in the same
//    order so both readers give every header the same verdict (tests/data/snapshots, tests/fuzz)

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

std::string short_json(const json& value) {  // the value as Python's _short writes it (ASCII JSON, at most 40 chars)
  std::string text = value.dump(-1, ' ', true);
  return text.size() <= 40 ? text : text.substr(0, 37) + "...";
}

const char* json_kind(const json& value) {
  if (value.is_object()) return "an object";
  if (value.is_array()) return "a list";
  if (value.is_string()) return "a string";
  if (value.is_boolean()) return "a boolean";
  if (value.is_null()) return "null";
  return "a number";
}

void exact_keys(const json& obj, const std::vector<std::string>& keys, const std::string& where) {
  std::vector<std::string> got;
  for (auto it = obj.begin(); it != obj.end(); ++it) got.push_back(it.key());  // nlohmann keeps keys sorted
  if (got != keys) throw SnapshotCorruptError(where + " has the wrong fields", python_list(keys), python_list(got));
}

const std::string& text_field(const json& value, const std::string& field) {
  if (!value.is_string()) throw SnapshotCorruptError("snapshot header field '" + field + "' is not text", "a string", short_json(value));
  return value.get_ref<const std::string&>();
}

int64_t integer_field(const json& value, const std::string& field, int64_t low, int64_t high) {
  bool ok = false;
  int64_t v = 0;
  if (value.is_number_unsigned()) {
    const uint64_t u = value.get<uint64_t>();
    ok = u <= static_cast<uint64_t>(high), v = static_cast<int64_t>(u);
  } else if (value.is_number_integer()) {
    v = value.get<int64_t>(), ok = v >= low && v <= high;
  }
  if (!ok || v < low)
    throw SnapshotCorruptError("snapshot header field '" + field + "' is out of range", "an integer in " + std::to_string(low) + ".." + std::to_string(high), short_json(value));
  return v;
}

DType state_dtype(const std::string& descr, const std::string& name) {
  try {
    return dtype_from_numpy_descr(descr);
  } catch (const DTypeError&) {  // a well-formed snapshot of a layout no memx state has (float64, ...)
    throw SnapshotMismatchError("snapshot tensor '" + name + "' has a dtype no memx state has", "float32/float16/bfloat16/int64/int32/int8/uint8/bool", descr);
  }
}

struct TensorLayout {
  std::string name;
  DType dtype;
  Shape shape;  // (B, ...)
  std::size_t offset, nbytes;
};

TensorLayout tensor_layout(const json& t, std::size_t i, int64_t batch, std::size_t offset, const std::vector<TensorLayout>& seen) {
  const std::string where = "tensors[" + std::to_string(i) + "]";
  if (!t.is_object()) throw SnapshotCorruptError("snapshot header field '" + where + "' is malformed", "an object", json_kind(t));
  exact_keys(t, {"dtype", "name", "nbytes", "offset", "shape"}, "snapshot header field '" + where + "'");
  const std::string name = text_field(t["name"], where + ".name");
  if (name.empty() || std::any_of(seen.begin(), seen.end(), [&](const TensorLayout& x) { return x.name == name; }))
    throw SnapshotCorruptError("snapshot header field '" + where + ".name' is malformed", "a non-empty name no other tensor has", short_json(t["name"]));
  const std::string descr = text_field(t["dtype"], where + ".dtype");
  const json& shape = t["shape"];
  if (!shape.is_array() || shape.empty()) throw SnapshotCorruptError("snapshot tensor '" + name + "' shape is malformed", "a list of dims, batch first", short_json(shape));
  Shape dims;
  for (const auto& d : shape) dims.push_back(integer_field(d, where + ".shape", 0, kInt64Max));
  if (dims[0] != batch) throw SnapshotCorruptError("snapshot tensor '" + name + "' shape disagrees with the batch", std::to_string(batch) + " rows", shape_str(dims));
  if (static_cast<std::size_t>(integer_field(t["offset"], where + ".offset", 0, kInt64Max)) != offset)
    throw SnapshotCorruptError("snapshot tensor '" + name + "' does not start where the one before ends", std::to_string(offset), t["offset"].dump());
  const auto nbytes = static_cast<std::size_t>(integer_field(t["nbytes"], where + ".nbytes", 0, kInt64Max));
  const DType dtype = state_dtype(descr, name);
  std::size_t want = 0;
  bool fits = true;
  try {
    want = checked_nbytes(dims, dtype);
  } catch (const ShapeError&) {  // a product of dims that overflows (Python computes it exactly: it cannot equal nbytes either)
    fits = false;
  }
  if (!fits || want != nbytes)
    throw SnapshotCorruptError("snapshot tensor '" + name + "' size does not match its shape", fits ? std::to_string(want) + " bytes" : "a shape whose size fits", std::to_string(nbytes));
  return {name, dtype, dims, offset, nbytes};
}

std::vector<TensorLayout> check_header(const json& header, std::size_t payload_size) {
  if (!header.is_object()) throw SnapshotCorruptError("snapshot header is not a JSON object", "an object", json_kind(header));
  exact_keys(header, {"batch", "model_id", "pending_reset", "segments", "tensors"}, "snapshot header");
  text_field(header["model_id"], "model_id");
  const int64_t batch = integer_field(header["batch"], "batch", 1, kMaxBatch);
  const json& pending = header["pending_reset"];
  if (!pending.is_array() || static_cast<int64_t>(pending.size()) != batch || !std::all_of(pending.begin(), pending.end(), [](const json& r) { return r.is_boolean(); }))
    throw SnapshotCorruptError("snapshot header field 'pending_reset' is malformed", "a list of " + std::to_string(batch) + " booleans", short_json(pending));
  integer_field(header["segments"], "segments", 0, kInt64Max);
  const json& tensors = header["tensors"];
  if (!tensors.is_array()) throw SnapshotCorruptError("snapshot header field 'tensors' is malformed", "a list", json_kind(tensors));
  std::vector<TensorLayout> layouts;
  std::size_t used = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    layouts.push_back(tensor_layout(tensors[i], i, batch, used, layouts));
    used += layouts.back().nbytes;  // <= payload_size + one tensor: each is checked against the payload below
    if (used > payload_size) break;
  }
  if (used != payload_size) throw SnapshotCorruptError("snapshot payload length differs from its tensors'", std::to_string(used) + " bytes", std::to_string(payload_size) + " bytes");
  return layouts;
}

SnapshotData parse_payload(const json& header, const uint8_t* payload, std::size_t payload_size) {
  const std::vector<TensorLayout> layouts = check_header(header, payload_size);
  SnapshotData data;
  data.model_id = header["model_id"].get<std::string>();
  for (const auto& t : layouts) {
    data.states.emplace(t.name, Tensor::from_bytes(t.dtype, t.shape, payload + t.offset));
    data.order.push_back(t.name);
  }
  for (const auto& r : header["pending_reset"]) data.pending_reset.push_back(r.get<bool>());
  data.segments = header["segments"].get<int64_t>();
  return data;
}

std::vector<const std::string*> write_order(const SnapshotData& data) {
  std::vector<const std::string*> names;
  for (const auto& name : data.order)
    if (data.states.count(name)) names.push_back(&data.states.find(name)->first);
  for (const auto& [name, _] : data.states)
    if (std::find(data.order.begin(), data.order.end(), name) == data.order.end()) names.push_back(&name);
  return names;
}
}  // namespace

std::vector<uint8_t> encode_snapshot(const SnapshotData& data) {
  json tensors = json::array();
  std::size_t offset = 0;
  const std::vector<const std::string*> names = write_order(data);
  for (const std::string* name : names) {
    const Tensor& t = data.states.at(*name);
    tensors.push_back({{"name", *name}, {"dtype", numpy_descr(t.dtype)}, {"shape", t.shape}, {"offset", offset}, {"nbytes", t.nbytes()}});
    offset += t.nbytes();
  }
  json pending = json::array();
  for (bool r : data.pending_reset) pending.push_back(r);
  json header = {{"model_id", data.model_id}, {"batch", data.pending_reset.size()}, {"pending_reset", pending}, {"segments", data.segments}, {"tensors", tensors}};
  const std::string text = detail::python_dumps(header);
  // one allocation, each part copied to its offset: [prefix | header | state bytes | sha256]
  std::vector<uint8_t> blob(kPrefix + text.size() + static_cast<std::size_t>(offset) + kDigest);
  std::memcpy(blob.data(), kMagic, 8);
  const uint16_t version = kSnapshotVersion;
  const uint32_t header_len = static_cast<uint32_t>(text.size());
  blob[8] = uint8_t(version & 0xFF), blob[9] = uint8_t(version >> 8);
  for (int i = 0; i < 4; ++i) blob[10 + i] = uint8_t(header_len >> (8 * i));
  std::size_t at = kPrefix;
  std::memcpy(blob.data() + at, text.data(), text.size());
  at += text.size();
  for (const std::string* name : names) {
    const std::vector<uint8_t>& bytes = data.states.at(*name).bytes;
    if (!bytes.empty()) std::memcpy(blob.data() + at, bytes.data(), bytes.size());
    at += bytes.size();
  }
  const std::vector<uint8_t> digest = sha256(blob.data(), at);
  std::memcpy(blob.data() + at, digest.data(), digest.size());
  return blob;
}

SnapshotData decode_snapshot(const std::vector<uint8_t>& blob) {
  if (blob.size() < kPrefix + kDigest || std::memcmp(blob.data(), kMagic, 8) != 0)
    throw SnapshotCorruptError("not a memx snapshot", "bytes starting with b'MEMXSNAP'", std::to_string(blob.size()) + " bytes starting with " + bytes_repr(blob));
  const std::size_t body = blob.size() - kDigest;
  std::vector<uint8_t> digest = sha256(blob.data(), body);
  if (std::memcmp(digest.data(), blob.data() + body, kDigest) != 0)
    throw SnapshotCorruptError("snapshot checksum mismatch (truncated or altered)", hex_prefix(digest.data(), 8), hex_prefix(blob.data() + body, 8));
  const uint16_t version = uint16_t(blob[8] | (blob[9] << 8));
  if (version != kSnapshotVersion) throw SnapshotMismatchError("unsupported snapshot version", std::to_string(kSnapshotVersion), std::to_string(version));
  uint32_t header_len = 0;
  for (int i = 0; i < 4; ++i) header_len |= uint32_t(blob[10 + i]) << (8 * i);
  if (kPrefix + header_len > body) throw SnapshotCorruptError("snapshot header is truncated", std::to_string(header_len) + " bytes", std::to_string(body - kPrefix) + " bytes");
  if (header_len >= 3 && blob[kPrefix] == 0xEF && blob[kPrefix + 1] == 0xBB && blob[kPrefix + 2] == 0xBF)
    throw SnapshotCorruptError("snapshot header is not valid JSON");  // strict UTF-8, no byte-order mark, as Python reads it
  const int depth = detail::json_depth(blob.begin() + kPrefix, blob.begin() + kPrefix + header_len);
  if (depth > detail::kMaxJsonDepth)
    throw SnapshotCorruptError("snapshot header is nested too deeply", "at most " + std::to_string(detail::kMaxJsonDepth) + " levels of arrays and objects", std::to_string(depth));
  json header;
  try {
    header = json::parse(blob.begin() + kPrefix, blob.begin() + kPrefix + header_len);
  } catch (const json::exception&) {
    throw SnapshotCorruptError("snapshot header is not valid JSON");
  }
  try {
    return parse_payload(header, blob.data() + kPrefix + header_len, body - kPrefix - header_len);
  } catch (const json::exception& e) {
    throw SnapshotCorruptError(std::string("snapshot header is malformed (") + e.what() + ")");
  } catch (const DTypeError& e) {
    throw SnapshotCorruptError("snapshot header is malformed (" + std::string(e.what()) + ")");
  }
}

void check_snapshot(const SnapshotData& data, const std::string& model_id, int64_t batch, const std::vector<StateLayout>& schema) {
  if (data.model_id != model_id) throw SnapshotMismatchError("snapshot belongs to another model", model_id.substr(0, 16), data.model_id.substr(0, 16));
  const auto got_batch = static_cast<int64_t>(data.pending_reset.size());
  if (batch >= 0 && got_batch != batch) throw SnapshotMismatchError("snapshot batch size differs from the stream's", std::to_string(batch), std::to_string(got_batch));
  std::vector<std::string> want_names, got_names;
  for (const auto& s : schema) want_names.push_back(s.name);
  for (const auto& [name, _] : data.states) got_names.push_back(name);
  std::sort(want_names.begin(), want_names.end());
  if (want_names != got_names) throw SnapshotMismatchError("snapshot state names differ", python_list(want_names), python_list(got_names));
  for (const auto& s : schema) {
    const Tensor& t = data.states.at(s.name);
    Shape want = {got_batch};
    want.insert(want.end(), s.dims.begin(), s.dims.end());
    if (t.shape != want || t.dtype != s.dtype)
      throw SnapshotMismatchError("snapshot state '" + s.name + "' has the wrong layout", std::string(dtype_name(s.dtype)) + shape_str(want), t.describe());
    const int64_t bad = t.first_non_finite();
    if (bad >= 0) throw NonFiniteStateError("snapshot state '" + s.name + "' holds NaN/Inf", "finite values", "non-finite at flat index " + std::to_string(bad));
  }
}

}  // namespace memx
