"""Pool generation in C++ (libmemx's StreamPool through memx-run --generate --pool) against
Python's StreamPool: ragged prompts in chunks smaller than the pool draw the same tokens for
the same seed, greedy and sampled, with stop tokens ending streams at different times."""

from __future__ import annotations

import numpy as np
import pytest

from memx import runtimes
from tests.cpp.test_cpp_generation import CASES, SAMPLING, built  # noqa: F401  (built: a fixture)
from tests.cpp.test_cpp_parity import run_cpp

pytestmark = pytest.mark.cpp


def ragged_prompts(vocab: int, g: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(g + n)
    return [rng.integers(0, vocab, size=1 + (i * 5) % (3 * g)) for i in range(n)]


def padded(prompts: list[np.ndarray]) -> np.ndarray:
    """(B, T) with trailing -1s: memx-run --pool strips them."""
    out = np.full((len(prompts), max(len(p) for p in prompts)), -1, np.int64)
    for b, p in enumerate(prompts):
        out[b, : len(p)] = p
    return out


def python_pool(rt, prompts: list[np.ndarray], g: int, n: int, stops: list[int], seed: int, sampled: bool) -> np.ndarray:
    """Python's pool: [rounds, B] tokens, -1 after a stream stopped (memx-run's generated.npy)."""
    pool = rt.pool(max_batch=3)
    pool.segment_len = g
    ids = [pool.open() for _ in prompts]
    pool.append(dict(zip(ids, prompts)))
    rounds = list(pool.generate(ids, n, seed=seed, stop_tokens=stops, **(SAMPLING if sampled else {"temperature": 0})))
    return np.array([[r.get(sid, -1) for sid in ids] for r in rounds], np.int64).reshape(len(rounds), len(ids))


@pytest.mark.parametrize("name, g", [CASES[0], CASES[2], CASES[3]])
def test_cpp_pool_generates_the_tokens_python_pool_generates(name, g, built, package_of, tmp_path):  # noqa: F811
    pkg = package_of(name)
    rt = runtimes.open(pkg, backend="onnxruntime")
    prompts = ragged_prompts(rt.manifest.vocab_size, g, 10)
    np.save(tmp_path / "prompts.npy", padded(prompts))
    n, stops = 4 * g, [3, 17]
    finished = set()
    for sampled in (False, True):
        want = python_pool(rt, prompts, g, n, stops, 7, sampled)
        opts = ["--temperature", str(SAMPLING["temperature"]), "--top-k", str(SAMPLING["top_k"]), "--top-p", str(SAMPLING["top_p"])] if sampled else ["--temperature", "0"]
        stop_args = [a for t in stops for a in ("--stop-token", str(t))]
        proc = run_cpp(pkg.path, tmp_path / "prompts.npy", g, "--generate", str(n), "--pool", "3", "--seed", "7", "--out", str(tmp_path / "out"), *opts, *stop_args)
        assert proc.returncode == 0, proc.stderr
        got = np.load(tmp_path / "out" / "generated.npy")
        np.testing.assert_array_equal(got, want)
        finished |= {int((col >= 0).sum()) for col in got.T}
    assert len(finished) > 1, "every stream ran the same number of tokens: the stop tokens never fired"


@pytest.mark.parametrize("name, g", [CASES[0], CASES[2]])
def test_a_prompt_stepped_in_the_python_pool_continues_identically_in_cpp(name, g, built, package_of, tmp_path):  # noqa: F811
    """pool.step keeps the next-token logits as Stream.step does: a prompt stepped in Python's pool
    has the snapshot memx-run's stream has after stepping it, and after generating into a segment
    the pool's snapshot continues in C++ with the same tokens and the same snapshot bytes."""
    pkg = package_of(name)
    rt = runtimes.open(pkg, backend="onnxruntime")
    rng = np.random.default_rng(g)
    prompt, more = rng.integers(0, rt.manifest.vocab_size, size=(1, g)), rng.integers(0, rt.manifest.vocab_size, size=(1, 2))
    np.save(tmp_path / "prompt.npy", prompt)
    proc = run_cpp(pkg.path, tmp_path / "prompt.npy", g, "--snapshot-out", str(tmp_path / "cpp-step.snap"))  # memx-run steps it (no --generate)
    assert proc.returncode == 0, proc.stderr
    pool = rt.pool(max_batch=3)
    pool.segment_len = g
    sid = pool.open()
    pool.step({sid: prompt[0]})
    assert pool.snapshot(sid) == (tmp_path / "cpp-step.snap").read_bytes()
    list(pool.generate([sid], 3, seed=5, **SAMPLING))  # three tokens into the next segment
    assert pool.position(sid) == 3
    (tmp_path / "pool.snap").write_bytes(pool.snapshot(sid))

    np.save(tmp_path / "more.npy", more)
    n = 2 * g
    proc = run_cpp(pkg.path, tmp_path / "more.npy", g, "--generate", str(n), "--seed", "8", "--out", str(tmp_path / "out"), "--snapshot-in", str(tmp_path / "pool.snap"),
                   "--snapshot-out", str(tmp_path / "cpp.snap"), *[a for k, val in SAMPLING.items() for a in (f"--{k.replace('_', '-')}", str(val))])
    assert proc.returncode == 0, proc.stderr
    pool.append({sid: more[0]})
    want = [r[sid] for r in pool.generate([sid], n, seed=8, **SAMPLING)]
    assert np.load(tmp_path / "out" / "generated.npy")[:, 0].tolist() == want
    assert (tmp_path / "cpp.snap").read_bytes() == pool.snapshot(sid)
