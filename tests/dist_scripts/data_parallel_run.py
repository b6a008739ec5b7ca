"""Train a few short runs under torchrun and save what each rank ends with.

Usage: torchrun --nproc_per_node N tests/dist_scripts/data_parallel_run.py OUT_DIR
(or with no launcher, for the one-process reference). Each run in RUNS is trained with the
settings of tests/test_data_parallel.py; every rank writes OUT_DIR/<name>-rank<R>.pt with
the losses, the trained tensors, the masks and the bytes it exchanged per step.
"""

import sys
from pathlib import Path

import torch

from lift_core.train.config import FinetuneConfig
from lift_core.train.trainer import Trainer

# name -> settings; 20 steps with a mask refresh at step 10 (update_interval).
RUNS = {
    "lift": dict(method="lift"),
    "full": dict(method="full"),
    "lora": dict(method="lora"),
    "lift-sparse": dict(method="lift", grad_exchange="sparse", max_grad_norm=0.0),
    "lift-noclip": dict(method="lift", max_grad_norm=0.0),
}
COMMON = dict(steps=20, update_interval=10, batch_size=8, train_examples=64, eval_limit=4,
              threads=1, warmup_ratio=0.1)


def train(settings: dict) -> dict:
    trainer = Trainer(FinetuneConfig(**COMMON, **settings)).setup()
    losses = [trainer.step()["loss"] for _ in range(COMMON["steps"])]
    tensors = [p.detach().clone() for p in trainer.method_setup.trainable_tensors()]
    masks = [s["indices"].clone() for s in trainer.optimizer.state.values() if "indices" in s]
    result = {"losses": losses, "tensors": tensors, "masks": masks,
              "refreshes": trainer.mask_refreshes,
              "bytes_per_step": list(trainer.parallel.bytes_per_step),
              "world_size": trainer.parallel.world_size}
    trainer.close()
    return result


def main(out: str, names: list[str]) -> None:
    import os

    rank = int(os.environ.get("RANK", "0"))
    for name in names or list(RUNS):
        torch.save(train(RUNS[name]), Path(out) / f"{name}-rank{rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
