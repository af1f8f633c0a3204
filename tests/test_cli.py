"""Every CLI command through Typer's runner, with its exit codes."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from memx.cli import app
from memx.exporter import Package
from memx.models import presets

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_help_lists_commands():
    r = invoke("--help")
    assert r.exit_code == 0
    for cmd in ("export", "validate", "inspect", "zoo", "quickstart", "quantize", "train"):
        assert cmd in r.output


def test_zoo_lists_every_preset():
    r = invoke("zoo")
    assert r.exit_code == 0
    data = json.loads(invoke("zoo", "--json").output)
    assert {p["preset"] for p in data["presets"]} == {p.name for p in presets()}
    assert {"rmt", "memtr", "gmat"} <= set(data["families"])
    assert {z["name"] for z in data["zoo"]} >= {"rmt-ar"} and all(z["available"] for z in data["zoo"])


def test_export_then_refuse_overwrite_then_force(tmp_path):
    out = tmp_path / "r.memx"
    r = invoke("export", "rmt-tiny", "--out", out, "--verify-segments", "4")
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and Package.open(out).manifest.family == "rmt"
    r = invoke("export", "rmt-tiny", "--out", out)
    assert r.exit_code == 2 and "already exists" in r.output
    r = invoke("export", "rmt-tiny", "--out", out, "--force", "--verify-segments", "0", "--seed", "3")
    assert r.exit_code == 0


def test_export_unknown_preset_and_bad_checkpoint(tmp_path):
    r = invoke("export", "gpt-5", "--out", tmp_path / "x.memx")
    assert r.exit_code == 2 and "unknown preset 'gpt-5'" in r.output and "rmt-tiny" in r.output
    (tmp_path / "w.bin").write_bytes(b"x")
    r = invoke("export", "rmt-tiny", "--out", tmp_path / "y.memx", "--checkpoint", tmp_path / "w.bin")
    assert r.exit_code == 2 and "safetensors" in r.output
    assert not (tmp_path / "x.memx").exists() and not (tmp_path / "y.memx").exists()


def test_validate_passes_and_records(private_copy, tmp_path):
    pkg = private_copy("rmt-tiny")
    report = tmp_path / "parity.json"
    r = invoke("validate", pkg, "--segments", "64", "--report", report)
    assert r.exit_code == 0, r.output
    assert "PASS" in r.output and "state.memory" in r.output
    assert json.loads(report.read_text())["passed"] is True
    recorded = Package.open(pkg).manifest.validation["onnxruntime:cpu"]
    assert recorded["segments"] == 64 and recorded["passed"] is True


def test_validate_fails_with_exit_1_and_names_the_first_bad_segment(private_copy):
    pkg = private_copy("memtr-tiny")
    weights = pkg / "reference/weights.safetensors"
    tensors = load_file(str(weights))
    tensors["head.bias"] = tensors["head.bias"] + 0.5  # same size, different numbers: only hashes notice
    save_file(tensors, str(weights))
    refused = invoke("validate", pkg, "--segments", "16", "--no-record")
    assert refused.exit_code == 2 and "does not match its hash" in " ".join(refused.output.split())  # the hash says so first
    r = invoke("validate", pkg, "--segments", "16", "--no-record", "--no-verify")  # and parity, asked to look
    assert r.exit_code == 1
    assert "FAIL" in r.output and "first segment over tolerance: 0" in r.output


def test_validate_unknown_backend_exits_2(private_copy):
    r = invoke("validate", private_copy("rmt-tiny"), "--backend", "nope", "--segments", "2")
    assert r.exit_code == 2 and "unknown backend 'nope'" in r.output


def test_inspect_tables_and_json(package_of, tmp_path):
    pkg = package_of("memctrl-tiny").path
    r = invoke("inspect", pkg)
    assert r.exit_code == 0
    assert "state_in.memory" in r.output and "MatMul" in r.output and "fp32" in r.output
    assert "[batch, 4, 32]" in r.output, "shapes must not be eaten as rich markup"
    info = json.loads(invoke("inspect", pkg, "--json", "--verify").output)
    assert info["state"][0]["shape"] == ["batch", 4, 32] and info["state_bytes_per_stream"] == 4 * 32 * 4
    assert info["graphs"][0]["custom_ops"] == []
    r = invoke("inspect", tmp_path / "missing.memx")
    assert r.exit_code == 2 and "not found" in r.output


def test_quickstart_small_run(tmp_path):
    out = tmp_path / "qs.memx"
    r = invoke("quickstart", "--preset", "rmt-tiny", "--out", out, "--segments", "16", "--demo-segments", "8")
    assert r.exit_code == 0, r.output
    assert "PASS" in r.output and "reproduces the state exactly" in r.output
    assert "memory[batch, 4, 32] float32" in r.output
    assert Package.open(out).manifest.validation["onnxruntime:cpu"]["passed"]


def test_default_quickstart(tmp_path):
    """What `make quickstart` runs: the default model, 256 segments of validation."""
    r = invoke("quickstart", "--out", tmp_path / "q.memx")
    assert r.exit_code == 0, r.output
    assert "PASS" in r.output
    assert "memory path intact (fp32)" in r.output.replace("\n", " ").replace("│", " ").replace("  ", " ")
    q = Package.open(tmp_path / "q-int8.memx").manifest
    assert q.precision == "int8-qdq" and q.quantization["calibration"]["source"].startswith("task")


def test_train_then_export_the_checkpoint(tmp_path):
    ckpt = tmp_path / "ar.safetensors"
    r = invoke("train", "associative-retrieval", "--preset", "rmt-tiny", "--steps", "4", "--batch", "8", "--eval-every", "2", "--out", ckpt)
    assert r.exit_code == 0, r.output
    assert "accuracy" in r.output and ckpt.exists() and (tmp_path / "ar.train.json").exists()
    r = invoke("export", "rmt-tiny", "--checkpoint", ckpt, "--out", tmp_path / "ar.memx", "--verify-segments", "4")
    assert r.exit_code == 0, r.output
    r = invoke("train", "sudoku", "--out", tmp_path / "x.safetensors")
    assert r.exit_code == 2 and "unknown task 'sudoku'" in r.output


def test_train_with_a_curriculum(tmp_path):
    ckpt = tmp_path / "copy.safetensors"
    common = ["copy-8", "--preset", "rmt-tiny", "--steps", "4", "--batch", "4", "--eval-every", "2", "--segment-len", "4", "--out", ckpt]
    r = invoke("train", *common, "--curriculum", "16,8", "--curriculum-threshold", "1.0")
    assert r.exit_code == 0, r.output
    record = json.loads((tmp_path / "copy.train.json").read_text())
    assert record["config"]["curriculum"] == [16, 8] and [h["segment_len"] for h in record["history"]] == [16, 16]
    assert "the curriculum stopped at segments of 16" in " ".join(r.output.split())
    r = invoke("train", *common, "--curriculum", "16;8")
    assert r.exit_code != 0 and "segment lengths separated by commas" in " ".join(r.output.split())


def test_train_memformer_with_mrbp_equals_bptt_and_exports_both_graphs(tmp_path):
    common = ["majority", "--family", "memformer", "--steps", "3", "--batch", "4", "--segment-len", "16", "--eval-every", "3", "--warmup", "2", "--schedule", "cosine"]
    r = invoke("train", *common, "--mrbp", "--out", tmp_path / "m.safetensors")
    assert r.exit_code == 0, r.output
    r = invoke("train", *common, "--out", tmp_path / "b.safetensors")
    assert r.exit_code == 0, r.output
    loss = lambda n: json.loads((tmp_path / f"{n}.train.json").read_text())["history"][-1]["loss"]  # noqa: E731
    assert loss("m") == pytest.approx(loss("b"), rel=1e-4)  # same gradients, same trajectory
    assert json.loads((tmp_path / "m.train.json").read_text())["config"]["mrbp"] is True
    r = invoke("export", "memformer-tiny", "--checkpoint", tmp_path / "m.safetensors", "--out", tmp_path / "m.memx", "--verify-segments", "8")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m.memx" / "encoder.onnx").is_file() and (tmp_path / "m.memx" / "decoder.onnx").is_file()
    r = invoke("train", "majority", "--schedule", "linear", "--out", tmp_path / "x.safetensors")
    assert r.exit_code == 2 and "unknown learning-rate schedule 'linear'" in r.output


def test_quantize_inspect_validate(package_of, tmp_path):
    out = tmp_path / "q.memx"
    r = invoke("quantize", package_of("memtr-majority").path, "--out", out, "--method", "int8-qdq", "--calib-segments", "16", "--calib-method", "entropy")
    assert r.exit_code == 0, r.output
    assert "int8-qdq" in r.output and "task majority" in r.output
    info = json.loads(invoke("inspect", out, "--json").output)
    assert info["precision"] == "int8-qdq" and info["quantization"]["memory_path_intact"] is True
    assert info["quantization"]["calibration"]["method"] == "entropy"
    assert "memory path intact" in invoke("inspect", out).output
    r = invoke("validate", out, "--segments", "30", "--report", tmp_path / "r.json")  # quantized: precision check against torch
    assert r.exit_code == 0, r.output
    assert "top-1 agreement" in r.output and "PASS" in r.output
    assert (out / "reports" / "precision-vs-torch.png").is_file()
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["state_rel_error"]["memory"]) == 30 and report["task_accuracy"]["segments"] >= 30
    assert "precision:precision-vs-torch" in Package.open(out).manifest.validation
    r = invoke("validate", out, "--segments", "30", "--max-accuracy-drop", "-200")  # an impossible gate fails with exit 1
    assert r.exit_code == 1 and "FAIL" in r.output


def test_quantize_errors_exit_2(package_of, tmp_path):
    src = package_of("memtr-majority").path
    bad = tmp_path / "bad.npy"
    import numpy as np

    np.save(bad, np.array([0, 1, 5000]))
    r = invoke("quantize", src, "--out", tmp_path / "q.memx", "--calib", bad)
    assert r.exit_code == 2 and "expected ids in 0..63, got ids in 0..5000" in r.output.replace("\n", " ")
    r = invoke("quantize", src, "--out", tmp_path / "q.memx", "--method", "int2")
    assert r.exit_code == 2 and "int8-qdq" in r.output
    r = invoke("quantize", src, "--out", tmp_path / "q.memx", "--calib", bad, "--task", "majority")
    assert r.exit_code == 2 and "not both" in r.output
    assert not (tmp_path / "q.memx").exists()


def test_quantize_from_a_token_file_with_fp16_state(package_of, tmp_path):
    import numpy as np

    tokens = tmp_path / "t.npz"
    np.savez(tokens, tokens=np.random.default_rng(0).integers(0, 64, (4, 2000)))
    out = tmp_path / "q.memx"
    r = invoke("quantize", package_of("memtr-majority").path, "--out", out, "--method", "fp16", "--state-precision", "fp16", "--calib", tokens)
    assert r.exit_code == 0, r.output
    m = Package.open(out).manifest
    assert m.precision == "fp16" and m.state[0].precision == "fp16" and m.quantization["calibration"] is None  # fp16 needs no calibration
    assert "rounded" in invoke("inspect", out).output


def test_profile_compares_the_graph_as_written_with_memx_graph_passes(package_of, tmp_path):
    r = invoke("profile", package_of("memtr-majority").path, "--compare", "onnxruntime,onnxruntime+fused", "--segments", "6", "--warmup", "1",
               "--report", tmp_path / "p.json")
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "p.json").read_text())
    unfused, fused = data["contenders"]
    assert fused["name"] == "onnxruntime+fused" and unfused["runtime"]["graph_passes"] == {}
    assert fused["runtime"]["graph_passes"]["step"]["attention"] >= 1


def test_profile_compare_writes_json_csv_html(package_of, tmp_path):
    r = invoke("profile", package_of("rmt-tiny").path, "--compare", "onnxruntime,onnxruntime:int8-dynamic", "--segments", "10", "--warmup", "2",
               "--batch", "2", "--report", tmp_path / "p.json", "--csv", tmp_path / "p.csv", "--html", tmp_path / "p.html")
    assert r.exit_code == 0, r.output
    assert "onnxruntime:int8-d" in r.output and "speed-up" in r.output
    data = json.loads((tmp_path / "p.json").read_text())
    assert [c["name"] for c in data["contenders"]] == ["onnxruntime", "onnxruntime:int8-dynamic"]
    assert data["contenders"][1]["precision"] == "int8-dynamic" and data["config"]["batch"] == 2
    assert (tmp_path / "p.csv").read_text().count("\n") == 3 and (tmp_path / "p.html").stat().st_size > 1000
    r = invoke("profile", package_of("rmt-tiny").path, "--backend", "onnx runtime")
    assert r.exit_code == 2 and "backend[:precision][@device]" in r.output


def test_the_cli_starts_without_importing_torch_or_onnx():
    """`memx --help`, `memx inspect`, `memx serve up` must not pay torch's import (about 3 s here)."""
    import subprocess
    import sys

    code = "import sys; from memx.cli import main; print(sorted(m for m in ('torch', 'onnx') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr
