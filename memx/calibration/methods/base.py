"""What every quantization method is given and implements, and the registry of methods."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from memx.calibration.policy import PrecisionPolicy
from memx.onnxgraph import MemoryPath
from memx.registry import Registry
from memx.package.manifest import GraphInfo

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass
class GraphJob:
    """One graph to quantize: its fp32 file (nodes named), where to write the result, the
    recorded inputs, its memory path and the policy."""

    graph: GraphInfo
    source: Path
    target: Path
    feeds: list[dict[str, np.ndarray]]
    memory_path: MemoryPath
    policy: PrecisionPolicy
    calibration: str = "minmax"
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def excluded_nodes(self) -> list[str]:
        """Nodes kept in float: the memory path unless the policy quantizes it too."""
        return self.memory_path.protected_nodes if self.policy.protects_memory_path else []


def unfit_weights(model_path: Path, op_types: tuple[str, ...] = ("MatMul", "Gemm")) -> dict[str, str]:
    """Nodes of ``op_types`` whose constant weight per-channel int8 cannot take: {node: reason}.
    Graphs memx did not write have them (a scoring vector: MatMul by a 1-D weight); the
    methods keep these nodes in float and record why, instead of failing."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    shapes[node.output[0]] = list(a.t.dims)
    unfit = {}
    for i, node in enumerate(model.graph.node):
        if node.op_type not in op_types or len(node.input) < 2 or node.input[1] not in shapes:
            continue
        dims = shapes[node.input[1]]
        if len(dims) != 2:
            unfit[node.name or f"{node.op_type}_{i}"] = f"{node.op_type} weight {node.input[1]!r} has shape {dims}: per-channel int8 needs a 2-D weight"
    return unfit


class QuantMethod(ABC):
    name: ClassVar[str]
    precision: ClassVar[str]  # the package precision it produces (manifest PRECISIONS)
    needs_calibration: ClassVar[bool]
    description: ClassVar[str]

    @abstractmethod
    def quantize(self, job: GraphJob) -> dict[str, Any]:
        """Write ``job.target``; return facts for the manifest (settings, excluded nodes)."""


_METHODS: Registry[type[QuantMethod]] = Registry("quantization method")


def register_method(cls: type[QuantMethod]) -> type[QuantMethod]:
    _METHODS.add(cls.name, cls)
    return cls


def methods() -> list[str]:
    return list(_METHODS)


def get_method(name: str) -> QuantMethod:
    return _METHODS.get(name)()
