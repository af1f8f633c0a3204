"""Calibration and quantization that keep the memory intact (DESIGN.md §6).

- ``feeds``: calibration inputs from rollouts of the fp32 package (states at many depths);
- ``policy``: the memory path of each graph and the precision policy for it;
- ``methods``: registered quantization methods (int8-qdq, int8-dynamic, fp16);
- ``quantize``: ``quantize_package`` writes a new package;
- ``evaluate``: accuracy and drift against the fp32 reference over long streams;
- ``inspect``: what a quantized graph holds (Q/DQ, casts, the memory path untouched).
"""

from __future__ import annotations

from memx.calibration.methods import get_method, methods
from memx.calibration.policy import STATE_PRECISIONS, PrecisionPolicy
from memx.onnxgraph import find_memory_path
from memx.calibration.quantize import quantize_package

__all__ = ["STATE_PRECISIONS", "PrecisionPolicy", "find_memory_path", "get_method", "methods", "quantize_package"]
