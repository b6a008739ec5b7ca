"""LIFT's optimizer: ``SparseAdamW`` and the parts it is made of, one job each.

- :mod:`.update`: the AdamW rule on 1-D values and moments (:class:`AdamWRule`), and
  one step's vectors lined up for it in bounded chunks (:class:`StepBatches`).
- :mod:`.mask_state`: mask selection, refresh, carrying moments, churn events
  (:class:`MaskLifecycle`, :func:`select_mask`, :func:`carry_moments`).
- :mod:`.gradients`: masked gradients gathered by backward hooks, and clipping with the
  dense norms they recorded (:class:`GradientGatherer`).
- :mod:`.optimizer`: :class:`SparseAdamW`, the torch optimizer composing them.

``from lift_core.optim import SparseAdamW`` is the usual entry point (docs/optimizer.md).
"""

from lift_core.optim.gradients import GradientGatherer
from lift_core.optim.mask_state import MaskLifecycle, carry_moments, churn_events, select_mask
from lift_core.optim.optimizer import SparseAdamW
from lift_core.optim.update import AdamWRule

__all__ = [
    "AdamWRule",
    "GradientGatherer",
    "MaskLifecycle",
    "SparseAdamW",
    "carry_moments",
    "churn_events",
    "select_mask",
]
