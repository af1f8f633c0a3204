"""TensorRT: static checks of packages (doctor), engine builds (TensorRT or, ahead of time on a
CPU-only machine, TensorRT-RTX), build tags and their compatibility rules.

    from memx.tensorrt import diagnose, build_engines
    report = diagnose("pkg.memx", trt_version="10.3")       # findings, each with its fix
    build_engines("pkg.memx", target_cc="sm89")              # engines/*.plan + build tags in memx.json
"""

from __future__ import annotations

from memx.tensorrt.build import build_engines
from memx.tensorrt.doctor import CHECKS, DoctorReport, Finding, diagnose
from memx.tensorrt.versions import TrtVersion, installed_flavour, parse_version

__all__ = ["CHECKS", "DoctorReport", "Finding", "TrtVersion", "build_engines", "diagnose", "installed_flavour", "parse_version"]
