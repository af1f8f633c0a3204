"""`memx train` and `memx quickstart`: training a model, the guided first run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from memx.cli.app import EXIT_CHECK_FAILED, Outcome, command, out
from memx.zoo import DEFAULT_MODEL


@command(name="train", interrupted="the last checkpoint written (every --eval-every steps) stays at --out; continue with --resume",
         examples=["memx train copy-8 --preset rmt-tiny --segment-len 4 --out copy.safetensors",
                   "memx train associative-retrieval --segment-len 8 --curriculum 16 --steps 6000 --schedule cosine --out ar.safetensors",
                   "memx train majority --family gmat --segment-len 16 --steps 3000 --out maj.safetensors --resume --json"])
def train_command(
    task: str = typer.Argument(..., help="Synthetic task: copy, reverse, copy-8, reverse-8, associative-retrieval, majority, frequency-sort."),
    checkpoint: Path = typer.Option(..., "--out", "-o", help="Checkpoint to write (CKPT.safetensors; .optim.pt and .train.json beside it)."),
    family: str = typer.Option("rmt", help="Model family; trains FAMILY-tiny unless --preset is given."),
    preset: Optional[str] = typer.Option(None, help="Preset to train (see `memx zoo`); overrides --family."),
    steps: int = typer.Option(2000, help="Optimisation steps (one episode batch each)."),
    batch: int = typer.Option(32, help="Episodes per step."),
    lr: float = typer.Option(1e-3, help="AdamW learning rate."),
    bptt_depth: Optional[int] = typer.Option(None, help="Segments gradients flow back through the memory (default: all)."),
    segment_len: int = typer.Option(8, help="Tokens per segment."),
    seed: int = typer.Option(0, help="Seed of weights and data (training is deterministic)."),
    eval_every: int = typer.Option(250, help="Evaluate and checkpoint every N steps."),
    warmup: int = typer.Option(0, help="Steps of linear learning-rate warmup."),
    schedule: str = typer.Option("constant", help="Learning-rate schedule: constant, or cosine (decays to lr/10)."),
    mrbp: bool = typer.Option(False, "--mrbp", help="Memory replay back-propagation: BPTT's gradients, one segment's activations in memory at a time."),
    curriculum: Optional[str] = typer.Option(None, help="Segment lengths to train at before --segment-len, fewest segments first (e.g. 16 or 24,16): "
                                             "the next stage starts when held-out accuracy reaches --curriculum-threshold (the RMT paper's curriculum)."),
    curriculum_threshold: float = typer.Option(0.99, help="Held-out item accuracy that moves the curriculum to its next stage."),
    curriculum_replay: float = typer.Option(0.25, help="Share of a later stage's batches drawn at an earlier stage's segment length."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint at --out (same settings)."),
) -> None:
    """Train a model on a synthetic long-input task, segment by segment with memory (BPTT)."""
    from memx.models import build_preset
    from memx.training import TrainConfig, train

    name = preset or f"{family}-tiny"
    model = build_preset(name, seed=seed)
    cfg = TrainConfig(task=task, steps=steps, batch=batch, lr=lr, bptt_depth=bptt_depth, segment_len=segment_len, seed=seed, eval_every=eval_every,
                      warmup=warmup, schedule=schedule, mrbp=mrbp, curriculum=parse_lengths(curriculum),
                      curriculum_threshold=curriculum_threshold, curriculum_replay=curriculum_replay)
    result = train(model, cfg, out=checkpoint, resume=resume)
    table = Table(title=f"train {task} on {name}")
    for col in ("step", "segment", "loss", "accuracy (items)", "accuracy (tokens)"):
        table.add_column(col, justify="right")
    for h in result.history:
        table.add_row(str(h["step"]), str(h.get("segment_len", segment_len)), f"{h['loss']:.4f}", f"{h['accuracy']:.3f}", f"{h['token_accuracy']:.3f}")
    out.print(table)
    if not result.finished_curriculum(cfg):
        out.print(f"[yellow]the curriculum stopped at segments of {result.segment_len}: held-out accuracy never reached {curriculum_threshold} there; "
                  f"--segment-len {segment_len} was not trained (more --steps, or a lower --curriculum-threshold)[/yellow]")
    last = result.history[-1] if result.history else {}
    data = {"checkpoint": str(checkpoint), "preset": name, "task": task, "steps": steps, "history": result.history,
            "finished_curriculum": result.finished_curriculum(cfg), "accuracy": last.get("accuracy"), "token_accuracy": last.get("token_accuracy")}
    acc = f", held-out accuracy {last['accuracy']:.1%} (items)" if last else ""
    return Outcome(f"checkpoint {checkpoint}{acc}; export it: memx export {name} --checkpoint {checkpoint} --out {name}.memx", data)


def parse_lengths(text: Optional[str]) -> tuple[int, ...]:
    """'16,8' -> (16, 8); a typed error naming the bad item otherwise."""
    from memx.errors import MemxError

    if not text:
        return ()
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not all(t.isdigit() for t in items):
        raise MemxError("--curriculum takes segment lengths separated by commas", expected="e.g. 16 or 24,16", actual=text)
    return tuple(int(t) for t in items)


@command(examples=["memx quickstart", "memx quickstart --preset rmt-copy --out quickstart/copy.memx --segments 64"])
def quickstart(
    out_dir: Path = typer.Option(Path("quickstart/model.memx"), "--out", "-o", help="Where to write the package (replaced if present)."),
    preset: str = typer.Option(DEFAULT_MODEL, help="Zoo model or preset to build (see `memx zoo`)."),
    segments: int = typer.Option(256, help="Segments of parity validation."),
    demo_segments: int = typer.Option(64, help="Segments streamed in the demo."),
) -> None:
    """Build the default model, export it, validate it over long streams, and stream a demo through ONNX Runtime."""
    from memx.quickstart import run_quickstart

    result = run_quickstart(out_dir, preset=preset, segments=segments, demo_segments=demo_segments, console=out)
    data = {"package": str(out_dir), "preset": preset, "parity": result.parity.to_dict()}
    verdict = "PASS" if result.parity.passed else "FAIL"
    return Outcome(f"quickstart: {preset} exported to {out_dir}, parity {verdict} over {segments} segments", data, 0 if result.parity.passed else EXIT_CHECK_FAILED)
