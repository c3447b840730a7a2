"""webli-io inside the frameworks people train with. Each submodule imports its framework, so
import the one you use: ``from webli_io.integrations.lightning import WebLICallback``.

- Lightning: :class:`webli_io.integrations.lightning.WebLICallback`.
- Accelerate: nothing to import — ``accelerator.prepare(model, opt, stream.loader(...))`` leaves a
  stream's loader as it is (each rank streams its own shards); checkpoint
  ``stream.gathered_state_dict()`` (every rank's readers) with the model.
- torchdata: :func:`webli_io.integrations.torchdata.gather_state` (every rank's readers, from
  each rank's ``StatefulDataLoader``).
"""
