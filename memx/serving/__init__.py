"""Serving memx packages on Triton Inference Server: model repositories (``repository``),
the Python-backend model that runs memx inside Triton (``triton_model``, ``sequences``), a
local server launcher (``launcher``) and a client whose streams behave like local ones
(``client``). docs/serving.md has the whole story."""

from __future__ import annotations

from memx.lazy import lazy_exports

_NAMES = {
    "connect": "memx.serving.client",
    "ServedModel": "memx.serving.client",
    "ServedStream": "memx.serving.client",
    "RepositoryOptions": "memx.serving.repository",
    "write_repository": "memx.serving.repository",
    "check_repository": "memx.serving.repository",
    "TritonServer": "memx.serving.launcher",
    "ensure_server_env": "memx.serving.launcher",
}
__getattr__ = lazy_exports(__name__, _NAMES)
__all__ = sorted(_NAMES)
