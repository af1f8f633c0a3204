"""The layers of docs/architecture.md, checked on the sources: no import cycles between
modules or layers, every import goes to a lower layer, and the package contract imports
nothing of memx but its errors."""

from __future__ import annotations

import pytest

from tests.architecture.imports import all_modules, cycles, layer_graph, layer_of, module_graph

# low to high; a layer may import the layers before it, never its own rank's others or later ones
LAYERS: list[tuple[str, ...]] = [
    ("errors", "progress", "formatting", "plotting", "lazy"),  # utilities
    ("memx",),  # memx/__init__: the lazy top-level facade, __version__
    ("package", "onnxgraph", "registry"),  # the package contract; ONNX graph walking; the registry type
    ("ops",),  # custom ops: schemas, reference bodies, kernel library lookup
    ("models",),  # families, presets, the zoo catalogue, checkpoints
    ("training", "tensorrt"),  # tasks and trainer; doctor, engine builds, plugins, build tags
    ("runtimes",),  # Runtime/Stream/StreamPool and the backends (TensorRT engines included)
    ("validation",),  # parity, precision drift, task accuracy, token sources, record(pkg, report)
    ("exporter",),  # torch.onnx export (its export-time check is validation's parity)
    ("calibration",),  # quantization methods, precision policy, calibration rollouts
    ("zoo",),  # the zoo's public face and its tools (make, report: which quantizes each model)
    ("inspection", "about"),  # facts about a package; what is installed (memx --version, install hints)
    ("profiling", "quickstart", "serving", "edge"),  # serving: Triton repositories, the in-Triton model, launcher, client; edge: memx bundle
    ("cli",),
]
RANK = {layer: rank for rank, names in enumerate(LAYERS) for layer in names}


def test_every_layer_has_a_rank():
    missing = sorted({layer_of(m) for m in all_modules()} - set(RANK))
    assert not missing, f"new layer(s) {missing}: give them a rank in LAYERS here and in docs/architecture.md"


def test_no_import_cycles_between_modules():
    assert cycles(module_graph()) == []


def test_no_import_cycles_between_layers():
    assert cycles(layer_graph()) == []


def test_every_import_goes_down():
    upward = [
        f"{module} -> {dep}"
        for module, deps in module_graph().items()
        for dep in deps
        if layer_of(dep) != layer_of(module) and RANK[layer_of(dep)] >= RANK[layer_of(module)]
    ]
    assert upward == [], "imports into the same or a higher layer:\n" + "\n".join(sorted(upward))


@pytest.mark.parametrize("layer, allowed", [("package", {"errors", "memx"}), ("onnxgraph", set()), ("registry", {"errors"}), ("ops", {"errors", "registry", "lazy"})])
def test_the_lowest_layers_stay_small(layer, allowed):
    used = layer_graph().get(layer, set())
    assert used <= allowed, f"{layer} imports {sorted(used - allowed)}"


def test_runtimes_and_the_package_contract_never_import_the_exporter():
    graph = module_graph()
    offenders = sorted(m for m, deps in graph.items() if layer_of(m) in ("runtimes", "package") and any(layer_of(d) == "exporter" for d in deps))
    assert offenders == []


def test_the_checker_sees_a_cycle_and_an_upward_import():
    """The graph tools themselves: a cycle is found, a lower layer importing a higher one is named."""
    graph = {"memx.a": {"memx.b"}, "memx.b": {"memx.c"}, "memx.c": {"memx.a"}, "memx.d": set()}
    assert cycles(graph) == [["memx.a", "memx.b", "memx.c"]]
    assert RANK["runtimes"] < RANK["exporter"] and layer_of("memx.runtimes.base") == "runtimes" and layer_of("memx") == "memx"
    real = module_graph()  # module-level, from-imports and imports inside functions are all seen
    assert "memx.package.files" in real["memx.runtimes.base"] and "memx.models.zoo" in real["memx.exporter.to_onnx"]
    assert "memx.runtimes" in real["memx.validation.parity"]  # `from memx import runtimes` inside validate()
