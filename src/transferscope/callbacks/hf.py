"""Hugging Face ``Trainer`` callback (extra ``[hf]``): the monitor's metrics at the end of every
epoch (and once before training), into ``monitor.jsonl``, the trainer's log history and - when
the callback knows the trainer - every ``report_to`` logger (TensorBoard, MLflow, ...).

    from transferscope.callbacks import HFAuditCallback
    cb = HFAuditCallback.attach(trainer, source, "hymenoptera", out="runs/ft")
    trainer.train()

``attach`` adds the callback and binds the trainer (a ``TrainerCallback`` is not given the
trainer, and ``Trainer.log`` is what reaches the loggers). Rank 0 computes and writes.
"""

from __future__ import annotations

from transformers import TrainerCallback

from transferscope.callbacks.monitor import AuditMonitor

__all__ = ["HFAuditCallback"]


class HFAuditCallback(TrainerCallback):
    """:class:`~transferscope.callbacks.AuditMonitor` as a ``transformers.TrainerCallback``.

    Args: those of :class:`AuditMonitor`, or ``monitor=`` an existing one; ``trainer``: the
    Trainer whose ``log`` reaches its loggers (set by :meth:`attach`).
    """

    def __init__(self, source=None, target=None, *, monitor: AuditMonitor | None = None,
                 trainer=None, **kwargs):
        self.monitor = monitor or AuditMonitor(source, target, **kwargs)
        self.trainer = trainer

    @classmethod
    def attach(cls, trainer, source=None, target=None, **kwargs) -> "HFAuditCallback":
        """Create the callback, bind ``trainer`` and add it to the trainer's callbacks."""
        cb = cls(source, target, trainer=trainer, **kwargs)
        trainer.add_callback(cb)
        return cb

    def _record(self, state, model, epoch: int) -> None:
        if not state.is_world_process_zero or model is None:
            return
        record = self.monitor.step(model, epoch=epoch, step=state.global_step)
        if record is None:
            return
        scalars = self.monitor.scalars(record)
        if self.trainer is not None:
            self.trainer.log(scalars)  # -> log_history and every report_to logger
        else:
            state.log_history.append({**scalars, "epoch": epoch, "step": state.global_step})

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._record(state, model, 0)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self._record(state, model, int(round(state.epoch or 0)))

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.monitor.close()
