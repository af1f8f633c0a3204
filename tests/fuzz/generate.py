"""Generators and bookkeeping for the fuzz suite (issue 17): seeded mutations of bytes and of
JSON documents, values on the edges of what a field may hold, a per-case time bound, and the
tallies ``make fuzz`` prints (build/fuzz/<family>.json).

    MEMX_FUZZ_SCALE   multiplies every family's case count (default 1: CI; `make fuzz`: 20)
    MEMX_FUZZ_SEED    the seed (default 1); a failure names the case index to replay it

The C++ twin of these mutations is cpp/runtime/tests/test_fuzz.cc.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from memx.errors import MemxError

ROOT = Path(__file__).resolve().parents[2]
HANG_SECONDS = 20.0  # a case this slow counts as a hang (cases take milliseconds)


def scale() -> int:
    return max(1, int(os.environ.get("MEMX_FUZZ_SCALE", "1")))


def seed() -> int:
    return int(os.environ.get("MEMX_FUZZ_SEED", "1"))


def cases(n: int) -> int:
    """``n`` cases in CI, ``n * MEMX_FUZZ_SCALE`` under ``make fuzz``."""
    return n * scale()


class Hang(Exception):
    """A case ran past HANG_SECONDS."""


@contextlib.contextmanager
def time_bound(seconds: float = HANG_SECONDS) -> Iterator[None]:
    """Raise Hang in this (main) thread when the block runs longer than ``seconds``."""
    def on_alarm(signum: int, frame: Any) -> None:
        raise Hang(f"a case ran past {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Tally:
    """One family's counts: every case is a typed refusal, an accepted input, or a failure
    (a crash, a hang, a non-memx exception, an accepted mutation that changed numbers)."""

    family: str
    cases: int = 0
    refused: int = 0
    accepted: int = 0
    failures: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # memx error type -> count

    def run(self, index: int, fn: Callable[[], Any]) -> str:
        """Run one case; its verdict: "ok" or the memx error's type name (failures are recorded)."""
        self.cases += 1
        t0 = time.monotonic()
        try:
            with time_bound():
                fn()
        except MemxError as e:
            self.refused += 1
            name = type(e).__name__
            self.errors[name] = self.errors.get(name, 0) + 1
            return name
        except Hang as e:
            self.failures.append(f"case {index}: hang ({e})")
            return "hang"
        except Exception as e:  # noqa: BLE001  (what the suite is looking for)
            self.failures.append(f"case {index}: {type(e).__name__}: {e}"[:300])
            return f"not a memx error: {type(e).__name__}"
        finally:
            if time.monotonic() - t0 > HANG_SECONDS:
                self.failures.append(f"case {index}: took {time.monotonic() - t0:.1f} s")
        self.accepted += 1
        return "ok"

    def fail(self, index: int, why: str) -> None:
        self.failures.append(f"case {index}: {why}"[:300])

    def save(self) -> None:
        out = ROOT / "build" / "fuzz"
        out.mkdir(parents=True, exist_ok=True)
        slug = "".join(c if c.isalnum() else "-" for c in self.family.lower()).strip("-")
        (out / f"{slug}.json").write_text(json.dumps({**asdict(self), "failures": self.failures[:20], "failure_count": len(self.failures)}, indent=1))

    def check(self) -> None:
        """Save the tally and fail the test on any failure (the first few named)."""
        self.save()
        print(f"fuzz {self.family}: {self.cases} cases, {self.refused} typed refusals, {self.accepted} accepted")
        assert not self.failures, f"{len(self.failures)} of {self.cases} {self.family} cases failed:\n" + "\n".join(self.failures[:10])


# -- mutations (the same kinds as test_fuzz.cc's) ------------------------------------------------

INTERESTING_BYTES = b'\x00\xff\x7f\x80"{}[],:-9\\e.'


def mutate_bytes(rng: random.Random, blob: bytes) -> bytes:
    """1-4 edits: a bit flipped, a byte set, bytes inserted, a range erased, a cut, a range copied, four bytes 00/FF."""
    b = bytearray(blob)
    for _ in range(rng.randint(1, 4)):
        n = len(b)
        at = rng.randrange(n) if n else 0
        op = rng.randrange(7)
        if op == 0 and n:
            b[at] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            b[at] = rng.choice(INTERESTING_BYTES)
        elif op == 2:
            b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and n:
            del b[at : at + rng.randint(1, 16)]
        elif op == 4:
            del b[at:]
        elif op == 5 and n:
            piece = b[at : at + rng.randint(1, 32)]
            where = rng.randrange(n + 1)
            b[where:where] = piece
        elif n >= 4:
            start = min(at, n - 4)
            b[start : start + 4] = b"\xff" * 4 if rng.random() < 0.5 else bytes(4)
    return bytes(b)


TRICKY: list[Any] = [
    -1, 0, 1, 2, 7, 255, 65536, 65537, 1 << 31, (1 << 32) + 1, (1 << 53) + 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, 1 << 64, -(1 << 63),
    0.5, 7.0, -0.0, 1e300, True, False, None, "", "x", "float32", "<f4", "|b1", "segment", "batch", "step", "\u00e9", "\ud800",
    [], [1], ["no"], [True, False], {}, {"a": 1},
]


def tricky(rng: random.Random) -> Any:
    return copy.deepcopy(rng.choice(TRICKY))


def _paths(node: Any, at: tuple = ()) -> Iterator[tuple]:
    yield at
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*at, i))


def mutate_json(rng: random.Random, doc: Any) -> Any:
    """1-3 structural edits: a node replaced by an edge value, deleted, or given a sibling/child."""
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(list(_paths(doc)))
        if not path:
            doc = tricky(rng)
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        node = parent[path[-1]]
        op = rng.randrange(4)
        if op == 1:
            del parent[path[-1]]
        elif op == 2 and isinstance(node, dict):
            node[f"fuzz_{rng.randrange(4)}"] = tricky(rng)
        elif op == 2 and isinstance(node, list):
            node.append(copy.deepcopy(rng.choice(node)) if node else tricky(rng))
        else:
            parent[path[-1]] = tricky(rng)
    return doc
