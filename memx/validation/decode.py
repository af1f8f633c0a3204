"""Decode parity (`memx validate` on a package with decode graphs): tokens appended one at a
time through the decode graphs, the memory written at each full segment, against stepping the
same whole segments through the step graphs: the logits of every token and the state after
every segment, over a long stream (memx.runtimes.generation)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from memx.package.files import Package


@dataclass
class DecodeReport:
    passed: bool
    segments: int
    batch: int
    segment_len: int
    atol: float
    max_logits_error: float
    max_state_error: float
    worst_segment: int

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (f"decode parity {verdict}: token by token vs whole steps over {self.segments} segments of {self.segment_len} x {self.batch} streams, "
                f"max logits error {self.max_logits_error:.3g}, max state error {self.max_state_error:.3g} (atol {self.atol:g}; worst at segment {self.worst_segment})")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_decode(package: str | os.PathLike | Package, *, backend: str = "onnxruntime", segments: int = 64, batch: int = 4, segment_len: int | None = None,
                 atol: float = 1e-4, seed: int = 0, backend_options: dict[str, Any] | None = None) -> DecodeReport:
    """Append ``segments`` segments token by token to ``batch`` streams and step the same segments
    whole on a second stream; every token's logits and every segment's state must agree."""
    from memx import runtimes
    from memx.runtimes.generation import check_segment_len, decode_info

    rt = runtimes.open(package, backend=backend, **(backend_options or {}))
    g = check_segment_len(segment_len, decode_info(rt.manifest))
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, rt.manifest.vocab_size, size=(batch, segments * g), dtype=np.int64)
    decoded, stepped = rt.stream(batch), rt.stream(batch)
    decoded.segment_len = g
    worst = (0.0, 0.0, 0)  # logits error, state error, segment
    for k in range(segments):
        logits = stepped.step(tokens[:, k * g : (k + 1) * g])["logits"]  # (B, g, V)
        err = 0.0
        for i in range(g):
            decoded.append(tokens[:, k * g + i : k * g + i + 1])
            err = max(err, float(np.abs(decoded.next_logits().reshape(batch, -1) - logits[:, i]).max()))
        state_err = max((float(np.abs(decoded.state[n].astype(np.float64) - v.astype(np.float64)).max()) for n, v in stepped.state.items()), default=0.0)
        if max(err, state_err) >= max(worst[0], worst[1]):
            worst = (max(worst[0], err), max(worst[1], state_err), k)
        else:
            worst = (max(worst[0], err), max(worst[1], state_err), worst[2])
    return DecodeReport(passed=worst[0] <= atol and worst[1] <= atol, segments=segments, batch=batch, segment_len=g, atol=atol,
                        max_logits_error=worst[0], max_state_error=worst[1], worst_segment=worst[2])
