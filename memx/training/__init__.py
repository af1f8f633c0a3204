"""Training on the seed papers' synthetic tasks: task registry and a segment-wise BPTT trainer."""

from memx.training.tasks import Episode, Task, get_task, register_task, tasks
from memx.training.trainer import TrainConfig, TrainResult, evaluate, run_episode, train

__all__ = ["Episode", "Task", "TrainConfig", "TrainResult", "evaluate", "get_task", "register_task", "run_episode", "tasks", "train"]
