"""PyTorch Lightning callback (extra ``[lightning]``): the monitor's metrics after every
validation epoch (and once before training), to the trainer's loggers and ``monitor.jsonl``.

    from transferscope.callbacks import LightningAuditCallback
    cb = LightningAuditCallback(source, "hymenoptera", out="runs/ft", image_size=128)
    lightning.Trainer(callbacks=[cb], ...).fit(module)

The model audited is the LightningModule's TransferModel (or, for another classifier, a view
through its final linear layer: :func:`transferscope.callbacks.view.as_transfer_model`). Rank 0
computes and writes; other ranks skip (DDP).
"""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback

from transferscope.callbacks.monitor import AuditMonitor

__all__ = ["LightningAuditCallback"]


class LightningAuditCallback(Callback):
    """:class:`~transferscope.callbacks.AuditMonitor` as a Lightning callback.

    Args: those of :class:`AuditMonitor` (``source``, ``target``, ``source_data``, ``out``,
    ``options`` or its fields, e.g. ``every=2``), or ``monitor=`` an existing one.
    """

    def __init__(self, source=None, target=None, *, monitor: AuditMonitor | None = None,
                 **kwargs):
        super().__init__()
        self.monitor = monitor or AuditMonitor(source, target, **kwargs)

    def _log(self, trainer, record) -> None:
        if record is None:
            return
        scalars = self.monitor.scalars(record)
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=trainer.global_step)

    def on_fit_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        self._log(trainer, self.monitor.step(pl_module, epoch=0, step=trainer.global_step))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        record = self.monitor.step(pl_module, epoch=trainer.current_epoch + 1,
                                   step=trainer.global_step)
        self._log(trainer, record)

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.monitor.close()
