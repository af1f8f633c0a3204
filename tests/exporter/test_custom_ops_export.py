"""GMAT packages carry memx.LocalGlobalAttention nodes with reference bodies; they pass long
parity with the C++ kernel and with the body alone; --inline-custom-ops exports no custom node."""

from __future__ import annotations

import onnx
import pytest

from memx import runtimes
from memx.exporter import export_preset
from memx.validation import validate


def _memx_nodes(path) -> list[onnx.NodeProto]:
    model = onnx.load(str(path), load_external_data=False)
    return [n for n in model.graph.node if n.domain == "memx"]


@pytest.mark.parametrize("preset", ["gmat-tiny", "gmat-nomem-tiny", "gmat-causal-tiny"])
def test_gmat_package_uses_the_custom_op_with_its_reference_body(package_of, preset):
    pkg = package_of(preset)
    nodes = _memx_nodes(pkg.file("model.onnx"))
    model = onnx.load(str(pkg.file("model.onnx")), load_external_data=False)
    cfg = pkg.manifest.config
    assert len(nodes) == cfg["n_layers"] and {n.op_type for n in nodes} == {"LocalGlobalAttention"}
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs["window"] == cfg["window"] and attrs["pattern"] == cfg["pattern"].encode() and attrs["causal"] == int(cfg["causal"])
    assert attrs["plugin_namespace"] == b"memx" and attrs["plugin_version"] == b"1"
    assert len([i for i in nodes[0].input if i]) == (6 if cfg["num_memory"] else 4)
    assert [(f.domain, f.name) for f in model.functions] == [("memx", "LocalGlobalAttention")]
    assert ("memx", 1) in {(o.domain, o.version) for o in model.opset_import}
    assert pkg.manifest.custom_ops == [{"domain": "memx", "op": "LocalGlobalAttention", "version": 1, "nodes": cfg["n_layers"],
                                        "reference_body": "model-local function", "graph": "step"}]


@pytest.mark.parametrize("preset", ["gmat-tiny", "gmat-nomem-tiny", "gmat-causal-tiny"])
def test_reference_body_alone_passes_long_parity(package_of, preset, reference_rollouts):
    rt = runtimes.open(package_of(preset), backend="onnxruntime", custom_op_library=False)
    assert rt.describe()["custom_ops"] == "reference body (kernel library disabled)"
    report = validate(package_of(preset), segments=256, progress=False, backend_options={"custom_op_library": False}, reference_rollouts=reference_rollouts)
    assert report.passed, report.summary()


@pytest.mark.kernels
@pytest.mark.parametrize("preset", ["gmat-tiny", "gmat-nomem-tiny", "gmat-causal-tiny", "gmat-chunked-tiny"])
def test_kernel_library_passes_long_parity(package_of, preset, reference_rollouts):
    rt = runtimes.open(package_of(preset), backend="onnxruntime")
    assert rt.describe()["custom_ops"] == "kernel (libmemx_ops.so)"
    report = validate(package_of(preset), segments=256, progress=False, backend_options={"custom_op_library": True}, reference_rollouts=reference_rollouts)
    assert report.passed, report.summary()


def test_inline_custom_ops_exports_the_plain_decomposition(tmp_path):
    pkg = export_preset("gmat-tiny", tmp_path / "inline.memx", inline_custom_ops=True, verify_segments=16)
    assert _memx_nodes(pkg.file("model.onnx")) == [] and pkg.manifest.custom_ops == []
    assert runtimes.open(pkg, backend="onnxruntime").describe()["custom_ops"] == "none used"


def test_missing_kernel_library_is_a_clear_error_when_asked_for(package_of, tmp_path):
    from memx.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match="custom-op library not found"):
        runtimes.open(package_of("gmat-tiny"), backend="onnxruntime", custom_op_library=str(tmp_path / "nope.so"))
