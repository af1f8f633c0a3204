"""Where a bundle goes: one registered :class:`Target` per kind of board.

    TARGETS.get("jetson")   # Target(name="jetson", arch="aarch64", ...)
    TARGETS.get("jetsn")    # RegistryError: unknown bundle target 'jetsn': expected one of ['jetson'], ...

A new target is one ``TARGETS.add`` here (and, if its board needs another script, a template in
``templates/``); ``tests/edge/test_bundle.py`` enumerates the registry.
"""

from __future__ import annotations

from dataclasses import dataclass

from memx.registry import Registry


@dataclass(frozen=True)
class Target:
    """What memx bundle writes for one kind of board."""

    name: str
    description: str
    arch: str  # `uname -m` of the board: the prebuilt binaries must be this machine type
    elf_machine: int  # e_machine of those binaries (ELF header), checked before they are bundled
    devices: tuple[str, ...]  # memx-run devices run.sh tries, in order
    target_cc: str  # compute capability for `memx build --target-cc`
    trt_version: str  # the TensorRT of the board's OS, for `memx doctor --trt-version`
    prebuilt: str  # the checkout's install tree of the cross build (make target below)
    prebuilt_make: str
    script: str = "run.sh"  # template in memx/edge/templates/
    readme: str = "README.md.in"


TARGETS: Registry[Target] = Registry("bundle target")

TARGETS.add("jetson", Target(
    name="jetson",
    description="NVIDIA Jetson Orin with JetPack 6 (aarch64, CUDA and TensorRT through ONNX Runtime's execution providers)",
    arch="aarch64",
    elf_machine=183,  # EM_AARCH64
    devices=("tensorrt", "cuda", "cpu"),
    target_cc="sm87",
    trt_version="10.3",
    prebuilt="build/aarch64/install",
    prebuilt_make="make cpp-aarch64",
))
