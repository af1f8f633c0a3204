// Typed memx errors, the C++ twins of memx/errors.py.
//
// Every error a caller can cause derives from memx::Error. Errors about a value carry
// expected() and actual() and say both in what(), formatted exactly like the Python
// runtime: "<message>: expected <expected>, got <actual> (<hint>)".
#pragma once

#include <stdexcept>
#include <string>

namespace memx {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, std::string expected = "", std::string actual = "", std::string hint = "");
  const std::string& message() const noexcept { return message_; }
  const std::string& expected() const noexcept { return expected_; }
  const std::string& actual() const noexcept { return actual_; }
  const std::string& hint() const noexcept { return hint_; }

 private:
  std::string message_, expected_, actual_, hint_;
};

#define MEMX_ERROR(Name, Base)         \
  class Name : public Base {           \
   public:                             \
    using Base::Base;                  \
  };

MEMX_ERROR(InternalError, Error)            // a memx bug, not a user error
MEMX_ERROR(PackageError, Error)             // a package directory that cannot be used
MEMX_ERROR(PackageFileError, PackageError)  // a listed file is missing or has the wrong size/hash
MEMX_ERROR(UnsafePathError, PackageError)   // a path that leaves the package
MEMX_ERROR(ManifestError, PackageError)     // memx.json malformed, mistyped or inconsistent
MEMX_ERROR(ManifestVersionError, ManifestError)
MEMX_ERROR(InputError, Error)  // a step input that does not fit the package's contract
MEMX_ERROR(DTypeError, InputError)
MEMX_ERROR(RankError, InputError)
MEMX_ERROR(ShapeError, InputError)
MEMX_ERROR(BatchMismatchError, ShapeError)
MEMX_ERROR(SegmentLengthError, ShapeError)
MEMX_ERROR(TokenRangeError, InputError)
MEMX_ERROR(StateError, Error)  // an unusable memory state
MEMX_ERROR(NonFiniteStateError, StateError)
MEMX_ERROR(SnapshotError, Error)  // snapshot bytes that cannot be restored
MEMX_ERROR(SnapshotCorruptError, SnapshotError)
MEMX_ERROR(SnapshotMismatchError, SnapshotError)
MEMX_ERROR(BackendError, Error)
MEMX_ERROR(BackendUnavailableError, BackendError)  // provider or library not available
MEMX_ERROR(BackendRunError, BackendError)          // ONNX Runtime failed while running a graph
MEMX_ERROR(NpyError, Error)                        // a .npy file memx-run cannot read

#undef MEMX_ERROR

}  // namespace memx
