"""The SigLIP trainer, in small parts a reader takes in at a glance (none imports the data layer
but ``loop.py``, which feeds on ``WebLIStream``):

- ``config.py``: the models' sizes, with their sources (torch-free: the CLI reads it);
- ``model.py``: the two towers and the model;
- ``loss.py``: the sigmoid loss, local and distributed (every rank's images against every rank's
  texts);
- ``tokenizers.py``: byte-level and SentencePiece tokenizers, and training a SentencePiece model
  on captions balanced across languages;
- ``dist.py``: the process group (torchrun, ``torch.multiprocessing.spawn``);
- ``loop.py``: the training loop (DDP, accumulation, clipping, checkpoints, resume);
- ``evaluate.py``: zero-shot retrieval on held-out shards.
"""
