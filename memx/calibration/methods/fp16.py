"""fp16: weights and activations in float16; the graph's inputs and outputs (tokens, state)
stay float32, and under the default policy the memory path computes in float32 too.
Custom memx ops stay float32 (their kernels and bodies are float32), with casts around."""

from __future__ import annotations

from typing import Any

import onnx

from memx.calibration.methods import GraphJob, QuantMethod, register_method
from memx.errors import QuantizationError
from memx.ops.registry import DOMAIN as OPS_DOMAIN


@register_method
class Float16(QuantMethod):
    name = "fp16"
    precision = "fp16"
    needs_calibration = False
    description = "weights and activations in fp16; graph inputs/outputs (state included) in fp32"

    def quantize(self, job: GraphJob) -> dict[str, Any]:
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

        model = onnx.load(str(job.source))
        custom = sorted({n.op_type for n in model.graph.node if n.domain == OPS_DOMAIN})
        try:
            converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=job.excluded_nodes, op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(custom)))
        except Exception as e:
            raise QuantizationError(f"fp16 conversion failed on graph {job.graph.name!r}: {type(e).__name__}: {e}") from e
        onnx.save(converted, str(job.target))
        return {"weights": "fp16", "activations": "fp16", "io": "fp32", "float32_ops": custom, "excluded_nodes": len(job.excluded_nodes)}
