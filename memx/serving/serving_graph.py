"""The serving graph: a package's step graph with Triton's interface, for the onnxruntime and
tensorrt backends, where Triton itself keeps each sequence's memory (implicit state).

Triton hands a sequence-batched model its controls as [B, 1] tensors and cannot reshape
them, and the memx client sends each sequence's tokens cut to its length. So the serving
graph differs from the package's step graph only at its inputs:

    TOKENS  int64 [B, S]  -> Identity                          -> tokens   (the step graph's)
    START   bool  [B, 1]  -> Reshape [-1]                      -> reset    [B]
    TOKENS                -> Shape -> Gather [1], Gather [0]
                          -> Expand (S to B rows)              -> lengths  [B] (every row is S long)

Everything else (extra inputs, ``state_in.*`` / ``state_out.*``, outputs, custom ops and their
model-local bodies) is the package's graph unchanged. START selects the learned initial memory
in-graph, exactly as ``reset`` does in a local Stream, so Triton's zero initial state is never
read by the model.
"""

from __future__ import annotations

from typing import Any

from memx.errors import RepositoryError
from memx.package import Package
from memx.package.manifest import GraphInfo, Manifest, TensorInfo

TOKENS = "TOKENS"
START = "START"
_PREFIX = "memx_serving."  # names of the nodes and constants the serving graph adds


def serving_graph_info(m: Manifest) -> GraphInfo:
    """The serving graph's inputs and outputs as a GraphInfo (what a TensorRT profile covers)."""
    g = single_graph(m)
    inputs = [TensorInfo(TOKENS, "int64", ["batch", "segment"]), TensorInfo(START, "bool", ["batch", 1])]
    inputs += [t for t in g.inputs if t.name not in ("tokens", "lengths", "reset")]
    return GraphInfo(name="serving", file="model.onnx", role="step", inputs=inputs, outputs=list(g.outputs))


def single_graph(m: Manifest) -> GraphInfo:
    """The package's one step graph; a package of several graphs cannot be one Triton model."""
    if len(m.graphs) != 1:
        raise RepositoryError("Triton's onnxruntime and tensorrt backends run one graph per model, and this package steps through several",
                              expected="a single-graph package", actual=[g.name for g in m.graphs],
                              hint="serve it with --backend python (memx's runtime runs every graph of the step inside Triton)")
    g = m.graphs[0]
    names = {t.name for t in g.inputs}
    for required in ("tokens", "lengths", "reset"):
        if required not in names:
            raise RepositoryError(f"the step graph has no {required!r} input", expected=["tokens", "lengths", "reset"], actual=sorted(names))
    return g


def serving_model(pkg: Package) -> Any:
    """The serving graph of ``pkg`` as an onnx.ModelProto (weights inside)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    g = single_graph(pkg.manifest)
    model = onnx.load(str(pkg.file(g.file)))
    graph = model.graph
    by_name = {i.name: i for i in graph.input}
    batch = _dim(by_name["tokens"], 0)
    segment = _dim(by_name["tokens"], 1)
    new_inputs = [helper.make_tensor_value_info(TOKENS, TensorProto.INT64, [batch, segment]),
                  helper.make_tensor_value_info(START, TensorProto.BOOL, [batch, 1])]
    kept = [i for i in graph.input if i.name not in ("tokens", "lengths", "reset")]
    constants = {f"{_PREFIX}flat": np.array([-1], np.int64), f"{_PREFIX}axis1": np.array([1], np.int64), f"{_PREFIX}axis0": np.array([0], np.int64)}
    p = _PREFIX
    nodes = [
        helper.make_node("Identity", [TOKENS], ["tokens"], name=f"{p}tokens"),
        helper.make_node("Reshape", [START, f"{p}flat"], ["reset"], name=f"{p}start_to_reset"),  # [B, 1] -> [B]
        helper.make_node("Shape", [TOKENS], [f"{p}shape"], name=f"{p}shape"),  # [2]: B, S
        helper.make_node("Gather", [f"{p}shape", f"{p}axis1"], [f"{p}width"], name=f"{p}width", axis=0),  # [1]: S
        helper.make_node("Gather", [f"{p}shape", f"{p}axis0"], [f"{p}rows"], name=f"{p}rows", axis=0),  # [1]: B
        helper.make_node("Expand", [f"{p}width", f"{p}rows"], ["lengths"], name=f"{p}lengths"),  # [B]: S in every row
    ]
    del graph.input[:]
    graph.input.extend(new_inputs + kept)
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in constants.items())
    old_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old_nodes)
    return model


def _dim(value_info: Any, axis: int) -> int | str:
    d = value_info.type.tensor_type.shape.dim[axis]
    return d.dim_param or d.dim_value or "batch"


def check_serving_model(model: Any, m: Manifest) -> None:
    """The serving graph has Triton's inputs (TOKENS, START [B, 1]) and every state input and
    output of the manifest, with the manifest's dims."""
    g = single_graph(m)

    def shapes(values: Any) -> dict[str, list[int | str]]:
        return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}

    ins, outs = shapes(model.graph.input), shapes(model.graph.output)
    want_in = {t.name: t.shape for t in serving_graph_info(m).inputs}
    want_out = {t.name: t.shape for t in g.outputs}
    for where, got, want in (("input", ins, want_in), ("output", outs, want_out)):
        for name, shape in want.items():
            if name not in got or got[name][1:] != shape[1:]:
                raise RepositoryError(f"the serving graph's {where} {name!r} does not match the package", expected=shape, actual=got.get(name, "absent"))
    extra = set(ins) - set(want_in)
    if extra:
        raise RepositoryError("the serving graph takes inputs Triton would not feed", expected=sorted(want_in), actual=sorted(extra))
