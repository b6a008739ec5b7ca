"""Fine-tuning: the settings, the methods, the data, the trainer and the loop.

- :mod:`.registry`: ``METHOD_REGISTRY``, one record per method (the source of truth).
- :mod:`.methods`: ``setup_method``, a method's trainable set and optimizer on a model.
- :mod:`.config`: ``FinetuneConfig``, every setting of a run, checked once.
- :mod:`.options`: CLI options and form fields generated from the config's fields.
- :mod:`.tasks`, :mod:`.encoding`, :mod:`.data`: examples, token ids, a run's batches.
- :mod:`.evaluation`: exact-match accuracy by greedy generation.
- :mod:`.trainer`: ``Trainer`` (``setup``, ``step``, ``evaluate``): the seam.
- :mod:`.loop`: ``finetune``, the loop over the trainer that writes a run record.
"""
