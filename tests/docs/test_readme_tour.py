"""README.md's code blocks, run in order in an empty directory as a reader would run them: every
command must succeed using only files that earlier blocks made. Lengths are cut (segments,
steps) so the tour fits CI; what cannot run here is listed with its reason.

    python -m tests.docs.test_readme_tour          # print the commands as the test runs them
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MEMX_RUN = ROOT / "build" / "cpp" / "memx-run"

# Lines not run, by their start, with the reason.
NOT_RUN = {
    "make quickstart": "the README's own first command: make quickstart runs it in CI",
    "make test": "this test is part of make test",
    "make ops": "built by make install before pytest (tests/ops checks it)",
    "make cpp-aarch64": "make test's aarch64 chain builds it and runs tests/edge under qemu",
    "make cpp": "built by make test's cpp phase before pytest",
    "memx serve up": "serves until Ctrl-C; tests/serving starts and stops the server",
    "python benchmarks/": "benchmarks take minutes; make bench runs them",
}

# Shorter runs of the same commands: (pattern, replacement) applied to every command line.
SHORTER = [
    (r"--segments \d+", "--segments 12"),
    (r"--steps \d+", "--steps 30"),
    (r"--calib-segments \d+", "--calib-segments 8"),
    (r"--history [\w,]+", "--history 64,128"),
    (r"--max-new-tokens \d+", "--max-new-tokens 8"),
    (r"--generate \d+", "--generate 8"),
    (r"--batch 1,4,8", "--batch 1,1,2"),
    (r"100_000", "5_000"),
    (r"^memx bundle (\S+)", r"memx bundle \1 --no-prebuilt"),  # the aarch64 chain may be rebuilding build/aarch64 meanwhile
]
# Options added where a command does not give them (the default is long).
DEFAULTS = {
    "memx validate": "--segments 12 --decode-segments 4",
    "memx export": "--verify-segments 4",
    "memx train": "--steps 30 --eval-every 15 --batch 8",
    "memx profile": "--segments 12 --warmup 2",
    "memx quantize": "--calib-segments 8 --calib-horizon 16",
}


@dataclass
class Block:
    language: str
    text: str
    line: int  # 1-based line of the fence in README.md
    note: str  # the <!-- tour: ... --> comment right before it, if any


def readme_blocks(text: str) -> list[Block]:
    """Fenced bash/python blocks in order, with the tour comment before each."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = re.match(r"^```(bash|python)\s*$", lines[i])
        if fence:
            start = i
            body = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            prev = lines[start - 1] if start else ""
            note = m.group(1).strip() if (m := re.match(r"^<!--\s*tour:(.*)-->\s*$", prev)) else ""
            blocks.append(Block(fence.group(1), "\n".join(body), start + 1, note))
        i += 1
    return blocks


def tour_command(line: str) -> tuple[str | None, str]:
    """(the command to run, or None) and why not, for one bash line of the README."""
    code = line.strip()
    if not code or code.startswith("#"):
        return None, "comment"
    for start, why in NOT_RUN.items():
        if code.startswith(start):
            return None, why
    for pattern, repl in SHORTER:
        code = re.sub(pattern, repl, code)
    for start, options in DEFAULTS.items():
        if code.startswith(start + " "):
            command, hash_, comment = code.partition("  #")
            given = {o.split()[0] for o in re.findall(r"--[\w-]+", command)}
            extra = " ".join(o for o in re.findall(r"--[\w-]+ \S+", options) if o.split()[0] not in given)
            code = f"{command.rstrip()} {extra}{hash_}{comment}".rstrip()
    if code.startswith("build/cpp/memx-run"):
        code = str(MEMX_RUN) + code[len("build/cpp/memx-run"):]
    return code, ""


def tour_steps(text: str) -> list[tuple[Block, str]]:
    """What runs, in order: ('bash', command) per line, or ('python', program) per block (each
    program has the earlier python blocks before it, as in one interactive session)."""
    steps, python_so_far = [], []
    for block in readme_blocks(text):
        if block.note.startswith("sketch") or block.note.startswith("skip"):
            continue
        if block.language == "python":
            python_so_far.append(block.text)
            steps.append((block, "\n".join(python_so_far)))
            continue
        for line in block.text.splitlines():
            command, _ = tour_command(line)
            if command:
                steps.append((block, command))
    return steps


def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "MEMX_TEST_THREADS": "1", "COLUMNS": "160"}


def test_every_readme_block_is_run_or_says_why_not():
    blocks = readme_blocks(README.read_text())
    assert len(blocks) >= 10
    for block in blocks:
        if block.language == "bash":
            for line in block.text.splitlines():
                command, why = tour_command(line)
                assert command or why, f"README.md:{block.line}: {line!r} neither runs nor says why"
        elif block.note:
            assert block.note.split()[0] in ("sketch", "skip"), f"README.md:{block.line}: unknown tour note {block.note!r}"


def test_the_readme_tour_runs_in_order_in_an_empty_directory(tmp_path):
    if not MEMX_RUN.is_file():
        pytest.skip(f"needs memx-run ({MEMX_RUN}: make cpp)")
    env = _env()
    for block, step in tour_steps(README.read_text()):
        if block.language == "python":
            done = subprocess.run([sys.executable, "-c", step], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        else:
            done = subprocess.run(["bash", "-c", step], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"README.md:{block.line}: {step}\nexit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


if __name__ == "__main__":
    for block, step in tour_steps(README.read_text()):
        print(f"# README.md:{block.line}\n{step}\n")
