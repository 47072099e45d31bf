"""The training progress bar: optimizer steps of the run's total (`step 150/400`), also after a
resume (Lightning's own counts batches of an epoch, which with `max_steps` and no epoch limit
reads "Epoch 0/-2", and restarts at 0 after a resume)."""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import _update_n


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar counting the trainer's global step against `max_steps`."""

    def on_train_start(self, trainer, *_) -> None:
        super().on_train_start(trainer)
        self._steps(trainer)  # a run resumed mid-epoch gets no on_train_epoch_start

    def on_train_epoch_start(self, trainer, *_) -> None:
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        self._steps(trainer)

    def _steps(self, trainer) -> None:
        bar = self.train_progress_bar
        bar.reset()
        bar.total = trainer.max_steps if trainer.max_steps > 0 else None
        bar.initial = 0
        _update_n(bar, trainer.global_step)
        bar.set_description("step")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bar, n = self.train_progress_bar, trainer.global_step
        if bar is not None and self._should_update(n, bar.total):
            _update_n(bar, n)
            bar.set_postfix(self.get_metrics(trainer, pl_module))
