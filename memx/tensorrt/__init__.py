"""TensorRT: static checks of packages (doctor), engine builds (TensorRT or, ahead of time on a
CPU-only machine, TensorRT-RTX), build tags and their compatibility rules.

    from memx.tensorrt import diagnose, build_engines
    report = diagnose("pkg.memx", trt_version="10.3")       # findings, each with its fix
    build_engines("pkg.memx", target_cc="sm89")              # engines/*.plan + build tags in memx.json
"""

from __future__ import annotations

from memx.tensorrt.doctor import CHECKS, DoctorReport, Finding, diagnose
from memx.tensorrt.versions import TrtVersion, installed_flavour, parse_version

__all__ = ["CHECKS", "DoctorReport", "Finding", "TrtVersion", "diagnose", "installed_flavour", "parse_version"]


def build_engines(*args, **kwargs):  # noqa: ANN002, ANN003 - imported lazily: the builder modules are heavy
    from memx.tensorrt.build import build_engines as _build

    return _build(*args, **kwargs)
