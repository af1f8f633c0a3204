"""Attention kernels with a portable reference form, exported as custom ONNX ops (domain `memx`)."""

from memx.ops.local_global import PATTERNS, dense_local_global_attention, local_global_attention
from memx.ops.lga_op import sparse_attention
from memx.ops.registry import DOMAIN, custom_ops, exporting_custom_ops, get_custom_op

__all__ = [
    "DOMAIN", "PATTERNS", "custom_ops", "dense_local_global_attention", "exporting_custom_ops", "get_custom_op",
    "local_global_attention", "sparse_attention",
]
