// Snapshot bytes, identical to memx/package/snapshot.py's encode/decode.
#include "memx/snapshot.hpp"

#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

#include "memx/errors.hpp"
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

SnapshotData parse_payload(const json& header, const uint8_t* payload, std::size_t payload_size) {
  SnapshotData data;
  data.model_id = header.at("model_id").get<std::string>();
  for (const auto& t : header.at("tensors")) {
    const std::string name = t.at("name").get<std::string>();
    const int64_t offset = t.at("offset").get<int64_t>(), nbytes = t.at("nbytes").get<int64_t>();
    Shape shape = t.at("shape").get<Shape>();
    DType dtype;
    try {
      dtype = dtype_from_numpy_descr(t.at("dtype").get<std::string>());
    } catch (const DTypeError&) {  // a well-formed snapshot of a layout no memx state has (float64, ...)
      throw SnapshotMismatchError("snapshot tensor '" + name + "' has a dtype no memx state has", "float32/float16/bfloat16/int64/int32/int8/uint8/bool",
                                  t.at("dtype").get<std::string>());
    }
    if (offset < 0 || nbytes < 0 || static_cast<std::size_t>(offset) > payload_size)
      throw SnapshotCorruptError("snapshot tensor '" + name + "' is truncated", std::to_string(nbytes), "0");
    const std::size_t available = std::min<std::size_t>(payload_size - offset, static_cast<std::size_t>(nbytes));
    if (available != static_cast<std::size_t>(nbytes)) throw SnapshotCorruptError("snapshot tensor '" + name + "' is truncated", std::to_string(nbytes), std::to_string(available));
    for (int64_t d : shape)
      if (d < 0) throw SnapshotCorruptError("snapshot tensor '" + name + "' has a negative dim", "dims >= 0", shape_str(shape));
    std::size_t want = 0;
    try {
      want = checked_nbytes(shape, dtype);
    } catch (const ShapeError&) {  // a product of dims that overflows: no such tensor was ever written
      throw SnapshotCorruptError("snapshot tensor '" + name + "' size does not match its shape", "a shape whose size fits", shape_str(shape));
    }
    if (want != static_cast<std::size_t>(nbytes))
      throw SnapshotCorruptError("snapshot tensor '" + name + "' size does not match its shape", std::to_string(want) + " bytes", std::to_string(nbytes));
    data.states.emplace(name, Tensor::from_bytes(dtype, shape, payload + offset));
    data.order.push_back(name);
  }
  for (const auto& r : header.at("pending_reset")) data.pending_reset.push_back(r.get<bool>());
  data.segments = header.at("segments").get<int64_t>();
  return data;
}

std::string python_list(const std::vector<std::string>& items) {  // ['a', 'b'], as Python prints a list of names
  std::string s = "[";
  for (std::size_t i = 0; i < items.size(); ++i) s += (i ? ", '" : "'") + items[i] + "'";
  return s + "]";
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
  std::vector<uint8_t> blob(kPrefix);
  std::memcpy(blob.data(), kMagic, 8);
  const uint16_t version = kSnapshotVersion;
  const uint32_t header_len = static_cast<uint32_t>(text.size());
  blob[8] = uint8_t(version & 0xFF), blob[9] = uint8_t(version >> 8);
  for (int i = 0; i < 4; ++i) blob[10 + i] = uint8_t(header_len >> (8 * i));
  blob.insert(blob.end(), text.begin(), text.end());
  for (const std::string* name : names) blob.insert(blob.end(), data.states.at(*name).bytes.begin(), data.states.at(*name).bytes.end());
  std::vector<uint8_t> digest = sha256(blob.data(), blob.size());
  blob.insert(blob.end(), digest.begin(), digest.end());
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
