"""The RMT sanity check of issue 21: with the whole associative-retrieval episode in one
segment (no memory needed), a small RMT must solve the task. It is what separated "the
memory does not work" from "the model or trainer cannot learn the task" (docs/zoo.md)."""

from __future__ import annotations

import numpy as np
import torch

from memx.models import build_model
from memx.training import TrainConfig, evaluate, get_task, train
from memx.training.tasks import prompt_and_answer

ONE_SEGMENT = 16  # the 10-token episode fits one segment


def test_one_segment_rmt_solves_associative_retrieval():
    torch.set_num_threads(1)  # the same arithmetic, so the same run, on every machine size
    model = build_model("rmt", dict(vocab_size=64, d_model=64, n_heads=4, n_layers=2, d_ff=128, num_memory=1, max_segment_len=16), seed=0)
    cfg = TrainConfig(task="associative-retrieval", steps=1250, batch=32, lr=1e-3, segment_len=ONE_SEGMENT, eval_every=250, seed=0)
    result = train(model, cfg, progress=False)
    task = get_task("associative-retrieval")
    items, _ = evaluate(model, task, batches=16, batch=64, segment_len=ONE_SEGMENT, seed=7)  # 1024 items not seen in training
    assert items >= 0.99, f"one-segment associative retrieval: {items:.3f} held-out, history {result.history}"
    ep = task.make(np.random.default_rng(0), 1, ONE_SEGMENT)
    prompt, answer = prompt_and_answer(ep, 0)
    assert prompt[-2] == 2 and answer.shape == (1,), "the value is predicted at the queried key (QUERY, key)"
