"""Analyses over masks and layers that the explorer pages and the ``analyze`` CLI show.

- :mod:`.overlap`: Jaccard / containment between masks, sweeps over filter rank and
  budget, row/column counts.
- :mod:`.layers`: ``analyze_model``, one DataFrame row per linear layer of a model.
- :mod:`.delta`: what fine-tuning changed (ΔW = W_tuned - W_base), one row per layer and
  run (the ``diff`` CLI and the What changed page).
- :mod:`.generations`: the base's and the tuned model's answers to the same prompts.
"""
