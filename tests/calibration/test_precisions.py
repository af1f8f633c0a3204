"""The package contract's precision list is generated from the registered quantization
methods, for Python and C++ alike: a method registered without regenerating fails here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from memx.calibration import methods as method_registry
from memx.calibration.methods.base import _METHODS
from memx.errors import ManifestError
from memx.package.manifest import Manifest
from memx.package.precisions import METHODS, PRECISIONS, method_help

ROOT = Path(__file__).resolve().parents[2]


def generator():
    spec = importlib.util.spec_from_file_location("generate_precisions", ROOT / "tools" / "generate_precisions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_files_are_fresh():
    assert generator().main(["--check"]) == 0, "run: python tools/generate_precisions.py"


def test_every_method_precision_is_a_manifest_precision_and_nothing_else_is():
    made = {_METHODS.get(name).precision for name in method_registry()}
    assert set(PRECISIONS) == {"fp32"} | made
    assert [m["name"] for m in METHODS] == method_registry()
    for name in method_registry():
        assert name in method_help() and _METHODS.get(name).description in method_help()


def test_a_new_method_changes_both_generated_lists(monkeypatch):
    gen = generator()

    class Int4:
        precision, needs_calibration, description = "int4-awq", True, "int4 weights"

    monkeypatch.setitem(_METHODS._entries, "int4-awq", Int4)
    cat = gen.catalogue()
    assert cat["precisions"][-1] == "int4-awq" and '"int4-awq"' in gen.cpp_text(cat)
    assert gen.python_text(cat) != (ROOT / "memx" / "package" / "precisions.json").read_text(encoding="utf-8")


def test_a_precision_no_method_makes_is_refused(package_of):
    data = package_of("rmt-tiny").manifest.to_dict()
    data["precision"] = "bf16"
    with pytest.raises(ManifestError, match="precision is unknown") as e:
        Manifest.from_dict(data)
    assert "int8-qdq" in str(e.value) and "bf16" in str(e.value)
