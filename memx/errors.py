"""Typed memx errors.

Every error a user can cause is a subclass of :class:`MemxError`. Errors about a
value carry ``expected`` and ``actual`` and say both in the message, so the
caller never has to guess what memx wanted. Library code raises; only the CLI
turns errors into exit codes.
"""

from __future__ import annotations

from typing import Any


class MemxError(Exception):
    """Base class of every memx error."""

    def __init__(self, message: str, *, expected: Any = None, actual: Any = None, hint: str | None = None):
        self.message = message
        self.expected = expected
        self.actual = actual
        self.hint = hint
        text = message
        if expected is not None or actual is not None:
            text += f": expected {expected}, got {actual}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class InternalError(MemxError):
    """A memx bug, not a user error: please report it."""


# --- registry --------------------------------------------------------------------------
class RegistryError(MemxError, KeyError):
    """A name that no registry holds (family, preset, backend)."""

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return Exception.__str__(self)


# --- step inputs -----------------------------------------------------------------------
class InputError(MemxError, ValueError):
    """A step input that does not fit the package's contract."""


class DTypeError(InputError, TypeError):
    """Wrong dtype of an input array."""


class RankError(InputError):
    """Wrong number of dimensions."""


class ShapeError(InputError):
    """Wrong size of a dimension."""


class BatchMismatchError(ShapeError):
    """The batch size disagrees with the stream's or another input's."""


class SegmentLengthError(ShapeError):
    """The segment is longer (or shorter) than the package allows."""


class TokenRangeError(InputError):
    """A token id outside the vocabulary."""


# --- state and snapshots -----------------------------------------------------------------
class StateError(MemxError, ValueError):
    """A memory state that is unusable (wrong shape, NaN/Inf)."""


class NonFiniteStateError(StateError):
    """A state holds NaN or Inf."""


class SnapshotError(MemxError, ValueError):
    """Snapshot bytes that cannot be restored."""


class SnapshotCorruptError(SnapshotError):
    """Truncated, altered or not a memx snapshot at all."""


class SnapshotMismatchError(SnapshotError):
    """A valid snapshot, but of another model or another layout."""


# --- packages -----------------------------------------------------------------------------
class PackageError(MemxError, OSError):
    """A memx package on disk that cannot be used."""

    def __str__(self) -> str:  # OSError would format (errno, strerror) otherwise
        return Exception.__str__(self)


class ManifestError(PackageError):
    """memx.json is missing, malformed or does not follow the schema."""


class ManifestVersionError(ManifestError):
    """memx.json has a format version this memx does not understand."""


class PackageFileError(PackageError):
    """A file the manifest names is missing or has the wrong size."""


class UnsafePathError(PackageError):
    """A path (ONNX external data, manifest file entry) that leaves the package."""


class PackageExistsError(PackageError):
    """The output directory exists and overwriting was not asked for."""


# --- export, backends, validation ------------------------------------------------------
class ExportError(MemxError, RuntimeError):
    """torch.onnx could not export the step, or the result breaks the contract."""


class ContractError(ExportError):
    """A module does not implement the step contract of DESIGN.md §2."""


class BackendUnavailableError(MemxError, RuntimeError):
    """The backend or device asked for is not installed or not present."""


class ReferenceModelError(BackendUnavailableError):
    """A package's PyTorch reference cannot be built in this process (an unregistered family
    whose code the user has not named, or a factory that cannot be imported or does not fit)."""


class BackendRunError(MemxError, RuntimeError):
    """The backend failed while running a step (the stream's state is unchanged)."""


class CheckpointError(MemxError, ValueError):
    """A checkpoint that does not fit the model (missing/unexpected/mis-shaped tensors)."""


# --- calibration and quantization ----------------------------------------------------------
class CalibrationError(MemxError, ValueError):
    """Calibration data that cannot be used (wrong file, dtype, token range, too short)."""


class QuantizationError(MemxError, RuntimeError):
    """A package that cannot be quantized as asked (already quantized, method failed)."""


def expect_choice(kind: str, name: object, choices: list[str] | tuple[str, ...]) -> RegistryError:
    """Build the error for an unknown name, listing what exists and the nearest choice."""
    import difflib

    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return RegistryError(f"unknown {kind} {name!r}", expected=f"one of {sorted(choices)}", actual=repr(name),
                         hint=f"did you mean {close[0]!r}?" if close else None)


class EngineError(MemxError, RuntimeError):
    """A TensorRT engine that cannot be built, or cannot run here."""


class EngineCompatibilityError(EngineError):
    """An engine built for another TensorRT version or GPU (compute capability)."""


class GraphImportError(EngineError):
    """A package whose graphs TensorRT's ONNX parser cannot import (the reasons memx doctor gives);
    memx build refuses it before building anything."""


class BuildCheckError(MemxError, RuntimeError):
    """A build its check refused (memx build --backend onnxruntime: the rewritten graphs drift
    from the graphs as exported beyond the precision gate); nothing was written."""


# --- serving (Triton Inference Server) -------------------------------------------------
class ServingError(MemxError, RuntimeError):
    """Serving through Triton Inference Server failed."""


class ServerUnavailableError(ServingError, ConnectionError):
    """No Triton server answers at the address (not started, stopped, or another port)."""


class ModelNotReadyError(ServingError):
    """The server runs but does not serve the model (unknown name, failed to load)."""


class SequenceError(ServingError):
    """A served sequence the server no longer knows (ended, idle past its timeout, or never started)."""


class RepositoryError(ServingError, ValueError):
    """A Triton model repository that memx cannot write or that does not fit the package."""
