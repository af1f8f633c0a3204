"""Writes the snapshot corpus: tests/data/snapshots/*.snap and corpus.json.

    python -m tests.data.snapshots.make_corpus          # rewrite the files
    python -m tests.data.snapshots.make_corpus --check  # exit 1 if the files differ from what it writes

The snapshots are made with memx.package.snapshot.encode (then cut, altered or re-sealed
with a new checksum); tests/package/test_snapshot_corpus.py and
cpp/runtime/tests/test_corpus.cc must both give every case its recorded verdict.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np

from memx.package import snapshot as snap

HERE = Path(__file__).resolve().parent
MODEL_ID = hashlib.sha256(b"memx snapshot corpus model").hexdigest()
OTHER_MODEL_ID = hashlib.sha256(b"another model").hexdigest()
SCHEMA: dict[str, tuple[tuple[int, ...], str]] = {"memory": ((4, 8), "float32"), "position": ((1,), "int64")}
BATCH = 2


def states(batch: int = BATCH, **override: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    out = {
        "memory": rng.standard_normal((batch, 4, 8)).astype(np.float32),  # (B, slots, d)
        "position": np.arange(batch, dtype=np.int64).reshape(batch, 1) * 16,  # (B, 1)
    }
    out.update(override)
    return out


def encoded(model_id: str = MODEL_ID, batch: int = BATCH, segments: int = 7, **override: np.ndarray) -> bytes:
    pending = np.zeros(batch, dtype=bool)
    pending[-1] = True
    return snap.encode(snap.SnapshotData(model_id, states(batch, **override), pending, segments))


def reseal(body: bytes) -> bytes:
    """Bytes with a valid checksum over an edited body (so the edit, not the checksum, is what is refused)."""
    return body + hashlib.sha256(body).digest()


def edit_header(blob: bytes, edit: Any) -> bytes:
    """Re-encode the header after ``edit(header_dict)``, keep the payload, seal again."""
    _, version, length = struct.unpack_from("<8sHI", blob)
    start = struct.calcsize("<8sHI")
    header = json.loads(blob[start : start + length])
    edit(header)
    text = json.dumps(header, sort_keys=True).encode()
    return reseal(struct.pack("<8sHI", snap.MAGIC, version, len(text)) + text + blob[start + length : -32])


def with_version(blob: bytes, version: int) -> bytes:
    body = bytearray(blob[:-32])
    struct.pack_into("<H", body, 8, version)
    return reseal(bytes(body))


def raw_header(blob: bytes, text: bytes) -> bytes:
    _, version, length = struct.unpack_from("<8sHI", blob)
    start = struct.calcsize("<8sHI")
    return reseal(struct.pack("<8sHI", snap.MAGIC, version, len(text)) + text + blob[start + length : -32])


def header_text(blob: bytes) -> bytes:
    _, _, length = struct.unpack_from("<8sHI", blob)
    start = struct.calcsize("<8sHI")
    return blob[start : start + length]


def flipped(blob: bytes, at: int) -> bytes:
    b = bytearray(blob)
    b[at] ^= 0x10
    return bytes(b)


def lie_about_nbytes(header: dict) -> None:
    header["tensors"][0]["nbytes"] += 4


def setter(path: tuple[Any, ...], value: Any) -> Any:
    """An edit that sets header[path...] = value (a forged field; the checksum is resealed)."""
    def edit(header: dict) -> None:
        node = header
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


def deleter(path: tuple[Any, ...]) -> Any:
    def edit(header: dict) -> None:
        node = header
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return edit


# Forged headers (checksum recomputed), each refused by type or range in both readers: the
# fields the hardening issue found read wrongly, or differently by Python and C++.
FORGED: list[tuple[str, str, Any]] = [
    ("segments-negative", "SnapshotCorruptError", setter(("segments",), -1)),
    ("segments-fractional", "SnapshotCorruptError", setter(("segments",), 7.5)),
    ("segments-integral-float", "SnapshotCorruptError", setter(("segments",), 7.0)),
    ("segments-2-to-the-63", "SnapshotCorruptError", setter(("segments",), 1 << 63)),
    ("segments-2-to-the-64", "SnapshotCorruptError", setter(("segments",), 1 << 64)),
    ("segments-boolean", "SnapshotCorruptError", setter(("segments",), True)),
    ("segments-string", "SnapshotCorruptError", setter(("segments",), "7")),
    ("segments-null", "SnapshotCorruptError", setter(("segments",), None)),
    ("pending-reset-strings", "SnapshotCorruptError", setter(("pending_reset",), ["no", "no"])),
    ("pending-reset-integers", "SnapshotCorruptError", setter(("pending_reset",), [0, 1])),
    ("pending-reset-too-short", "SnapshotCorruptError", setter(("pending_reset",), [False])),
    ("pending-reset-not-a-list", "SnapshotCorruptError", setter(("pending_reset",), True)),
    ("batch-zero", "SnapshotCorruptError", setter(("batch",), 0)),
    ("batch-negative", "SnapshotCorruptError", setter(("batch",), -2)),
    ("batch-disagrees-with-pending-reset", "SnapshotCorruptError", setter(("batch",), 3)),
    ("batch-fractional", "SnapshotCorruptError", setter(("batch",), 2.0)),
    ("model-id-a-number", "SnapshotCorruptError", setter(("model_id",), 7)),
    ("model-id-lone-surrogate", "SnapshotCorruptError", setter(("model_id",), "\ud800" + MODEL_ID[1:])),
    ("field-missing", "SnapshotCorruptError", deleter(("segments",))),
    ("field-unknown", "SnapshotCorruptError", setter(("comment",), "hello")),
    ("tensors-not-a-list", "SnapshotCorruptError", setter(("tensors",), {})),
    ("tensor-not-an-object", "SnapshotCorruptError", setter(("tensors", 1), [])),
    ("tensor-field-unknown", "SnapshotCorruptError", setter(("tensors", 0, "strides"), [128, 32, 4])),
    ("tensor-name-empty", "SnapshotCorruptError", setter(("tensors", 0, "name"), "")),
    ("tensor-name-twice", "SnapshotCorruptError", setter(("tensors", 1, "name"), "memory")),
    ("tensor-dim-negative", "SnapshotCorruptError", setter(("tensors", 0, "shape"), [2, -4, -8])),
    ("tensor-dim-fractional", "SnapshotCorruptError", setter(("tensors", 0, "shape"), [2, 4.0, 8])),
    ("tensor-dims-overflow", "SnapshotCorruptError", setter(("tensors", 0, "shape"), [2, 1 << 62, 1 << 62])),
    ("tensor-shape-empty", "SnapshotCorruptError", setter(("tensors", 0, "shape"), [])),
    ("tensor-rows-disagree-with-batch", "SnapshotCorruptError", setter(("tensors", 0, "shape"), [1, 8, 8])),
    ("tensor-offset-gap", "SnapshotCorruptError", setter(("tensors", 1, "offset"), 260)),
    ("tensor-offset-negative", "SnapshotCorruptError", setter(("tensors", 0, "offset"), -1)),
    ("tensor-nbytes-fractional", "SnapshotCorruptError", setter(("tensors", 0, "nbytes"), 256.0)),
    ("tensor-dtype-not-text", "SnapshotCorruptError", setter(("tensors", 0, "dtype"), 4)),
    ("tensor-dtype-unknown", "SnapshotMismatchError", setter(("tensors", 0, "dtype"), "xyz")),
    ("tensor-dtype-big-endian", "SnapshotMismatchError", setter(("tensors", 0, "dtype"), ">f4")),
]


def cases() -> list[tuple[dict[str, Any], bytes]]:
    good = encoded()
    nan = states()["memory"].copy()
    nan[1, 2, 3] = np.nan
    inf = states()["memory"].copy()
    inf[0, 0, 0] = np.inf
    cut = good[: len(good) // 2]
    return [
        ({"name": "valid", "verdict": "ok", "segments": 7, "pending_reset": [False, True],
          "sums": {"memory": float(states()["memory"].astype(np.float64).sum()), "position": 16}}, good),
        ({"name": "valid-batch-1", "verdict": "ok", "batch": 1, "segments": 7, "pending_reset": [True]}, encoded(batch=1)),
        ({"name": "valid-any-batch", "verdict": "ok", "batch": None, "segments": 3, "pending_reset": [False, False, True]}, encoded(batch=3, segments=3)),
        ({"name": "empty", "verdict": "SnapshotCorruptError"}, b""),
        ({"name": "not-a-snapshot", "verdict": "SnapshotCorruptError"}, b"PK\x03\x04 this is a zip file, not a snapshot" + bytes(40)),
        ({"name": "truncated", "verdict": "SnapshotCorruptError"}, cut),
        ({"name": "one-byte-altered", "verdict": "SnapshotCorruptError"}, flipped(good, len(good) // 2)),
        ({"name": "checksum-altered", "verdict": "SnapshotCorruptError"}, flipped(good, len(good) - 1)),
        ({"name": "version-2", "verdict": "SnapshotMismatchError"}, with_version(good, 2)),
        ({"name": "header-not-json", "verdict": "SnapshotCorruptError"}, raw_header(good, b"{not json")),
        ({"name": "header-longer-than-the-body", "verdict": "SnapshotCorruptError"},
         reseal(struct.pack("<8sHI", snap.MAGIC, 1, 1 << 20) + b"{}")),
        ({"name": "tensor-nbytes-past-the-end", "verdict": "SnapshotCorruptError"}, edit_header(good, lie_about_nbytes)),
        ({"name": "another-model", "verdict": "SnapshotMismatchError"}, encoded(model_id=OTHER_MODEL_ID)),
        ({"name": "other-batch", "verdict": "SnapshotMismatchError", "batch": 3}, good),
        ({"name": "state-missing", "verdict": "SnapshotMismatchError"},
         snap.encode(snap.SnapshotData(MODEL_ID, {"memory": states()["memory"]}, np.zeros(BATCH, bool), 7))),
        ({"name": "state-renamed", "verdict": "SnapshotMismatchError"},
         snap.encode(snap.SnapshotData(MODEL_ID, {"memory_v2": states()["memory"], "position": states()["position"]}, np.zeros(BATCH, bool), 7))),
        ({"name": "state-float64", "verdict": "SnapshotMismatchError"}, encoded(memory=states()["memory"].astype(np.float64))),
        ({"name": "state-wrong-slots", "verdict": "SnapshotMismatchError"}, encoded(memory=np.zeros((BATCH, 5, 8), np.float32))),
        ({"name": "payload-longer-than-its-tensors", "verdict": "SnapshotCorruptError"}, reseal(good[:-32] + bytes(8))),
        ({"name": "header-with-byte-order-mark", "verdict": "SnapshotCorruptError"}, raw_header(good, b"\xef\xbb\xbf" + header_text(good))),
        ({"name": "header-nan-literal", "verdict": "SnapshotCorruptError"}, raw_header(good, header_text(good).replace(b'"segments": 7', b'"segments": NaN'))),
        ({"name": "header-not-an-object", "verdict": "SnapshotCorruptError"}, raw_header(good, b"[]")),
        ({"name": "header-number-overflowing-a-double", "verdict": "SnapshotCorruptError"},
         raw_header(good, header_text(good).replace(b'"segments": 7', b'"segments": 1e400'))),
        ({"name": "header-keys-reordered", "verdict": "ok", "canonical": False, "segments": 7, "pending_reset": [False, True]},
         raw_header(good, json.dumps(json.loads(header_text(good)), sort_keys=False, indent=2).encode())),
        *[({"name": name, "verdict": verdict}, edit_header(good, edit)) for name, verdict, edit in FORGED],
        ({"name": "state-nan", "verdict": "NonFiniteStateError"}, encoded(memory=nan)),
        ({"name": "state-inf", "verdict": "NonFiniteStateError"}, encoded(memory=inf)),
    ]


def corpus() -> tuple[dict[str, Any], dict[str, bytes]]:
    doc: dict[str, Any] = {
        "about": ("Snapshots and the verdicts both readers must give when restoring them into a stream of this model_id, "
                  "schema and batch (batch null: any): memx.package.snapshot.decode_checked (tests/package/test_snapshot_corpus.py) "
                  "and libmemx decode_snapshot + check_snapshot (cpp/runtime/tests/test_corpus.cc). Written by "
                  "tests/data/snapshots/make_corpus.py; valid ones re-encode to the same bytes in both languages."),
        "model_id": MODEL_ID,
        "batch": BATCH,
        "schema": {name: {"shape": list(shape), "dtype": dtype} for name, (shape, dtype) in SCHEMA.items()},
        "cases": [],
    }
    blobs: dict[str, bytes] = {}
    for case, blob in cases():
        case = {"file": f"{case['name']}.snap", **case}
        doc["cases"].append(case)
        blobs[case["file"]] = blob
    return doc, blobs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with the files on disk instead of writing them")
    args = ap.parse_args(argv)
    doc, blobs = corpus()
    files = {"corpus.json": (json.dumps(doc, indent=1) + "\n").encode(), **blobs}
    if args.check:
        stale = [name for name, data in files.items() if not (HERE / name).is_file() or (HERE / name).read_bytes() != data]
        extra = sorted(p.name for p in HERE.glob("*.snap") if p.name not in files)
        for name in stale + extra:
            print(f"stale: tests/data/snapshots/{name}", file=sys.stderr)
        return 1 if stale or extra else 0
    for name, data in files.items():
        (HERE / name).write_bytes(data)
    print(f"wrote {len(files)} files to {HERE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
