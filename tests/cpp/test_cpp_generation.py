"""Generation in C++ (libmemx through memx-run --generate) against Python: the same tokens for
the same seed, greedy and sampled, one row and several; a snapshot taken in the middle of a
segment in Python continues identically in C++, and C++'s snapshot (byte-identical to
Python's) continues identically in Python."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from memx import runtimes
from tests.cpp.test_cpp_parity import memx_run, run_cpp

pytestmark = pytest.mark.cpp

CASES = [("rmt-tiny", 8), ("gmat-causal-tiny", 8), ("kvcache-tiny", 6), ("infformer-tiny", 8), ("rmt-ar", 8), ("infformer-sort", 16)]
SAMPLING = {"temperature": 0.9, "top_k": 12, "top_p": 0.95}


@pytest.fixture(scope="module")
def built():
    if not memx_run().is_file():
        pytest.skip(f"needs memx-run ({memx_run()} not built: run `make cpp`)")
    return memx_run()


def cpp_generate(pkg, tmp_path, prompt: np.ndarray, n: int, g: int, *extra: str, sampled: bool = True, seed: int = 3) -> tuple[np.ndarray, subprocess.CompletedProcess]:
    np.save(tmp_path / "prompt.npy", prompt)
    out = tmp_path / "out"
    opts = ["--temperature", str(SAMPLING["temperature"]), "--top-k", str(SAMPLING["top_k"]), "--top-p", str(SAMPLING["top_p"])] if sampled else ["--temperature", "0"]
    proc = run_cpp(pkg.path, tmp_path / "prompt.npy", g, "--generate", str(n), "--seed", str(seed), "--out", str(out), *opts, *extra)
    assert proc.returncode == 0, proc.stderr
    return np.load(out / "generated.npy"), proc


def py_stream(rt, batch: int, g: int):
    s = rt.stream(batch)
    s.segment_len = g
    return s


@pytest.mark.parametrize("name, g", CASES)
def test_cpp_generates_the_tokens_python_generates(name, g, built, package_of, tmp_path):
    pkg = package_of(name)
    rt = runtimes.open(pkg, backend="onnxruntime")
    v = rt.manifest.vocab_size
    prompt = np.random.default_rng(len(name)).integers(0, v, size=(2, 2 * g + 3), dtype=np.int64)
    for sampled in (False, True):
        got, _ = cpp_generate(pkg, tmp_path, prompt, 6 * g, g, sampled=sampled)  # [N, 2]
        s = py_stream(rt, 2, g)
        s.append(prompt)
        want = np.stack(list(s.generate(6 * g, seed=3, **(SAMPLING if sampled else {"temperature": 0}))))
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name, g", [CASES[0], CASES[3]])
def test_a_mid_segment_snapshot_crosses_languages_both_ways(name, g, built, package_of, tmp_path):
    pkg = package_of(name)
    rt = runtimes.open(pkg, backend="onnxruntime")
    v = rt.manifest.vocab_size
    rng = np.random.default_rng(9)
    first, second = rng.integers(0, v, size=g + 3), rng.integers(0, v, size=4)  # the snapshot is taken 3 tokens into a segment
    s = py_stream(rt, 1, g)
    s.append(first)
    assert s.position[0] == 3
    (tmp_path / "py.snap").write_bytes(s.snapshot())
    s.append(second)
    want = list(s.generate(5 * g, seed=21, **SAMPLING))
    after = s.snapshot()

    # Python -> C++: restore, append the rest of the prompt, generate: the same tokens, the same snapshot bytes
    got, _ = cpp_generate(pkg, tmp_path, second[None, :], 5 * g, g, "--snapshot-in", str(tmp_path / "py.snap"), "--snapshot-out", str(tmp_path / "cpp.snap"), seed=21)
    assert got[:, 0].tolist() == want
    cpp_after = (tmp_path / "cpp.snap").read_bytes()
    assert cpp_after == after, "C++ and Python snapshots of the same generating stream differ"

    # C++ -> Python: memx-run's snapshot (mid-segment) continues identically in Python
    r = py_stream(rt, 1, g)
    r.restore(cpp_after)
    assert r.position[0] == s.position[0] and r.segments == s.segments
    assert list(r.generate(2 * g, seed=5, **SAMPLING)) == list(s.generate(2 * g, seed=5, **SAMPLING))


def test_memx_run_generate_refuses_bad_requests(built, package_of, tmp_path):
    pkg = package_of("memtr-tiny")  # not causal: no decode graphs
    np.save(tmp_path / "p.npy", np.array([1, 2, 3], dtype=np.int64))
    proc = run_cpp(pkg.path, tmp_path / "p.npy", 4, "--generate", "3")
    assert proc.returncode == 1 and "has no decode graphs" in proc.stderr
    pkg = package_of("rmt-tiny")
    proc = run_cpp(pkg.path, tmp_path / "p.npy", 4, "--generate", "3", "--top-p", "0")
    assert proc.returncode == 1 and "top_p must be in (0, 1]" in proc.stderr
    proc = run_cpp(pkg.path, tmp_path / "p.npy", 4, "--generate", "3", "--stop-token", str(pkg.manifest.vocab_size))
    assert proc.returncode == 1 and "stop token outside the vocabulary" in proc.stderr
    proc = run_cpp(pkg.path, tmp_path / "p.npy", pkg.manifest.segment["max"] + 1, "--generate", "3")
    assert proc.returncode == 1 and "generation segment length out of range" in proc.stderr
    np.save(tmp_path / "big.npy", np.array([1, pkg.manifest.vocab_size], dtype=np.int64))
    proc = run_cpp(pkg.path, tmp_path / "big.npy", 4, "--generate", "3")
    assert proc.returncode == 1 and "token id outside the vocabulary" in proc.stderr


@pytest.mark.parametrize("name", ["rmt-copy", "rmt-reverse"])
def test_cpp_answers_the_generative_zoo_tasks(name, built, package_of, tmp_path):
    """memx-run generates the copied (reversed) symbols of 32 held-out items, greedy, memory
    written every segment: the tokens Python generates, and the right answers."""
    from memx.training.tasks import get_task, prompt_and_answer
    from memx.validation.accuracy import runtime_generation_accuracy
    from memx.zoo import get_zoo

    entry, items = get_zoo(name), 32
    pkg = package_of(name)
    episode = get_task(entry.task).make(np.random.default_rng([12345, 0]), items, entry.segment_len)
    prompts = np.stack([prompt_and_answer(episode, r)[0] for r in range(items)])  # (32, 9): 8 symbols, SEP
    answers = np.stack([prompt_and_answer(episode, r)[1] for r in range(items)])  # (32, 8)
    got, _ = cpp_generate(pkg, tmp_path, prompts, answers.shape[1], entry.segment_len, sampled=False)  # (8, 32)
    python = runtime_generation_accuracy(runtimes.open(pkg, backend="onnxruntime"), entry.task, items=items, batch=items, segment_len=entry.segment_len)
    np.testing.assert_array_equal(got.T, python.predictions)
    assert (got.T == answers).all(axis=1).mean() >= 0.95
