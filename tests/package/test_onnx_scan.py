"""memx.package.onnx_scan reads the external-data locations of an ONNX model from its bytes,
without the onnx package: it must name exactly what onnx's own parser finds, on real packages
and on models that keep tensors outside (initializers, Constant attributes, subgraph bodies,
model-local functions), and refuse bytes that are not a protobuf."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from memx.errors import PackageFileError
from memx.package.files import check_external_data
from memx.package.onnx_scan import MalformedProtobuf, external_data_locations


def _onnx_oracle(model: onnx.ModelProto) -> list[str]:
    """What onnx's parser says: every tensor's external_data location, graphs, subgraphs and functions."""
    out: list[str] = []

    def tensor(t):
        out.extend(e.value for e in t.external_data if e.key == "location")

    def nodes(ns):
        for n in ns:
            for a in n.attribute:
                if a.HasField("t"):
                    tensor(a.t)
                for t in a.tensors:
                    tensor(t)
                if a.HasField("g"):
                    graph(a.g)
                for g in a.graphs:
                    graph(g)

    def graph(g):
        for t in g.initializer:
            tensor(t)
        for s in g.sparse_initializer:
            tensor(s.values), tensor(s.indices)
        nodes(g.node)

    graph(model.graph)
    for f in model.functions:
        nodes(f.node)
    return out


@pytest.mark.parametrize("name", ["rmt-tiny", "gmat-tiny", "memformer-tiny", "infformer-tiny"])
def test_real_packages_name_what_onnx_finds(name, package_of):
    pkg = package_of(name)
    for g in pkg.manifest.graphs:
        raw = pkg.file(g.file).read_bytes()
        assert sorted(external_data_locations(raw)) == sorted(_onnx_oracle(onnx.load_from_string(raw)))


def _external_model(tmp_path):
    """Tensors outside the file in every place a tensor can be: an initializer, a Constant's
    attribute, an If branch's initializer, and a model-local function's Constant."""
    big = np.arange(4096, dtype=np.float32)
    then_g = helper.make_graph([helper.make_node("Identity", ["w_then"], ["out_then"])], "then", [], [helper.make_tensor_value_info("out_then", TensorProto.FLOAT, [4096])],
                               initializer=[numpy_helper.from_array(big + 1, "w_then")])
    else_g = helper.make_graph([helper.make_node("Identity", ["w"], ["out_else"])], "else", [], [helper.make_tensor_value_info("out_else", TensorProto.FLOAT, [4096])])
    nodes = [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(big + 2, "c")),
             helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g),
             helper.make_node("Twice", ["c"], ["z"], domain="local")]
    fn = helper.make_function("local", "Twice", ["x"], ["y"], [helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(big + 3, "k")),
                                                                 helper.make_node("Add", ["x", "k"], ["y"])], [helper.make_opsetid("", 18)])
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4096]), helper.make_tensor_value_info("z", TensorProto.FLOAT, [4096])],
                          initializer=[numpy_helper.from_array(big, "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)], functions=[fn])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)  # initializers, subgraphs' too
    model = onnx.load(str(path), load_external_data=False)
    attribute_tensors = [model.graph.node[0].attribute[0].t, model.functions[0].node[0].attribute[0].t]  # onnx.save leaves these inside
    for i, t in enumerate(attribute_tensors):
        (tmp_path / f"attr{i}.bin").write_bytes(t.raw_data or numpy_helper.to_array(t).tobytes())
        t.ClearField("raw_data")
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value=f"attr{i}.bin")
    onnx.save(model, str(path))
    return path


def test_every_place_a_tensor_can_live_outside_is_found(tmp_path):
    path = _external_model(tmp_path)
    raw = path.read_bytes()
    found = external_data_locations(raw)
    assert sorted(found) == sorted(_onnx_oracle(onnx.load(str(path), load_external_data=False)))
    assert sorted(found) == ["attr0.bin", "attr1.bin", "w", "w_then"]  # initializer, If branch, Constant attribute, function Constant
    assert check_external_data(path, tmp_path) == sorted(set(found))


def test_bytes_that_are_not_a_protobuf_are_refused_typed(tmp_path):
    for bad in (b"\x0a\xff\xff\xff\xff\x0f", b"\x3a\x10ab", b"\xff" * 12, b"\x0b\x01"):  # runs past the end, truncated, bad varint, wire type 3
        with pytest.raises(MalformedProtobuf):
            external_data_locations(bad)
    path = tmp_path / "m.onnx"
    path.write_bytes(b"\x3a\x10ab")
    with pytest.raises(PackageFileError, match="not a readable ONNX model"):
        check_external_data(path, tmp_path)


def test_a_path_leaving_the_package_is_refused(tmp_path):
    from memx.errors import UnsafePathError

    path = _external_model(tmp_path)
    model = onnx.load(str(path), load_external_data=False)
    for e in model.graph.initializer[0].external_data:
        if e.key == "location":
            e.value = "../../etc/passwd"
    onnx.save(model, str(path))
    with pytest.raises(UnsafePathError):
        check_external_data(path, tmp_path)


def test_running_a_package_imports_neither_torch_nor_onnx(package_of):
    """What an edge device or a server that only runs packages pays: import memx.runtimes, open a
    GMAT package (memx's custom op: its kernel library looked up), step it."""
    code = ("import sys, memx.runtimes as rt; before = sorted(m for m in ('torch', 'onnx') if m in sys.modules); "
            f"s = rt.open({str(package_of('gmat-tiny').path)!r}).stream(1); s.step([[1, 2, 3]]); "
            "print(before, sorted(m for m in ('torch', 'onnx', 'onnxscript') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[] []", r.stdout + r.stderr
