"""Task accuracy measured through a runtime: the same episodes streamed segment by segment
through any backend, so PyTorch and ONNX Runtime are judged on identical inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from memx.training.accuracy import blank_answers, count_correct
from memx.training.tasks import IGNORE, get_task


@dataclass
class TaskScore:
    task: str
    items: int
    accuracy: float  # items whose every scored token is right
    token_accuracy: float
    predictions: np.ndarray  # (items, scored tokens per item) int64



def runtime_task_accuracy(rt, task_name: str, *, items: int = 1000, batch: int = 50, segment_len: int = 8, seed: int = 12345) -> TaskScore:
    """Stream ``items`` held-out episodes (seeded apart from training) through ``rt``."""
    task = get_task(task_name)
    preds, right_items, right_tokens, scored_tokens = [], 0, 0, 0
    for k in range(-(-items // batch)):
        ep = task.make(np.random.default_rng([seed, k]), min(batch, items - k * batch), segment_len)
        tokens = ep.tokens if rt.manifest.causal else blank_answers(ep.tokens, ep.targets)
        stream = rt.stream(tokens.shape[0])
        out = [stream.step(tokens[:, i * segment_len : (i + 1) * segment_len])["logits"].argmax(-1) for i in range(ep.n_segments)]
        pred = np.concatenate(out, axis=1)  # (B, T)
        items_ok, tokens_ok, tokens_scored = count_correct(pred, ep.targets)
        right_items, right_tokens, scored_tokens = right_items + items_ok, right_tokens + tokens_ok, scored_tokens + tokens_scored
        preds.append(pred[ep.targets != IGNORE].reshape(pred.shape[0], -1))
    return TaskScore(task_name, items, right_items / items, right_tokens / max(scored_tokens, 1), np.concatenate(preds))


def runtime_generation_accuracy(rt, task_name: str, *, items: int = 1000, batch: int = 50, segment_len: int = 8, seed: int = 12345) -> TaskScore:
    """The task answered by generation: each held-out item's prompt (up to the position that
    predicts the first answer token) is appended to a stream, and the answer is generated
    greedily token by token, each token fed back (free running, no teacher forcing), memory
    written every ``segment_len`` tokens. Needs a package with decode graphs (causal models)."""
    from memx.errors import InputError
    from memx.training.tasks import prompt_and_answer

    task = get_task(task_name)
    preds, right_items, right_tokens, scored_tokens = [], 0, 0, 0
    for k in range(-(-items // batch)):
        ep = task.make(np.random.default_rng([seed, k]), min(batch, items - k * batch), segment_len)
        pairs = [prompt_and_answer(ep, row) for row in range(ep.tokens.shape[0])]
        if len({(len(p), len(a)) for p, a in pairs}) != 1:
            raise InputError(f"task {task_name!r} has prompts or answers of several lengths", expected="one length per task", actual=sorted({(len(p), len(a)) for p, a in pairs}))
        prompts, answers = np.stack([p for p, _ in pairs]), np.stack([a for _, a in pairs])  # (B, P), (B, A)
        stream = rt.stream(prompts.shape[0])
        stream.segment_len = segment_len
        stream.append(prompts)
        pred = np.asarray(list(stream.generate(answers.shape[1], temperature=0))).reshape(answers.shape[1], -1).T  # (A, B) -> (B, A)
        items_ok, tokens_ok, tokens_scored = count_correct(pred, answers)
        right_items, right_tokens, scored_tokens = right_items + items_ok, right_tokens + tokens_ok, scored_tokens + tokens_scored
        preds.append(pred)
    return TaskScore(task_name, items, right_items / items, right_tokens / max(scored_tokens, 1), np.concatenate(preds))
