"""A compact trainer over segments: memory carried between segments, truncated BPTT.

One optimisation step = one episode batch: the model runs segment by segment carrying its
state; the loss sums over all scored targets; gradients flow back through the memory for
``bptt_depth`` segments (``None``: through the whole episode). Data for step k comes from
``rng([seed, k])``, so training is deterministic and a resumed run equals an uninterrupted one.

Curriculum (the RMT paper's, over the number of segments): ``curriculum`` lists segment lengths
trained at before ``segment_len``, longest (fewest segments) first. Training moves to the next
stage at the first evaluation whose held-out item accuracy at the current stage's segment
length reaches ``curriculum_threshold``; in later stages a share ``curriculum_replay`` of the
batches is drawn at an earlier stage's length, so what was learnt is kept. Earlier stages train
at the constant (warmed-up) learning rate; the ``schedule`` runs over the last stage.

Checkpoint files: ``CKPT.safetensors`` (weights: what `memx export --checkpoint` reads),
``CKPT.optim.pt`` (optimizer state, loaded with ``weights_only=True``), ``CKPT.train.json``
(step, settings, metrics).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from memx.errors import CheckpointError, MemxError, expect_choice
from memx.models.base import SegmentModel
from memx.progress import progress_range
from memx.training.accuracy import blank_answers, count_correct
from memx.training.tasks import IGNORE, Episode, Task, get_task


@dataclass
class TrainConfig:
    task: str
    steps: int = 2000
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    bptt_depth: int | None = None  # segments gradients flow back through; None = whole episode
    segment_len: int = 8
    seed: int = 0
    clip: float = 1.0
    eval_every: int = 250
    eval_batches: int = 4
    warmup: int = 0  # steps of linear learning-rate warmup
    schedule: str = "constant"  # "constant" or "cosine" (decay to lr/10 by the last step)
    mrbp: bool = False  # memory replay back-propagation: same gradients as BPTT, less memory
    curriculum: tuple[int, ...] = ()  # segment lengths trained at before segment_len, fewest segments first
    curriculum_threshold: float = 0.99  # held-out item accuracy that moves training to the next stage
    curriculum_replay: float = 0.25  # share of a later stage's batches drawn at an earlier stage's length

    def __post_init__(self) -> None:
        self.curriculum = tuple(int(n) for n in self.curriculum)
        if self.schedule not in SCHEDULES:
            raise expect_choice("learning-rate schedule", self.schedule, SCHEDULES)
        if self.warmup < 0 or self.steps < 1 or self.batch < 1:
            raise MemxError("steps and batch must be >= 1 and warmup >= 0", expected="steps >= 1, batch >= 1, warmup >= 0", actual=f"steps {self.steps}, batch {self.batch}, warmup {self.warmup}")
        if any(n < 1 for n in self.stages):
            raise MemxError("curriculum segment lengths must be >= 1", expected="lengths >= 1", actual=list(self.stages))
        if not 0.0 < self.curriculum_threshold <= 1.0 or not 0.0 <= self.curriculum_replay < 1.0:
            raise MemxError("curriculum threshold must be in (0, 1] and replay in [0, 1)", expected="threshold in (0, 1], replay in [0, 1)",
                            actual=f"threshold {self.curriculum_threshold}, replay {self.curriculum_replay}")

    @property
    def stages(self) -> tuple[int, ...]:
        """The segment length of each curriculum stage; the last is ``segment_len``."""
        return (*self.curriculum, self.segment_len)


SCHEDULES = ("constant", "cosine")


def learning_rate(cfg: TrainConfig, step: int, schedule_start: int | None = 0) -> float:
    """The learning rate of optimisation step ``step`` (0-based). The schedule runs from
    ``schedule_start`` (the last curriculum stage's first step) to the last step; ``None``:
    an earlier curriculum stage, trained at the constant rate."""
    scale = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
    if cfg.schedule == "cosine" and schedule_start is not None:
        progress = min(1.0, max(0, step - schedule_start) / max(1, cfg.steps - 1 - schedule_start))
        scale *= 0.1 + 0.45 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr * scale


def batch_segment_len(cfg: TrainConfig, stage: int, step: int) -> int:
    """The segment length of step ``step``'s batch in curriculum stage ``stage``: the stage's
    own, or (with probability ``curriculum_replay``, from ``rng([seed, step, 1])``) an earlier one."""
    if stage == 0:
        return cfg.stages[0]
    rng = np.random.default_rng([cfg.seed, step, 1])
    if rng.random() < cfg.curriculum_replay:
        return cfg.stages[int(rng.integers(0, stage))]
    return cfg.stages[stage]


@dataclass
class TrainResult:
    step: int
    loss: float
    accuracy: float  # items whose every scored target is right
    token_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)
    stage: int = 0  # the curriculum stage training ended in (len(cfg.curriculum): the last, at segment_len)
    segment_len: int = 0  # the segment length the last accuracy was measured at

    def finished_curriculum(self, cfg: TrainConfig) -> bool:
        return self.stage == len(cfg.curriculum)


def model_inputs(model: SegmentModel, episode: Episode) -> np.ndarray:
    """Non-causal models must not read the answer they predict: blank teacher-forced answers."""
    return episode.tokens if model.is_causal else blank_answers(episode.tokens, episode.targets)


def _segment_inputs(model: SegmentModel, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(model_inputs(model, episode)), torch.from_numpy(episode.targets)


def _initial_state(model: SegmentModel, batch: int) -> tuple[torch.Tensor, ...]:
    return tuple(torch.zeros(batch, *spec.shape, dtype=getattr(torch, spec.dtype)) for spec in model.state_specs())


def _segment_loss(model: SegmentModel, tokens: torch.Tensor, targets: torch.Tensor, i: int, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """One segment: (summed cross-entropy, logits, new state)."""
    b = tokens.shape[0]
    out = model(tokens, torch.full((b,), tokens.shape[1]), torch.full((b,), i == 0), *state)
    n_out = len(model.output_specs())
    logits = out[0]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE, reduction="sum")
    return loss, logits, tuple(out[n_out:])


def run_episode(model: SegmentModel, episode: Episode, *, bptt_depth: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Roll the model over an episode. Returns (summed loss, predictions (B, T), targets (B, T))."""
    tokens, targets = _segment_inputs(model, episode)
    s = episode.segment_len
    state = _initial_state(model, tokens.shape[0])
    loss, preds = torch.zeros(()), []
    for i in range(episode.n_segments):
        seg_loss, logits, state = _segment_loss(model, tokens[:, i * s : (i + 1) * s], targets[:, i * s : (i + 1) * s], i, state)
        loss = loss + seg_loss
        preds.append(logits.argmax(-1))
        if bptt_depth and (i + 1) % bptt_depth == 0:
            state = tuple(t.detach() for t in state)
    return loss, torch.cat(preds, dim=1), targets


def mrbp_backward(model: SegmentModel, episode: Episode, *, bptt_depth: int | None, scale: float) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Memory replay back-propagation (Memformer): the gradients of ``run_episode``'s loss times
    ``scale``, accumulated into the parameters' ``.grad``, while holding only one segment's
    activations at a time.

    Per window of ``bptt_depth`` segments: a no-grad forward pass keeps the (detached) state
    entering each segment; then segments are replayed last to first, each back-propagating
    its own loss plus <state_out, dL/dstate_out> from the segment after it, which yields
    dL/dstate_in for the segment before. Returns (loss value, predictions, targets)."""
    tokens, targets = _segment_inputs(model, episode)
    s, n = episode.segment_len, episode.n_segments
    depth = bptt_depth or n
    state = _initial_state(model, tokens.shape[0])
    total, preds = 0.0, []
    seg = lambda t, i: t[:, i * s : (i + 1) * s]  # noqa: E731
    for start in range(0, n, depth):
        window = range(start, min(start + depth, n))
        entering = []
        with torch.no_grad():  # forward: remember the state entering each segment
            for i in window:
                entering.append(state)
                seg_loss, logits, state = _segment_loss(model, seg(tokens, i), seg(targets, i), i, state)
                total += float(seg_loss)
                preds.append(logits.argmax(-1))
        grads: tuple[torch.Tensor | None, ...] = tuple(None for _ in state)
        for i, state_in in zip(reversed(window), reversed(entering)):  # replay, last segment first
            state_in = tuple(t.detach().requires_grad_(t.is_floating_point()) for t in state_in)
            seg_loss, _, state_out = _segment_loss(model, seg(tokens, i), seg(targets, i), i, state_in)
            objective = seg_loss * scale
            for out_t, g in zip(state_out, grads):
                if g is not None and out_t.requires_grad:
                    objective = objective + (out_t * g).sum()
            objective.backward()
            grads = tuple(t.grad if t.requires_grad else None for t in state_in)
    return total, torch.cat(preds, dim=1), targets


def episode_backward(model: SegmentModel, episode: Episode, *, bptt_depth: int | None, mrbp: bool = False) -> float:
    """Accumulate the gradients of the mean loss over scored targets; returns that loss."""
    scored = max(int((episode.targets != IGNORE).sum()), 1)
    if mrbp:
        total, _, _ = mrbp_backward(model, episode, bptt_depth=bptt_depth, scale=1.0 / scored)
        return total / scored
    loss, _, _ = run_episode(model, episode, bptt_depth=bptt_depth)
    (loss / scored).backward()
    return float(loss.detach()) / scored


def evaluate(model: SegmentModel, task: Task, *, batches: int, batch: int, segment_len: int, seed: int) -> tuple[float, float]:
    """Accuracy on held-out episodes (seeded apart from training data)."""
    items_ok = tokens_ok = tokens_scored = n_items = 0
    with torch.no_grad():
        for k in range(batches):
            ep = task.make(np.random.default_rng([seed, 1_000_003, k]), batch, segment_len)
            _, preds, _ = run_episode(model, ep, bptt_depth=None)
            counts = count_correct(preds.numpy(), ep.targets)
            items_ok, tokens_ok, tokens_scored = items_ok + counts[0], tokens_ok + counts[1], tokens_scored + counts[2]
            n_items += ep.tokens.shape[0]
    return items_ok / n_items, tokens_ok / max(tokens_scored, 1)


def _paths(out: Path) -> tuple[Path, Path, Path]:
    stem = str(out)[: -len(".safetensors")] if str(out).endswith(".safetensors") else str(out)
    return Path(stem + ".safetensors"), Path(stem + ".optim.pt"), Path(stem + ".train.json")


def _save(model: SegmentModel, opt: torch.optim.Optimizer, out: Path, meta: dict[str, Any]) -> None:
    weights, optim, info = _paths(out)
    weights.parent.mkdir(parents=True, exist_ok=True)
    step = {"step": str(meta["step"])}  # checked on resume: the three files must be of one step
    for path, write in ((weights, lambda p: save_file({k: v.contiguous() for k, v in model.state_dict().items()}, p, metadata=step)),
                        (optim, lambda p: torch.save(opt.state_dict(), p)),
                        (info, lambda p: Path(p).write_text(json.dumps(meta, indent=2) + "\n"))):
        tmp = path.with_name(f".{path.name}.tmp")
        write(str(tmp))
        os.replace(tmp, path)  # each file whole or not at all


def train(model: SegmentModel, cfg: TrainConfig, *, out: Path | None = None, resume: bool = False, progress: bool = True) -> TrainResult:
    task = get_task(cfg.task)
    if model.vocab_size < task.vocab_size:
        raise MemxError(f"model vocabulary too small for task {task.name!r}", expected=f">= {task.vocab_size}", actual=model.vocab_size)
    if not 1 <= cfg.segment_len <= model.max_segment_len:
        raise MemxError("segment length out of range for this model", expected=f"1..{model.max_segment_len}", actual=cfg.segment_len)
    for n in cfg.stages:
        if not 1 <= n <= model.max_segment_len:
            raise MemxError("curriculum segment length out of range for this model", expected=f"1..{model.max_segment_len}", actual=n)
    torch.manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, history, stage, stage_start = 0, [], 0, 0
    if resume and out is not None and _paths(out)[2].exists():
        start, history, stage, stage_start = _load(model, opt, out, cfg)
    last_stage = len(cfg.curriculum)
    model.train()
    loss_value = float("nan")
    for step in progress_range(cfg.steps - start, f"train {task.name}", enabled=progress):
        k = start + step
        ep = task.make(np.random.default_rng([cfg.seed, k]), cfg.batch, batch_segment_len(cfg, stage, k))
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, k, stage_start if stage == last_stage else None)
        opt.zero_grad(set_to_none=True)
        loss_value = episode_backward(model, ep, bptt_depth=cfg.bptt_depth, mrbp=cfg.mrbp)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        if (k + 1) % cfg.eval_every == 0 or k + 1 == cfg.steps:
            model.eval()
            acc, tok_acc = evaluate(model, task, batches=cfg.eval_batches, batch=cfg.batch, segment_len=cfg.stages[stage], seed=cfg.seed)
            model.train()
            history.append({"step": k + 1, "loss": loss_value, "accuracy": acc, "token_accuracy": tok_acc, "stage": stage, "segment_len": cfg.stages[stage]})
            if stage < last_stage and acc >= cfg.curriculum_threshold:
                stage, stage_start = stage + 1, k + 1
            if out is not None:
                _save(model, opt, out, {"step": k + 1, "config": asdict(cfg), "family": model.family, "model_config": model.config_dict(), "history": history,
                                        "stage": stage, "stage_start": stage_start})
    model.eval()
    last = history[-1] if history else {"step": start, "loss": loss_value, "accuracy": float("nan"), "token_accuracy": float("nan"), "segment_len": cfg.stages[stage]}
    return TrainResult(int(last["step"]), float(last["loss"]), float(last["accuracy"]), float(last["token_accuracy"]), history,
                       stage=stage, segment_len=int(last.get("segment_len", cfg.segment_len)))


# Settings that do not change the weights' trajectory: a run may resume with other values.
_RESUMABLE_CHANGES = ("steps", "eval_every", "eval_batches")


def _trajectory(cfg: dict[str, Any]) -> dict[str, Any]:
    plain = json.loads(json.dumps(cfg))  # tuples as lists, as the training record stores them
    return {k: v for k, v in plain.items() if k not in _RESUMABLE_CHANGES}


def _load(model: SegmentModel, opt: torch.optim.Optimizer, out: Path, cfg: TrainConfig) -> tuple[int, list, int, int]:
    """Restore weights and optimizer; returns (step, history, curriculum stage, its first step)."""
    weights, optim, info = _paths(out)
    meta = json.loads(info.read_text())
    meta["config"] = {**asdict(TrainConfig(task=meta["config"]["task"])), **meta["config"]}  # records from before a setting existed
    if _trajectory(meta["config"]) != _trajectory(asdict(cfg)) or meta["model_config"] != model.config_dict():
        raise CheckpointError("cannot resume: the checkpoint was trained with other settings", expected=_trajectory(meta["config"]), actual=_trajectory(asdict(cfg)))
    with safe_open(str(weights), "pt") as f:
        weights_step = (f.metadata() or {}).get("step")
    if weights_step != str(meta["step"]):
        raise CheckpointError("cannot resume: weights and training record are of different steps (interrupted save?)", expected=meta["step"], actual=weights_step)
    model.load_state_dict(load_file(str(weights)), strict=True)
    opt.load_state_dict(torch.load(optim, weights_only=True))
    return int(meta["step"]), list(meta["history"]), int(meta.get("stage", 0)), int(meta.get("stage_start", 0))
