"""Measure every zoo model and write docs/zoo.md: `python -m memx.zoo.report [OUT.md]`.

Accuracy is over 1000 held-out episodes, streamed segment by segment through the PyTorch
reference, through ONNX Runtime (fp32) from the exported package and through its int8-qdq
quantization; for causal models answering after SEP, also generated token by token through
ONNX Runtime's decode graphs (free running). The diagnosis of the RMT plateau and the paper
comparison are part of the page (``DIAGNOSIS``).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from memx import runtimes
from memx.exporter import export_preset
from memx.training.tasks import answers_after_sep, get_task
from memx.validation.accuracy import runtime_generation_accuracy, runtime_task_accuracy
from memx.zoo import DEFAULT_MODEL, zoo_entries

ITEMS = 1000


def answers_by_generation(entry, pkg) -> bool:
    """Whether the task is generative for this package: causal, with decode graphs, answering after SEP."""
    return pkg.manifest.causal and pkg.manifest.decode is not None and answers_after_sep(entry.task)


def measure_entry(e, tmp: Path) -> dict:
    from memx.calibration import quantize_package

    pkg = export_preset(e.name, tmp / f"{e.name}.memx", verify_segments=16)
    score = lambda rt: runtime_task_accuracy(rt, e.task, items=ITEMS, segment_len=e.segment_len)  # noqa: E731
    ref, ort = score(runtimes.open(pkg, backend="torch")), score(runtimes.open(pkg, backend="onnxruntime"))
    int8 = score(runtimes.open(quantize_package(pkg, tmp / f"{e.name}-int8.memx", method="int8-qdq", progress=False).package))
    generated = None
    if answers_by_generation(e, pkg):
        generated = e.score(runtime_generation_accuracy(runtimes.open(pkg, backend="onnxruntime"), e.task, items=ITEMS, segment_len=e.segment_len))
    record = e.checkpoint.with_suffix(".train.json")
    history = json.loads(record.read_text())["history"] if record.exists() else []
    return {"entry": e, "torch": e.score(ref), "ort": e.score(ort), "int8": e.score(int8), "generated": generated,
            "torch_items": ref.accuracy, "torch_tokens": ref.token_accuracy, "same": float((ref.predictions == ort.predictions).all(axis=1).mean()),
            "size": e.checkpoint.stat().st_size, "history": history, "segments": get_task(e.task).make(np.random.default_rng(0), 1, e.segment_len).n_segments}


def measure() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        return [measure_entry(e, Path(tmp)) for e in zoo_entries()]


PAPER_RUNS = """\
The paper's own copy configuration (24 symbols copied twice, 9 segments of 8, memory 8) was
tried with the curriculum (segments of 72, 36, 24, 16, then 8): RMT (2 layers, d=64) was still
in the 2-segment stage after 8,000 steps (94% of answer tokens, no item fully right) and the
Memory Transformer reached the 3-segment stage after 6,000 steps; at 10 minutes per such run on
this CPU the zoo uses the shorter sources above.
"""


DIAGNOSIS = """\
## Why the RMT zoo model plateaued, and what fixed it

Until December 2026 `rmt-ar` answered 35.6% of associative-retrieval items (chance 10%), after
runs of 5k-12.5k steps, 4 layers or wider models, warm-up and cosine decay, and the same model
with the whole episode in one segment plateaued too. 35% is the "answer with a value from the
prompt" plateau: guessing among the prompt's 4 values scores 32.5%, its most frequent value 38.5%;
at the plateau, layer-1 heads at the answer position put 0.92-0.96 of their attention on the 4
values and none on the keys. The attention masks, the loss mask, padding lengths and the
evaluation seeding were checked and were right. What was wrong (all runs d=64, batch 32, AdamW
1e-3, one thread):

1. **The answer format.** The task wrote `k1 v1 ... k4 v4 QUERY key SEP` and scored the value at
   SEP: an extra hop (SEP must first find the key before it, then the matching key, then the value
   after it). A plain causal `torch.nn` transformer in that format also stayed at 36.7% after 20k
   steps; scoring the value at the queried key's own position (the multi-query associative recall
   format, one hop) it reaches 100% by step 1,000 on 3 of 3 seeds. The task now scores the value at
   the key (`memx/training/tasks.py`); with segments of 8 the layout is otherwise unchanged.
2. **Initialisation too small at this width.** memx's GPT-2 style N(0, 0.02) weights give
   attention-score spreads of 0.026 at d=64 (about 0.9 with std d^-1/2), and Adam then collapsed the
   key embeddings onto each other (mean cosine 0.014 -> 0.53 by step 1,000). RMT now initialises
   Linear weights with std d^-1/2 and token embeddings with std 1 (`width_aware_init` in
   `memx/models/layers.py`). One segment, 1 memory token: 3 of 3 seeds solve at 750-1,000 steps
   (about 20 s) where the old init solved 0 of 3. This is the sanity test
   `tests/training/test_rmt_sanity.py` (>= 99% on 1,024 held-out items, 1,250 steps).
   The same init lifted Memformer on majority from 75.0% to 97% in the same 2,000 steps, and
   the Memory Transformer on copy across 4 segments from 1% to 100% of items, so Memformer and
   memtr use it too (their zoo models were retrained); GMAT and kvcache keep GPT-2's init.
3. **The read memory dilutes attention in one segment.** At init with 8 memory tokens, tokens give
   the read memory 61-65% of their attention; seeds reaching 99% in one segment: 3/3 with M=1, 2/2
   with M=4, 0/2 with M=8 (new init). The AR model uses M=4.
4. **Two segments from scratch stay at about 35%**: the memory must be written before the lookup
   is learnt, and the lookup cannot be learnt before the memory carries the pairs. A curriculum over
   the number of segments, as in the RMT paper, breaks the deadlock: one segment until held-out
   accuracy reaches 99%, then the final segment length, with a quarter of the batches still drawn
   at the earlier length and cosine decay over the last stage (`memx train --curriculum 16`, the
   `curriculum` setting of every RMT zoo entry).

### The other families

- **Memformer** (`memformer-majority`): 75.0% -> 97% with the width-aware init alone (same 2,000
  steps); the Memory Transformer (`memtr-copy`) copies across 4 segments only with it (1% of items
  after 3,000 steps with GPT-2's init, 100% with it).
- **∞-former**: on frequency-sort (`infformer-sort`) the init lifts token accuracy from 71% to
  88% after 3,000 steps, still rising slowly (75, 82, 82, 84, 86, 88% at steps 500-3,000; about
  10 minutes on one thread); it is not at 95%. The task asks for an exact ranking of 8 counts
  over 96 symbols, and 46% of adjacent ranks differ by at most one occurrence, so the continuous
  memory (16 basis functions smoothing the past) must keep counts exact to one in about a dozen;
  a sorter that knew the true generating distributions but not the sampled counts scores only
  33%, so the model does count. Whether it gets to 95% with 5-10x the steps is not known: that
  did not fit this CPU's session budget. Re-tasked to majority, the answer asked in a segment
  that holds only SEP so the counts live in the continuous long-term memory alone
  (`infformer-majority`), the same model reaches 96-97% in 1,500 steps.
"""


def paper_table(rows: list[dict]) -> list[str]:
    lines = ["## memx beside the papers", "",
             "The RMT paper (Bulatov et al., NeurIPS 2022) trains 4-layer (AR: 6-layer), d=128 (AR: d=64) models with",
             "lr 1e-4, batch 32; memx's are 2-layer, d=64, lr 1e-3, trained in minutes on one CPU thread, on shorter",
             "sources where said. Figures of the paper as summarised in the project's seed notes.", "",
             "| model | task, segments x length, memory | memx PyTorch / ORT fp32 / int8-qdq | paper, closest configuration | what differs |",
             "|---|---|---|---|---|"]
    for r in rows:
        e = r["entry"]
        if not e.paper:
            continue
        figure, differs = (e.paper.split(" | ") + [""])[:2]
        lines.append(f"| `{e.name}` | {e.task}, {r['segments']} x {e.segment_len}, M={e.config.get('num_memory')} | "
                     f"{r['torch']:.1%} / {r['ort']:.1%} / {r['int8']:.1%} | {figure} | {differs} |")
    return lines + ["", PAPER_RUNS]


def markdown(rows: list[dict]) -> str:
    lines = [
        "# memx zoo",
        "",
        "Small models trained here (CPU) on the seed papers' synthetic tasks, shipped in",
        "`memx/zoo/checkpoints/` (safetensors). `memx export NAME --out DIR` exports one; `memx quickstart`",
        f"uses `{DEFAULT_MODEL}`. Accuracy over {ITEMS} held-out episodes streamed segment by segment, counted per",
        "item (every answer token right) or per answer token as the metric column says; \"same",
        "predictions\": items whose every answer token ONNX Runtime predicts exactly as PyTorch does;",
        "\"generated\": the answer generated token by token through ONNX Runtime's decode graphs, each",
        "token fed back (no teacher forcing), for causal models whose task answers after SEP",
        "(generated by `python -m memx.zoo.report docs/zoo.md`).",
        "",
        "| model | family | task | config | metric | PyTorch | ONNX Runtime fp32 | int8-qdq | generated (ORT) | same predictions | chance | PyTorch items / tokens | checkpoint |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e = r["entry"]
        cfg = ", ".join(f"{k}={v}" for k, v in e.config.items())
        gen = "-" if r["generated"] is None else f"{r['generated']:.1%}"
        lines.append(f"| `{e.name}` | {e.family} | {e.task} ({r['segments']} segments of {e.segment_len}) | {cfg} | {e.metric} | {r['torch']:.1%} | {r['ort']:.1%} | "
                     f"{r['int8']:.1%} | {gen} | {r['same']:.1%} | {e.chance:.3g} | {r['torch_items']:.1%} / {r['torch_tokens']:.1%} | {r['size'] / 1024:.0f} KiB |")
    lines += ["", "## Notes", ""]
    lines += [f"- `{r['entry'].name}`: {r['entry'].description}." for r in rows]
    lines += ["", *paper_table(rows), DIAGNOSIS, "## Reproduce", ""]
    for r in rows:
        e = r["entry"]
        lines.append(f"- `{e.name}`: `python -m memx.zoo.make {e.name}` (training: {', '.join(f'{k}={v}' for k, v in e.train.items())}; deterministic, one thread).")
        if r["history"]:
            key = "accuracy" if e.metric == "items" else "token_accuracy"
            curve = ", ".join(f"{h['step']}: {h[key]:.0%}" + (f" (segments of {h['segment_len']})" if h.get("segment_len", e.segment_len) != e.segment_len else "")
                              for h in r["history"][:: max(1, len(r["history"]) // 12)])
            lines.append(f"  Held-out accuracy ({e.metric}) during training (step: accuracy): {curve}.")
    return "\n".join(lines) + "\n"


def measured_json(rows: list[dict]) -> dict:
    """memx/zoo/checkpoints/measured.json: what `memx zoo` and the tests read."""
    models = {r["entry"].name: {"metric": r["entry"].metric, "torch": round(r["torch"], 4), "onnxruntime": round(r["ort"], 4), "int8_qdq": round(r["int8"], 4),
                                "generated": None if r["generated"] is None else round(r["generated"], 4), "same_predictions": round(r["same"], 4)}
              for r in rows}
    return {"format": "memx.zoo.measured", "items": ITEMS, "source": "python -m memx.zoo.report docs/zoo.md", "models": models}


if __name__ == "__main__":
    from memx.models.zoo import MEASURED
    from memx.package.files import write_text_atomic

    rows = measure()
    text = markdown(rows)
    write_text_atomic(MEASURED, json.dumps(measured_json(rows), indent=1) + "\n")
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text)
    print(text)
