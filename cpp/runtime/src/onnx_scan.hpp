// A minimal protobuf walk over an ONNX model file that lists the external-data locations of its
// tensors (initializers, sparse initializers, Constant-style tensor attributes, subgraphs and
// model-local functions), so a package can refuse paths that leave it before ONNX Runtime opens
// the file. Older ONNX Runtime builds (JetPack) do not check this themselves.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace memx::detail {

// throws PackageError when the bytes are not a well-formed protobuf message
std::vector<std::string> external_data_locations(const std::vector<uint8_t>& model_bytes);

// every external-data file of root/relative_model must resolve inside root (UnsafePathError)
// and be one the manifest lists (PackageFileError: an unlisted file has no size or hash to check)
void check_external_data(const std::string& root, const std::string& relative_model, const std::set<std::string>& listed);

}  // namespace memx::detail
