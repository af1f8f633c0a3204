"""Fuzzing packages (issue 17): a copy of a real package with one of its files altered, edited,
cut, removed, replaced by a link, a directory or a FIFO, or joined by a stray file, opened the
default way and stepped over a few segments. Each case is a typed memx refusal, or it runs and
gives exactly the numbers the unaltered package gives: no accepted mutation changes a number."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np

from memx import runtimes
from tests.fuzz.generate import Tally, cases, mutate_bytes, mutate_json, seed

SEGMENTS = 3


def rollout(path: Path, tokens: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs and final state of SEGMENTS steps of a fresh stream, stacked."""
    stream = runtimes.open(path).stream(tokens.shape[0])
    outs = [stream.step(tokens[:, i]) for i in range(SEGMENTS)]
    return {**{k: np.stack([o[k] for o in outs]) for k in outs[0]}, **{f"state.{k}": v for k, v in stream.state.items()}}


def mutate_package(rng: random.Random, root: Path, pristine: dict[str, bytes]) -> str:
    """Apply one mutation to the package at ``root``; says which (for the failure message)."""
    name = rng.choice(sorted(pristine))
    target = root / name
    op = rng.randrange(10)
    if name == "memx.json" and op < 5:
        doc = json.loads(pristine[name])
        target.write_text(json.dumps(mutate_json(rng, doc)))
        return "memx.json edited"
    if op < 5:
        target.write_bytes(mutate_bytes(rng, pristine[name]))
        return f"{name} bytes altered"
    if op == 5:
        target.unlink()
        return f"{name} removed"
    if op == 6:
        target.unlink()
        target.symlink_to(rng.choice(["/etc/hostname", "nowhere", name, "../outside"]))
        return f"{name} replaced by a link"
    if op == 7:
        target.unlink()
        (target.mkdir() if rng.random() < 0.5 else os.mkfifo(target))
        return f"{name} replaced by a directory or FIFO"
    if op == 8:
        target.write_bytes(pristine[name][: rng.randrange(max(1, len(pristine[name])))])
        return f"{name} cut"
    (root / rng.choice(["extra.onnx", "step.onnx.data", "weights.bin", ".hidden"])).write_bytes(os.urandom(64))
    return "a stray file added"


def restore_package(root: Path, pristine: dict[str, bytes], dirs: set[str]) -> None:
    """Put the package back as it was: its files' bytes, its directories, nothing else."""
    for path in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() or (rel not in pristine and rel not in dirs) or (rel in pristine and not path.is_file()):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    for rel, data in pristine.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if not p.exists() or p.read_bytes() != data:
            p.write_bytes(data)


def test_no_accepted_package_mutation_changes_a_number(tmp_path, package_of):
    root = tmp_path / "pkg"
    shutil.copytree(package_of("rmt-tiny").path, root)
    pristine = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    dirs = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir()}
    assert "memx.json" in pristine and len(pristine) >= 2, sorted(pristine)
    manifest = json.loads(pristine["memx.json"])
    tokens = np.random.default_rng(seed()).integers(0, manifest["vocab_size"], size=(2, SEGMENTS, 8))
    want = rollout(root, tokens)
    rng = random.Random(seed() * 31 + 3)
    tally = Tally("package mutations (Python)")
    for index in range(cases(600)):
        what = mutate_package(rng, root, pristine)
        got: list[dict[str, np.ndarray]] = []
        tally.run(index, lambda: got.append(rollout(root, tokens)))
        if got and (set(got[0]) != set(want) or any(not np.array_equal(got[0][k], want[k]) for k in want)):
            tally.fail(index, f"{what}: accepted, and the numbers changed")
        restore_package(root, pristine, dirs)
    tally.check()
