"""Attention kernels with a portable reference form, exported as custom ONNX ops (domain `memx`).

Names load on first use, so that running a package (``memx.ops.library``: where the kernel
library is) imports no torch."""

from memx.lazy import lazy_exports

_NAMES = {
    "PATTERNS": "memx.ops.local_global",
    "dense_local_global_attention": "memx.ops.local_global",
    "local_global_attention": "memx.ops.local_global",
    "sparse_attention": "memx.ops.lga_op",
    "DOMAIN": "memx.ops.registry",
    "custom_ops": "memx.ops.registry",
    "exporting_custom_ops": "memx.ops.registry",
    "get_custom_op": "memx.ops.registry",
}
__getattr__ = lazy_exports(__name__, _NAMES)
__all__ = sorted(_NAMES)
