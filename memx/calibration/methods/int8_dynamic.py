"""int8-dynamic: int8 weights (per channel), activations quantized on the fly per call
(ONNX Runtime ``quantize_dynamic``). No calibration; for CPU deployment."""

from __future__ import annotations

from typing import Any

from memx.calibration.methods import GraphJob, QuantMethod, register_method
from memx.calibration.methods.int8_qdq import quiet_onnxruntime_quantization
from memx.errors import QuantizationError


@register_method
class Int8Dynamic(QuantMethod):
    name = "int8-dynamic"
    precision = "int8-dynamic"
    needs_calibration = False
    description = "int8 weights per channel, activations quantized at run time (CPU)"

    def quantize(self, job: GraphJob) -> dict[str, Any]:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        try:
            with quiet_onnxruntime_quantization():
                quantize_dynamic(str(job.source), str(job.target), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8,
                                 per_channel=True, nodes_to_exclude=job.excluded_nodes)
        except Exception as e:
            raise QuantizationError(f"onnxruntime quantize_dynamic failed on graph {job.graph.name!r}: {type(e).__name__}: {e}") from e
        return {"weights": "int8 symmetric per-channel", "activations": "int8 per call (dynamic)", "op_types": ["MatMul"],
                "excluded_nodes": len(job.excluded_nodes)}
