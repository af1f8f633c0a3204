"""Export: every preset matches its PyTorch reference over long streams; exports are atomic."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from safetensors.torch import save_file

from memx import runtimes
from memx.errors import CheckpointError, ContractError, ExportError, PackageExistsError, SegmentLengthError
from memx.exporter import Package, export, export_preset
from memx.validation import validate
from memx.exporter import to_onnx as export_module
from memx.package.manifest import METADATA_KEY
from memx.models import build_preset, presets

PRESETS = [pytest.param(p.name, marks=[pytest.mark.slow] if p.size != "tiny" else []) for p in presets()]
LARGER = [p.name for p in presets() if p.size != "tiny"]
SHORT_SEGMENTS = 32  # the larger presets' parity in `make test`; the full 256 run under `slow`


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_matches_reference_over_256_segments(name, package_of):
    _check_parity(package_of(name), segments=256)


@pytest.mark.parametrize("name", LARGER)
def test_larger_presets_match_reference_over_32_segments(name, package_of):
    _check_parity(package_of(name), segments=SHORT_SEGMENTS)


def _check_parity(pkg: Package, *, segments: int) -> None:
    report = validate(pkg, segments=segments, batch=4, atol=1e-4, seed=7, progress=False)
    assert report.passed, report.summary()
    assert report.resets > 0 and report.padded_rows > 0, "the streams must exercise resets and padding"
    names = set(report.per_tensor_max)
    assert {o.name for o in pkg.manifest.outputs} <= names
    assert {f"state.{s.name}" for s in pkg.manifest.state} <= names, "states must be compared, not only outputs"


def test_manifest_is_mirrored_into_onnx_metadata(package_of):
    pkg = package_of("rmt-tiny")
    proto = onnx.load(str(pkg.file("model.onnx")))
    props = {p.key: p.value for p in proto.metadata_props}
    mirrored = json.loads(props[METADATA_KEY])
    assert mirrored["family"] == "rmt" and mirrored["state"][0]["input"] == "state_in.memory"
    assert props[METADATA_KEY] == pkg.manifest.mirror_json()


def test_graph_io_follows_the_contract(package_of):
    g = package_of("memctrl-tiny").manifest.graph("step")
    assert [t.name for t in g.inputs] == ["tokens", "lengths", "reset", "state_in.memory"]
    assert [t.name for t in g.outputs] == ["logits", "state_out.memory"]
    assert g.inputs[0].shape == ["batch", "segment"] and g.inputs[3].shape == ["batch", 4, 32]


def test_export_refuses_an_existing_directory_without_force(tmp_path, package_of):
    src = package_of("rmt-tiny").path
    with pytest.raises(PackageExistsError):
        export_preset("rmt-tiny", src, verify_segments=0)


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_failed_export_leaves_no_package_and_keeps_the_old_one(tmp_path, monkeypatch):
    out = tmp_path / "m.memx"
    first = export_preset("rmt-enc-tiny", out, verify_segments=0)
    before = (first.path / "memx.json").read_bytes()

    def boom(*args, **kwargs):
        raise ExportError("simulated failure in torch.onnx")

    monkeypatch.setattr(export_module, "_export_onnx", boom)
    with pytest.raises(ExportError, match="simulated"):
        export_preset("rmt-enc-tiny", out, seed=5, force=True, verify_segments=0)
    assert (out / "memx.json").read_bytes() == before, "the existing package must be untouched"
    with pytest.raises(ExportError):
        export_preset("rmt-enc-tiny", tmp_path / "new.memx", verify_segments=0)
    assert _listing(tmp_path) == ["m.memx"], "no staging directory or partial package may remain"


def test_export_fails_when_the_graph_disagrees_with_pytorch(tmp_path, monkeypatch):
    real_save = export_module.save_file

    def save_perturbed(tensors, path):  # reference weights no longer match the ONNX graph
        tensors = dict(tensors)
        tensors["head.bias"] = tensors["head.bias"] + 0.5
        real_save(tensors, path)

    monkeypatch.setattr(export_module, "save_file", save_perturbed)
    with pytest.raises(ExportError, match="does not match PyTorch"):
        export_preset("rmt-tiny", tmp_path / "bad.memx", verify_segments=4)
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_a_package(tmp_path):
    out = tmp_path / "m.memx"
    a = export_preset("memtr-static-tiny", out, seed=0, verify_segments=0)
    b = export_preset("memtr-static-tiny", out, seed=1, force=True, verify_segments=0)
    assert a.manifest.provenance["weights_sha256"] != b.manifest.provenance["weights_sha256"]
    assert Package.open(out, verify=True).manifest.provenance["weights_sha256"] == b.manifest.provenance["weights_sha256"]


def test_checkpoint_is_loaded_strictly(tmp_path):
    trained = build_preset("rmt-tiny", seed=3)
    ckpt = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(ckpt))
    pkg = export(build_preset("rmt-tiny"), tmp_path / "c.memx", preset="rmt-tiny", checkpoint=ckpt, verify_segments=4)
    assert pkg.manifest.provenance["weights_sha256"] == trained.weights_sha256()
    assert pkg.manifest.provenance["checkpoint_sha256"]

    bad = dict(trained.state_dict())
    bad["head.bias"] = torch.zeros(3)
    save_file({k: v.contiguous() for k, v in bad.items()}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match="head.bias"):
        export(build_preset("rmt-tiny"), tmp_path / "x.memx", checkpoint=tmp_path / "bad.safetensors")
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="safetensors"):
        export(build_preset("rmt-tiny"), tmp_path / "y.memx", checkpoint=tmp_path / "w.pt")
    assert not (tmp_path / "x.memx").exists() and not (tmp_path / "y.memx").exists()


def test_segment_len_limits_the_package(tmp_path):
    pkg = export_preset("rmt-tiny", tmp_path / "s.memx", segment_len=8, verify_segments=4)
    assert pkg.manifest.segment == {"min": 1, "max": 8}
    s = runtimes.open(pkg).stream()
    s.step([1] * 8)
    with pytest.raises(SegmentLengthError, match=r"1\.\.8"):
        s.step([1] * 9)
    with pytest.raises(ExportError, match="segment length"):
        export_preset("rmt-tiny", tmp_path / "t.memx", segment_len=1000)


def test_non_contract_module_is_refused(tmp_path):
    with pytest.raises(ContractError, match="SegmentModel"):
        export(torch.nn.Linear(2, 2), tmp_path / "x.memx")


@pytest.mark.parametrize("segment_len", [1, 2])
def test_token_by_token_packages(tmp_path, segment_len):
    """segment_len 1 (streaming one token at a time) has a static segment axis; 2 a dynamic one."""
    pkg = export_preset("rmt-tiny", tmp_path / "t.memx", segment_len=segment_len, verify_segments=0)
    assert pkg.manifest.graph("step").inputs[0].shape == ["batch", 1 if segment_len == 1 else "segment"]
    report = validate(pkg, segments=256, progress=False)
    assert report.passed, report.summary()


def test_top_level_api(tmp_path):
    import memx

    pkg = memx.export(build_preset("memtr-static-tiny"), tmp_path / "a.memx", verify_segments=0)
    assert memx.validate(pkg, segments=8, progress=False).passed
    assert memx.runtimes.open(pkg).stream().step([1, 2, 3])["logits"].shape == (3, 64)


def test_reference_rollouts_are_reused_with_the_same_verdicts(package_of, monkeypatch):
    """A second validation of the same model and streams takes the reference's run from the
    store: the torch reference is not opened again and the comparison is the same."""
    from memx.validation import ReferenceRollouts

    pkg = package_of("rmt-tiny")
    plain = validate(pkg, segments=24, seed=3, progress=False)
    rollouts = ReferenceRollouts()
    first = validate(pkg, segments=24, seed=3, progress=False, reference_rollouts=rollouts)
    assert len(rollouts) == 1 and first.per_tensor_max == plain.per_tensor_max and first.worst == plain.worst

    opened = []
    real_open = runtimes.open
    monkeypatch.setattr(runtimes, "open", lambda p, backend="onnxruntime", **kw: opened.append(backend) or real_open(p, backend=backend, **kw))
    again = validate(pkg, segments=24, seed=3, progress=False, reference_rollouts=rollouts)
    assert opened == ["onnxruntime"], "the reference must come from the store"
    assert again.per_tensor_max == plain.per_tensor_max and again.passed
    same_backend = validate(pkg, backend="torch", segments=24, seed=3, progress=False, reference_rollouts=rollouts)
    assert same_backend.max_error == 0.0  # torch against its own stored run: identical
    validate(pkg, segments=24, seed=4, progress=False, reference_rollouts=rollouts)  # other streams: a run of their own
    assert len(rollouts) == 2 and opened.count("torch") == 2
