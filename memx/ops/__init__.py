"""Attention kernels with a portable reference form; later exported as custom ONNX ops (domain `memx`)."""

from memx.ops.local_global import PATTERNS, dense_local_global_attention, local_global_attention

__all__ = ["PATTERNS", "dense_local_global_attention", "local_global_attention"]
