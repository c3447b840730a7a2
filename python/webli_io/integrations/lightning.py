"""A WebLIStream under PyTorch Lightning: one callback, no other line.

.. code-block:: python

    stream = WebLIStream(shards, batch_size=256, shuffle=True)
    trainer = L.Trainer(callbacks=[WebLICallback(stream)], ...)
    trainer.fit(model, train_dataloaders=stream.loader(num_workers=4))
    # ... preempted; later, on any number of devices:
    trainer.fit(model, train_dataloaders=stream.loader(num_workers=4), ckpt_path="last.ckpt")

What it does, each where Lightning would otherwise lose data silently:

- **The epoch**: ``stream.set_epoch(trainer.current_epoch)`` when each training epoch starts
  (Lightning calls ``set_epoch`` on samplers only; a loader made by ``stream.loader()`` forwards
  it too).
- **Consumed means trained**: each batch a training step receives is passed to
  ``stream.observe``; Lightning's fetcher holds one batch ahead of the step, which counted as
  consumed when yielded was lost on resume.
- **Every rank's position in the checkpoint**: the callback's state is every rank's
  ``state_dict()`` gathered (``all_gather_object``) and merged, so a resume restores each rank's
  share, on the same or another number of devices (a framework checkpoint keeps rank 0's state
  only, which a stream now refuses to load on another rank).
"""

from __future__ import annotations

from typing import Any, Dict

import lightning.pytorch as pl

from ..stream import WebLIStream


class WebLICallback(pl.Callback):
    """Set the epoch, observe what the step trains on, and checkpoint every rank's position."""

    def __init__(self, stream: WebLIStream) -> None:
        super().__init__()
        self.stream = stream

    @property
    def state_key(self) -> str:
        return "WebLICallback"

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stream.set_epoch(trainer.current_epoch)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if isinstance(batch, dict) and isinstance(batch.get("position"), dict):
            self.stream.observe(batch)

    def state_dict(self) -> Dict[str, Any]:
        # Lightning builds a checkpoint on every rank (rank 0 writes it): a collective is safe here.
        return {"stream": self.stream.gathered_state_dict()}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.stream.load_state_dict(state_dict["stream"])
