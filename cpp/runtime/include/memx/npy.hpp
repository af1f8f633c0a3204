// .npy files (format 1.0/2.0/3.0, C order, little-endian): read and write host tensors.
// memx-run reads token files and writes outputs with these.
#pragma once

#include <string>

#include "memx/tensor.hpp"

namespace memx {

Tensor read_npy(const std::string& path);  // throws NpyError naming what is wrong
// Written atomically (temporary file renamed into place).
void write_npy(const std::string& path, const Tensor& tensor);
void write_file_atomic(const std::string& path, const void* data, std::size_t size);
std::vector<uint8_t> read_file(const std::string& path);

}  // namespace memx
