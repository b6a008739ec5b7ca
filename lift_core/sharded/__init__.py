"""Training LIFT on models sharded over several processes (FSDP2).

:class:`ShardedSparseAdamW` is SparseAdamW for weights that ``fully_shard`` has split by
rows across the ranks: each rank keeps its slice of every mask and the compact moments for
it. See docs/distributed.md.
"""

from lift_core.sharded.fsdp_lift import ShardedSparseAdamW, fully_shard_blocks, local_mask_indices

__all__ = ["ShardedSparseAdamW", "fully_shard_blocks", "local_mask_indices"]
