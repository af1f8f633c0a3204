"""Exported graphs with memx custom ops parse and build under a TensorRT ONNX parser, which
uses the model-local reference body when no plugin is registered (tensorrt if installed,
else TensorRT-RTX, which builds ahead of time on a CPU-only machine)."""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = pytest.mark.trt_parser


def _trt():
    if importlib.util.find_spec("tensorrt"):
        import tensorrt

        return tensorrt, False
    import tensorrt_rtx_bindings

    return tensorrt_rtx_bindings, True


def _build(path, batch_max: int = 4, segment_max: int = 32):
    trt, rtx = _trt()
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(path))
    errors = [parser.get_error(i).desc() for i in range(parser.num_errors)]
    assert ok, errors
    config = builder.create_builder_config()
    if rtx:  # ahead of time, for an RTX-class GPU (this machine needs none)
        config.num_compute_capabilities = 1
        config.set_compute_capability(trt.ComputeCapability.SM89, 0)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        dims = list(t.shape)
        lo = [1 if d == -1 else d for d in dims]
        hi = [batch_max if a == 0 and d == -1 else segment_max if d == -1 else d for a, d in enumerate(dims)]
        profile.set_shape(t.name, lo, hi, hi)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    return network, engine


@pytest.mark.parametrize("preset", ["gmat-tiny", "gmat-nomem-tiny"])
def test_custom_op_graph_parses_via_its_reference_body_and_builds(package_of, preset):
    pkg = package_of(preset)
    assert pkg.manifest.custom_ops, "the package must use memx custom ops for this test to mean anything"
    network, engine = _build(pkg.file("model.onnx"))
    assert engine is not None and engine.nbytes > 0
    trt, _ = _trt()
    plugin_types = {getattr(trt.LayerType, n) for n in ("PLUGIN", "PLUGIN_V2", "PLUGIN_V3") if hasattr(trt.LayerType, n)}
    kinds = {network.get_layer(i).type for i in range(network.num_layers)}
    assert not kinds & plugin_types  # no plugin layer: the reference body was imported
    assert trt.LayerType.MATRIX_MULTIPLY in kinds and network.num_layers > 100
    assert [network.get_input(i).name for i in range(network.num_inputs)] == [t.name for t in pkg.manifest.graphs[0].inputs]


@pytest.mark.parametrize("preset", ["rmt-tiny", "gmat-causal-tiny", "kvcache-tiny", "infformer-tiny"])
def test_decode_graphs_parse_and_build(package_of, preset):
    """Both decode graphs (memx generate) import and build under a TensorRT parser: the cache
    writes are a one-hot MatMul and Where, nothing TensorRT lacks."""
    pkg = package_of(preset)
    assert pkg.manifest.decode is not None
    for graph in pkg.manifest.decode.graphs:
        network, engine = _build(pkg.file(graph.file), segment_max=pkg.manifest.decode.capacity)
        assert engine is not None and engine.nbytes > 0, graph.name
        assert [network.get_input(i).name for i in range(network.num_inputs)] == [t.name for t in graph.inputs]
