"""Analyses over masks and layers that the explorer pages and the ``analyze`` CLI show.

- :mod:`.overlap`: Jaccard / containment between masks, sweeps over filter rank and
  budget, row/column counts.
- :mod:`.layers`: ``analyze_model``, one DataFrame row per linear layer of a model.
"""
