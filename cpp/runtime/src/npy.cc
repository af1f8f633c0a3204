// .npy reader/writer (NEP 1 format): enough for memx-run's token files and outputs.
#include "memx/npy.hpp"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include <unistd.h>

#include "memx/errors.hpp"

namespace memx {

namespace {
std::string dict_value(const std::string& header, const std::string& key, const std::string& path) {
  std::size_t k = header.find("'" + key + "'");
  if (k == std::string::npos) throw NpyError(".npy header has no '" + key + "' entry", "a numpy .npy file", path);
  std::size_t colon = header.find(':', k);
  std::size_t start = header.find_first_not_of(' ', colon + 1);
  std::size_t end = header[start] == '(' ? header.find(')', start) + 1 : header.find_first_of(",}", start);
  if (colon == std::string::npos || start == std::string::npos || end == std::string::npos)
    throw NpyError(".npy header entry '" + key + "' is malformed", "a numpy .npy header", header);
  return header.substr(start, end - start);
}

Shape parse_shape_tuple(const std::string& text, const std::string& path) {
  if (text.size() < 2 || text.front() != '(' || text.back() != ')') throw NpyError(".npy shape is not a tuple", "(d0, d1, ...)", text + " in " + path);
  Shape shape;
  std::stringstream in(text.substr(1, text.size() - 2));
  std::string item;
  while (std::getline(in, item, ',')) {
    std::size_t a = item.find_first_not_of(' '), b = item.find_last_not_of(' ');
    if (a == std::string::npos) continue;
    try {
      shape.push_back(std::stoll(item.substr(a, b - a + 1)));
    } catch (const std::exception&) {
      throw NpyError(".npy shape holds a non-integer", "integers", item);
    }
    if (shape.back() < 0) throw NpyError(".npy shape holds a negative dim", "dims >= 0", text);
  }
  return shape;
}
}  // namespace

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw NpyError("cannot open file", "a readable file", path);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

Tensor read_npy(const std::string& path) {
  std::vector<uint8_t> raw = read_file(path);
  if (raw.size() < 10 || std::memcmp(raw.data(), "\x93NUMPY", 6) != 0) throw NpyError("not a .npy file", "bytes starting with \\x93NUMPY", path);
  const int major = raw[6];
  std::size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = raw[8] | (raw[9] << 8), offset = 10;
  } else if (major == 2 || major == 3) {
    if (raw.size() < 12) throw NpyError(".npy file is truncated", "a header", path);
    header_len = raw[8] | (raw[9] << 8) | (raw[10] << 16) | (std::size_t(raw[11]) << 24), offset = 12;
  } else {
    throw NpyError("unsupported .npy format version", "1, 2 or 3", std::to_string(major));
  }
  if (offset + header_len > raw.size()) throw NpyError(".npy header is truncated", std::to_string(header_len) + " bytes", std::to_string(raw.size() - offset));
  const std::string header(raw.begin() + offset, raw.begin() + offset + header_len);
  std::string descr = dict_value(header, "descr", path);
  if (descr.size() < 2) throw NpyError(".npy descr is malformed", "a quoted dtype", descr);
  descr = descr.substr(1, descr.size() - 2);
  if (dict_value(header, "fortran_order", path) != "False") throw NpyError(".npy array is in Fortran order", "C order (np.ascontiguousarray)", path);
  Shape shape = parse_shape_tuple(dict_value(header, "shape", path), path);
  DType dtype = dtype_from_numpy_descr(descr);
  const std::size_t have = raw.size() - offset - header_len;
  std::size_t want = 0;
  try {
    want = checked_nbytes(shape, dtype);
  } catch (const ShapeError& e) {
    throw NpyError(".npy shape does not describe an array memx can hold (" + e.message() + ")", e.expected(), e.actual() + " in " + path);
  }
  if (have != want) throw NpyError(".npy data size does not match its header", std::to_string(want) + " bytes", std::to_string(have) + " bytes in " + path);
  return Tensor::from_bytes(dtype, shape, raw.data() + offset + header_len);
}

void write_file_atomic(const std::string& path, const void* data, std::size_t size) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw NpyError("cannot write file", "a writable path", path);
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
    if (!out) {
      std::remove(tmp.c_str());
      throw NpyError("writing file failed", std::to_string(size) + " bytes written", path);
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw NpyError("cannot move file into place", path, tmp);
  }
}

void write_npy(const std::string& path, const Tensor& tensor) {
  std::string shape = "(";
  for (std::size_t i = 0; i < tensor.shape.size(); ++i) shape += std::to_string(tensor.shape[i]) + (tensor.shape.size() == 1 ? "," : i + 1 < tensor.shape.size() ? ", " : "");
  shape += ")";
  std::string header = "{'descr': '" + std::string(numpy_descr(tensor.dtype)) + "', 'fortran_order': False, 'shape': " + shape + ", }";
  const std::size_t total = 10 + header.size() + 1;
  header += std::string((64 - total % 64) % 64, ' ') + "\n";  // data starts 64-byte aligned
  std::vector<uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, uint8_t(header.size() & 0xFF), uint8_t(header.size() >> 8)};
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), tensor.bytes.begin(), tensor.bytes.end());
  write_file_atomic(path, out.data(), out.size());
}

}  // namespace memx
