"""Data-parallel training: several processes (CPU processes or one per GPU) that are one run.

:class:`~lift_core.distributed.data_parallel.DataParallel` is what a
:class:`~lift_core.train.trainer.Trainer` asks about ranks: the slice of the global batch a
rank trains on, the loss normalised by the global batch's tokens, the gradient exchange
(:mod:`.exchange`), agreement on stopping and the check that masks match on every rank.
With one process every call is the plain single-process path. :mod:`.launch` starts the
processes for ``--processes N``; ``torchrun`` and ``accelerate launch`` work as well.
"""
