"""int8-dynamic: int8 weights (per channel), activations quantized on the fly per call
(ONNX Runtime ``quantize_dynamic``). No calibration; for CPU deployment.

x86 CPUs without VNNI multiply uint8 activations by int8 weights with an instruction whose
int16 pair sums saturate (ONNX Runtime's u8s8 kernels on AVX2/AVX-512 without VNNI). The weights
then use a 7-bit range (``reduce_range``), as ONNX Runtime advises for such CPUs. Measured on a
2-core AVX2 EPYC: the ∞-former sort model lost 2 points of accuracy with 8-bit weights and none
with 7-bit ones. The choice follows the CPU that quantizes (normally the one that runs);
``options["reduce_range"]`` overrides it."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from memx.calibration.methods.base import GraphJob, QuantMethod, register_method, unfit_weights
from memx.onnxgraph import quiet_onnxruntime_tools
from memx.errors import QuantizationError


@register_method
class Int8Dynamic(QuantMethod):
    name = "int8-dynamic"
    precision = "int8-dynamic"
    needs_calibration = False
    description = "int8 weights per channel, activations quantized at run time (CPU)"

    def quantize(self, job: GraphJob) -> dict[str, Any]:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        reduce = job.options.get("reduce_range")
        reduce = (not int8_dot_product_without_saturation()) if reduce is None else bool(reduce)
        skipped = unfit_weights(job.source, ("MatMul",))
        excluded = list(job.excluded_nodes) + [n for n in skipped if n not in job.excluded_nodes]
        try:
            with quiet_onnxruntime_tools():
                quantize_dynamic(str(job.source), str(job.target), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8,
                                 per_channel=True, reduce_range=reduce, nodes_to_exclude=excluded)
        except Exception as e:
            raise QuantizationError(f"onnxruntime quantize_dynamic failed on graph {job.graph.name!r}: {type(e).__name__}: {e}") from e
        weights = "int8 symmetric per-channel" + (" (7-bit range: this CPU has no VNNI)" if reduce else "")
        return {"weights": weights, "activations": "int8 per call (dynamic)", "op_types": ["MatMul"], "reduce_range": reduce,
                "excluded_nodes": len(job.excluded_nodes), "skipped_nodes": skipped}


def int8_dot_product_without_saturation(cpuinfo: str | None = None, machine: str | None = None) -> bool:
    """True where ONNX Runtime's int8 MatMul kernels do not saturate: x86 with VNNI (AVX-512
    VNNI or AVX-VNNI), and ARM. False on other x86 CPUs, and where the flags cannot be read."""
    machine = (machine or platform.machine()).lower()
    if machine in ("aarch64", "arm64"):
        return True
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & {"avx512_vnni", "avx_vnni"})
