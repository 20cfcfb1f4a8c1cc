"""What every training stage supplies to the shared loop (stage.train.loop.Trainer), with the defaults of a
stage that keeps no state of its own: `train_step(step, generator)` is the stage's; checkpointed state, its
checks, extra logs and metrics are empty unless the stage overrides them (stage 3 does)."""

from __future__ import annotations


class StageRunner:
    """Defaults for what a stage adds to the loop: no state beyond the step, no extra logs."""

    def __init__(self, trainer):
        self.t = trainer

    def state(self) -> dict:
        return {}

    def state_tensors(self) -> dict:
        return {}

    def check_state(self, state: dict, tensors: dict, state_file, tensors_file) -> None:
        """StageError naming the file when a checkpoint's runner state cannot be loaded (before anything is)."""

    def load_state(self, state: dict, tensors: dict) -> None:
        pass

    def truncate_logs(self, step: int) -> None:
        pass

    def metrics(self) -> dict:
        return {}
