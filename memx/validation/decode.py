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
    top1_agreement: float  # share of tokens whose decoded argmax equals the step's
    gate: str  # "atol": logits and state within atol (fp32); "top1": state within atol, top-1 agreement >= min_top1 (quantized)
    min_top1: float
    exact_share: float = 0.0  # share of (token, row) logits equal to the step's bit for bit

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        gate = f"atol {self.atol:g}" if self.gate == "atol" else f"quantized: state within atol {self.atol:g}, top-1 agreement at least {self.min_top1:.0%}"
        return (f"decode parity {verdict}: token by token vs whole steps over {self.segments} segments of {self.segment_len} x {self.batch} streams, "
                f"max logits error {self.max_logits_error:.3g}, bit-identical logits {self.exact_share:.2%}, top-1 agreement {self.top1_agreement:.2%}, max state error {self.max_state_error:.3g} "
                f"({gate}; worst at segment {self.worst_segment})")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_decode(package: str | os.PathLike | Package, *, backend: str = "onnxruntime", segments: int = 64, batch: int = 4, segment_len: int | None = None,
                 atol: float = 1e-4, min_top1: float = 0.98, seed: int = 0, backend_options: dict[str, Any] | None = None) -> DecodeReport:
    """Append ``segments`` segments token by token to ``batch`` streams and step the same segments
    whole on a second stream; every token's logits and every segment's state must agree: within
    ``atol`` for fp32 packages; for quantized ones the state within ``atol`` (the step graph writes
    it in both) and the decoded argmax equal to the step's for ``min_top1`` of the tokens (memx
    quantize gives both graphs one scale per weight, so int8-qdq decodes exactly but for rare
    one-step flips where a float sum computed in another order lands on the other side of an
    int8 rounding boundary; int8-dynamic
    scales activations per call and fp16 rounds in a different order, so they differ a little:
    about 1% of random-token argmaxes flip under int8-dynamic on the zoo models)."""
    from memx import runtimes
    from memx.runtimes.generation import check_segment_len, decode_info

    options = dict(backend_options or {})
    if backend == "onnxruntime" and not {"intra_op_threads", "session_options", "providers"} & options.keys():
        options["intra_op_threads"] = 1  # a token per call: a thread pool's hand-offs and spinning cost more than it splits (2-3x on 2 cores)
    rt = runtimes.open(package, backend=backend, **options)
    g = check_segment_len(segment_len, decode_info(rt.manifest))
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, rt.manifest.vocab_size, size=(batch, segments * g), dtype=np.int64)
    decoded, stepped = rt.stream(batch), rt.stream(batch)
    decoded.segment_len = g
    worst = (0.0, 0.0, 0)  # logits error, state error, segment
    agree = exact = 0
    for k in range(segments):
        logits = stepped.step(tokens[:, k * g : (k + 1) * g])["logits"]  # (B, g, V)
        err = 0.0
        for i in range(g):
            decoded.append(tokens[:, k * g + i : k * g + i + 1])
            got = decoded.next_logits().reshape(batch, -1)  # (B, V)
            err = max(err, float(np.abs(got - logits[:, i]).max()))
            exact += int((got == logits[:, i]).all(axis=-1).sum())
            agree += int((got.argmax(-1) == logits[:, i].argmax(-1)).sum())
        state_err = max((float(np.abs(decoded.state[n].astype(np.float64) - v.astype(np.float64)).max()) for n, v in stepped.state.items()), default=0.0)
        if max(err, state_err) >= max(worst[0], worst[1]):
            worst = (max(worst[0], err), max(worst[1], state_err), k)
        else:
            worst = (max(worst[0], err), max(worst[1], state_err), worst[2])
    top1 = agree / (segments * g * batch)
    gate = "atol" if rt.manifest.precision == "fp32" else "top1"
    passed = worst[1] <= atol and (worst[0] <= atol if gate == "atol" else top1 >= min_top1)
    return DecodeReport(passed=passed, segments=segments, batch=batch, segment_len=g, atol=atol, max_logits_error=worst[0], max_state_error=worst[1],
                        worst_segment=worst[2], top1_agreement=top1, gate=gate, min_top1=min_top1,
                        exact_share=exact / (segments * g * batch))
