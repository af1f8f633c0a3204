"""Quantization methods, one module each, registered by name (``memx quantize --method``).

A method turns one fp32 graph into its low-precision form, given the graph's memory path
and the precision policy; the calibration inputs come from rollouts (``calibration.feeds``).
Tests enumerate :func:`methods`, so a new method is tested by registering it.
"""

from __future__ import annotations

# registration order is the order users see (memx quantize --help, the generated precision list)
from memx.calibration.methods import fp16, int8_qdq, int8_dynamic  # noqa: F401  (register)  # isort: skip
from memx.calibration.methods.base import _METHODS, CALIBRATION_METHODS, GraphJob, QuantMethod, get_method, methods, register_method

__all__ = ["CALIBRATION_METHODS", "GraphJob", "QuantMethod", "_METHODS", "get_method", "methods", "register_method"]
