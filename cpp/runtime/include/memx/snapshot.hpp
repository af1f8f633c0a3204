// Stream snapshots: the same bytes as memx/package/snapshot.py, so a snapshot taken in
// Python restores in C++ and vice versa. Layout (little-endian):
//   "MEMXSNAP" | u16 version | u32 header length | header (UTF-8 JSON) | tensor bytes | sha256 of all before
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "memx/tensor.hpp"

namespace memx {

constexpr uint16_t kSnapshotVersion = 1;

struct SnapshotData {
  std::string model_id;
  std::map<std::string, Tensor> states;  // name -> (B, ...) tensor
  std::vector<bool> pending_reset;       // (B,): row starts a new stream at its next step
  int64_t segments = 0;                  // segments stepped since the stream was created
  // the order tensors are written in (the manifest's state order, as Python writes them);
  // names missing here follow in name order
  std::vector<std::string> order;
};

// What a snapshot of one model holds per state: name, dtype and the dims after the batch axis
struct StateLayout {
  std::string name;
  DType dtype;
  Shape dims;
};

std::vector<uint8_t> encode_snapshot(const SnapshotData& data);
// Parse and check bytes; throws SnapshotCorruptError (truncated, altered, not a snapshot)
// or SnapshotMismatchError (unsupported version).
SnapshotData decode_snapshot(const std::vector<uint8_t>& blob);
// Refuse a snapshot of another model, batch size (batch < 0: any) or state layout
// (SnapshotMismatchError), or one holding NaN/Inf (NonFiniteStateError); like Python's
// memx.package.snapshot.check_compatible.
void check_snapshot(const SnapshotData& data, const std::string& model_id, int64_t batch, const std::vector<StateLayout>& schema);

std::string sha256_hex(const void* data, std::size_t size);
std::vector<uint8_t> sha256(const void* data, std::size_t size);

}  // namespace memx
