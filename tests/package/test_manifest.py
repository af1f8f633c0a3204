"""The manifest schema and package checks: refuse what is not understood, with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from memx.errors import ManifestError, ManifestVersionError, PackageFileError, UnsafePathError
from memx.exporter import Manifest, Package
from memx.package.files import check_external_data, file_info, safe_join


def _rewrite(path: Path, edit) -> None:
    data = json.loads((path / "memx.json").read_text())
    edit(data)
    (path / "memx.json").write_text(json.dumps(data))


def test_manifest_round_trips(package_of):
    m = package_of("rmt-tiny").manifest
    again = Manifest.from_json(m.to_json())
    assert again == m and again.model_id() == m.model_id()


def test_unknown_format_version_is_refused(private_copy):
    p = private_copy("rmt-tiny")
    _rewrite(p, lambda d: d.update(format_version=2))
    with pytest.raises(ManifestVersionError) as e:
        Package.open(p)
    assert e.value.expected == 1 and e.value.actual == 2 and "upgrade memx" in str(e.value)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop("state"), "state is missing"),
        (lambda d: d.update(vocab_size="64"), "vocab_size has the wrong type"),
        (lambda d: d.update(colour="blue"), "unknown fields"),
        (lambda d: d.update(format="something-else"), "not a memx manifest"),
        (lambda d: d["state"][0].update(shape=[4, 32]), "batch axis first"),
        (lambda d: d["state"][0].update(output="state_in.memory"), "one tensor as input and output"),
        (lambda d: d["state"][0].update(dtype="float31"), "unknown dtype"),
        (lambda d: d.update(segment={"min": 5, "max": 2}), "segment limits"),
        (lambda d: d.update(precision="int3"), "precision is unknown"),
        (lambda d: d["state"][0].update(input="state_in.nothing"), "not wired"),
    ],
)
def test_malformed_manifests_are_refused(private_copy, edit, message):
    p = private_copy("rmt-tiny")
    _rewrite(p, edit)
    with pytest.raises(ManifestError, match=message):
        Package.open(p)


def test_manifest_that_is_not_json(private_copy):
    p = private_copy("rmt-tiny")
    (p / "memx.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        Package.open(p)


def test_missing_manifest_and_missing_directory(tmp_path, private_copy):
    p = private_copy("rmt-tiny")
    (p / "memx.json").unlink()
    with pytest.raises(ManifestError, match="no memx.json"):
        Package.open(p)
    with pytest.raises(PackageFileError, match="not found"):
        Package.open(tmp_path / "nowhere.memx")


def test_missing_and_altered_files_are_refused(private_copy):
    p = private_copy("rmt-tiny")
    (p / "model.onnx").unlink()
    with pytest.raises(PackageFileError, match="'model.onnx' is missing"):
        Package.open(p)

    p = private_copy("rmt-enc-tiny")
    with open(p / "model.onnx", "ab") as f:
        f.write(b"junk")
    with pytest.raises(PackageFileError, match="wrong size"):
        Package.open(p)

    p = private_copy("memtr-tiny")
    raw = bytearray((p / "reference/weights.safetensors").read_bytes())
    raw[-1] ^= 0xFF  # same size, other content
    (p / "reference/weights.safetensors").write_bytes(bytes(raw))
    Package.open(p, verify=False)  # sizes only when asked
    with pytest.raises(PackageFileError, match="does not match its hash"):
        Package.open(p)  # hashes by default


def test_paths_that_leave_the_package_are_refused(tmp_path, private_copy):
    with pytest.raises(UnsafePathError):
        safe_join(tmp_path, "/etc/passwd")
    with pytest.raises(UnsafePathError):
        safe_join(tmp_path, "../outside.bin")
    p = private_copy("rmt-tiny")
    _rewrite(p, lambda d: d["files"].update({"../../etc/passwd": {"bytes": 1, "sha256": "0"}}))
    with pytest.raises(UnsafePathError, match="leaves the package"):
        Package.open(p)


def _model_with_external_data(location: str) -> onnx.ModelProto:
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2])
    w.data_location = TensorProto.EXTERNAL
    for k, v in {"location": location, "offset": "0", "length": "8"}.items():
        entry = w.external_data.add()
        entry.key, entry.value = k, v
    node = helper.make_node("Add", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], initializer=[w])
    return helper.make_model(graph)


def test_onnx_external_data_outside_the_package_is_refused(tmp_path, private_copy):
    p = private_copy("rmt-tiny")
    (tmp_path / "secret.bin").write_bytes(np.zeros(2, np.float32).tobytes())
    onnx.save(_model_with_external_data("../secret.bin"), str(p / "model.onnx"))
    _rewrite(p, lambda d: d["files"].update({"model.onnx": vars(file_info(p / "model.onnx"))}))
    with pytest.raises(UnsafePathError, match="leaves the package"):
        Package.open(p)

    inside = tmp_path / "ok"
    inside.mkdir()
    (inside / "w.bin").write_bytes(np.zeros(2, np.float32).tobytes())
    onnx.save(_model_with_external_data("w.bin"), str(inside / "m.onnx"))
    assert check_external_data(inside / "m.onnx", inside) == ["w.bin"]


def test_multi_graph_manifest_says_which_graph_feeds_which(package_of):
    m = package_of("memformer-tiny").manifest
    assert [g.name for g in m.graphs] == ["encoder", "decoder"]
    assert m.graph_named("decoder").consumes == {"encoder_hidden": "encoder"}
    assert [s.graph for s in m.state] == ["encoder"] and [o.graph for o in m.outputs] == ["decoder"]
    assert Manifest.from_json(m.to_json()) == m


def _swap_graphs(d):
    d["graphs"].reverse()


def _unwire_consumes(d):
    d["graphs"][1]["consumes"] = {}


def _consume_unknown(d):
    d["graphs"][1]["consumes"]["lengths"] = "encoder"


@pytest.mark.parametrize(
    "edit, message",
    [
        (_swap_graphs, "does not produce it earlier"),
        (_unwire_consumes, "has no source"),
        (_consume_unknown, "does not produce it earlier"),
    ],
)
def test_broken_graph_pipeline_is_refused(private_copy, edit, message):
    p = private_copy("memformer-tiny")
    _rewrite(p, edit)
    with pytest.raises(ManifestError, match=message):
        Package.open(p, verify=False)


def test_multi_graph_stream_runs_both_graphs_and_is_transactional(package_of):
    from memx import runtimes
    from memx.errors import BackendRunError

    rt = runtimes.open(package_of("memformer-tiny"), backend="onnxruntime")
    s = rt.stream(2)
    s.step(np.arange(12).reshape(2, 6) % 64)
    before = s.state

    def broken_decoder(graph, feeds, _run=rt.backend.run):
        if graph.name == "decoder":
            raise RuntimeError("decoder failed")
        return _run(graph, feeds)

    rt.backend.run = broken_decoder  # the encoder ran and produced a new memory; the step must still not commit it
    with pytest.raises(BackendRunError, match="decoder"):
        s.step(np.ones((2, 6), dtype=np.int64))
    for k, v in before.items():
        np.testing.assert_array_equal(s.state[k], v)
    assert s.segments == 1
