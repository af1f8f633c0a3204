"""The serving graph: a package's step graph with Triton's interface, for the onnxruntime and
tensorrt backends, where Triton itself keeps each sequence's memory (implicit state).

Triton hands a sequence-batched model its controls as [B, 1] tensors and cannot reshape them,
and memx's client names its inputs as it does for the python backend. So the serving graph
differs from the package's step graph only at its inputs:

    TOKENS   int64 [B, S]  -> Identity      -> tokens   (the step graph's)
    LENGTHS  int64 [B]     -> Identity      -> lengths  (Triton dims [1], reshaped to one value per row)
    START    bool  [B, 1]  -> Reshape [-1]  -> reset    [B]

Everything else (extra inputs, ``state_in.*`` / ``state_out.*``, outputs, custom ops and their
model-local bodies) is the package's graph unchanged. START selects the learned initial memory
in-graph, exactly as ``reset`` does in a local Stream, so Triton's zero initial state is never
read by the model. Rows are sent padded to the stream's width with their lengths, so Triton,
which batches only requests of equal shape, batches every sequence stepping that width.
"""

from __future__ import annotations

from typing import Any

from memx.errors import RepositoryError
from memx.package import Package
from memx.package.manifest import GraphInfo, Manifest, TensorInfo

TOKENS = "TOKENS"
LENGTHS = "LENGTHS"
START = "START"
_PREFIX = "memx_serving."  # names of the nodes and constants the serving graph adds
_RENAMED = {"tokens": TOKENS, "lengths": LENGTHS, "reset": START}


def serving_graph_info(m: Manifest) -> GraphInfo:
    """The serving graph's inputs and outputs as a GraphInfo (what a TensorRT profile covers)."""
    g = single_graph(m)
    inputs = [TensorInfo(TOKENS, "int64", ["batch", "segment"]), TensorInfo(LENGTHS, "int64", ["batch"]), TensorInfo(START, "bool", ["batch", 1])]
    inputs += [t for t in g.inputs if t.name not in _RENAMED]
    return GraphInfo(name="serving", file="model.onnx", role="step", inputs=inputs, outputs=list(g.outputs))


def single_graph(m: Manifest) -> GraphInfo:
    """The package's one step graph; a package of several graphs cannot be one Triton model."""
    if len(m.graphs) != 1:
        raise RepositoryError("Triton's onnxruntime and tensorrt backends run one graph per model, and this package steps through several",
                              expected="a single-graph package", actual=[g.name for g in m.graphs],
                              hint="serve it with --backend python (memx's runtime runs every graph of the step inside Triton)")
    g = m.graphs[0]
    names = {t.name for t in g.inputs}
    for required in _RENAMED:
        if required not in names:
            raise RepositoryError(f"the step graph has no {required!r} input", expected=list(_RENAMED), actual=sorted(names))
    return g


def serving_model(pkg: Package) -> Any:
    """The serving graph of ``pkg`` as an onnx.ModelProto (weights inside)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = single_graph(pkg.manifest)
    model = onnx.load(str(pkg.file(g.file)))
    graph = model.graph
    by_name = {i.name: i for i in graph.input}
    batch, segment = _dim(by_name["tokens"], 0), _dim(by_name["tokens"], 1)
    new_inputs = [helper.make_tensor_value_info(TOKENS, TensorProto.INT64, [batch, segment]),
                  helper.make_tensor_value_info(LENGTHS, TensorProto.INT64, [batch]),
                  helper.make_tensor_value_info(START, TensorProto.BOOL, [batch, 1])]
    kept = [i for i in graph.input if i.name not in _RENAMED]
    p = _PREFIX
    nodes = [
        helper.make_node("Identity", [TOKENS], ["tokens"], name=f"{p}tokens"),
        helper.make_node("Identity", [LENGTHS], ["lengths"], name=f"{p}lengths"),
        helper.make_node("Reshape", [START, f"{p}flat"], ["reset"], name=f"{p}start_to_reset"),  # [B, 1] -> [B]
    ]
    del graph.input[:]
    graph.input.extend(new_inputs + kept)
    graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), f"{p}flat"))
    old_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old_nodes)
    return model


def _dim(value_info: Any, axis: int) -> int | str:
    d = value_info.type.tensor_type.shape.dim[axis]
    return d.dim_param or d.dim_value or "batch"


def check_serving_model(model: Any, m: Manifest) -> None:
    """The serving graph has Triton's inputs (TOKENS, LENGTHS, START [B, 1]) and every state
    input and output of the manifest, with the manifest's dims."""
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
