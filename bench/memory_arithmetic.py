"""Memory per GPU for full fine-tuning, LoRA and LIFT under DDP and under sharding, on paper.

    python -m bench.memory_arithmetic        # prints the markdown tables of docs/distributed.md

Counts every parameter shape of Llama-2-7B and Llama-3-70B from the architecture (q, k, v,
o, gate, up, down per block, the norms, embeddings and an untied lm_head) and adds up, per
rank of an 8-GPU job, the bytes of weights, gradients, optimizer state and mask indices,
plus the largest working copies that exist one at a time. Activations are left out. The
byte counts per number are the assumptions listed in ASSUMPTIONS; nothing is measured.
"""

from __future__ import annotations

from dataclasses import dataclass

from lift_core.lowrank.masks import density_budget, lora_budget

GPUS = 8
GPU_GIB = 80
GIB = 2**30
BF16, FP32, INT32 = 2, 4, 4

ASSUMPTIONS = (
    "weights bf16 (2 B); gradients bf16 (2 B); AdamW m and v fp32 (4 + 4 B); "
    "full fine-tuning and LoRA keep an fp32 master copy of what they train (4 B, "
    "mixed precision as DeepSpeed / FSDP MixedPrecision do), LIFT updates its bf16 "
    "weights in place and keeps no master copy (SparseAdamW, as the authors' optimizer); "
    "LIFT indices int32 (every matrix here has < 2^31 entries); activations not counted"
)


@dataclass(frozen=True)
class Llama:
    """The shapes that decide a Llama's parameter count."""

    name: str
    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    vocab: int

    def block_matrices(self) -> list[tuple[int, int]]:
        """(out, in) of q, k, v, o, gate, up, down in one block."""
        d, f = self.hidden, self.ffn
        kv = self.hidden // self.heads * self.kv_heads
        return [(d, d), (kv, d), (kv, d), (d, d), (f, d), (f, d), (d, f)]

    def block_params(self) -> int:
        return sum(m * n for m, n in self.block_matrices()) + 2 * self.hidden  # + 2 RMSNorms

    def outside_params(self) -> int:
        """Embeddings, the untied lm_head and the final norm."""
        return 2 * self.vocab * self.hidden + self.hidden

    def total_params(self) -> int:
        return self.layers * self.block_params() + self.outside_params()

    def linear_params(self) -> int:
        """Numbers in all block linears (what LIFT and LoRA adapt)."""
        return self.layers * sum(m * n for m, n in self.block_matrices())

    def largest_matrix(self) -> tuple[int, int]:
        return max(self.block_matrices(), key=lambda s: s[0] * s[1])


LLAMA_2_7B = Llama("Llama-2-7B", layers=32, hidden=4096, ffn=11008, heads=32, kv_heads=32,
                   vocab=32000)
LLAMA_3_70B = Llama("Llama-3-70B", layers=80, hidden=8192, ffn=28672, heads=64, kv_heads=8,
                    vocab=128256)


def trained_entries(model: Llama, budget: str) -> int:
    """Numbers a sparse or adapter budget trains over all block linears.

    ``budget`` is "rank<r>" (LoRA rank r, or LIFT's (m + n) r per matrix) or "density<p>"
    (LIFT's p percent of every matrix, the paper's ~5% variants).
    """
    if budget.startswith("rank"):
        rank = int(budget[4:])
        per_block = sum(lora_budget(s, rank) for s in model.block_matrices())
    else:
        density = float(budget[7:]) / 100
        per_block = sum(density_budget(s, density) for s in model.block_matrices())
    return model.layers * per_block


@dataclass(frozen=True)
class Row:
    """Bytes per rank of one (method, regime); ``transient`` exists one piece at a time."""

    setting: str
    regime: str
    trained: int
    weights: int
    gradients: int
    optimizer: int
    indices: int
    transient: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.indices + self.transient


def _refresh_bytes(model: Llama, sharded: bool) -> int:
    """A LIFT mask refresh of the largest matrix: fp32 copy, thin SVD factors, |W_r|
    (solver workspace not counted); under sharding also the gathered bf16 matrix."""
    m, n = model.largest_matrix()
    svd = FP32 * (m * n + min(m, n) ** 2)  # thin SVD: one m*n factor, one square, S is small
    return FP32 * m * n + svd + FP32 * m * n + (BF16 * m * n if sharded else 0)


def _fsdp_unit_bytes(model: Llama, block_grads: bool, root_grads: bool) -> int:
    """The largest FSDP unit gathered at a time: two blocks (current and prefetched) or
    the root (embeddings, lm_head), with the unit's unsharded bf16 gradients before the
    reduce-scatter when it trains them."""
    block = BF16 * model.block_params()
    root = BF16 * model.outside_params()
    return max(2 * block + (block if block_grads else 0), root * (2 if root_grads else 1))


def rows_for(model: Llama) -> list[Row]:
    """Every (method, regime) row of one model, per rank of GPUS GPUs."""
    total, linear, n = model.total_params(), model.linear_params(), GPUS
    lora = trained_entries(model, "rank16")
    big_m, big_n = model.largest_matrix()
    one_dense_grad = BF16 * big_m * big_n
    rows = [
        Row("full fine-tuning", "DDP", total, BF16 * total, BF16 * total, 3 * FP32 * total, 0, 0),
        Row("full fine-tuning", "FSDP2 / ZeRO-3", total, BF16 * total // n, BF16 * total // n,
            3 * FP32 * total // n, 0, _fsdp_unit_bytes(model, True, True)),
        Row("LoRA r16", "DDP", lora, BF16 * (total + lora), BF16 * lora, 3 * FP32 * lora, 0, 0),
        Row("LoRA r16", "FSDP2 / ZeRO-3", lora, BF16 * (total + lora) // n, BF16 * lora // n,
            3 * FP32 * lora // n, 0, _fsdp_unit_bytes(model, False, False)),
    ]
    for budget, label in (("rank128", "LIFT r128"), ("density5", "LIFT 5%")):
        k = trained_entries(model, budget)
        moments = 2 * FP32 * k
        # Refreshes run between steps, so they never meet the gathered blocks.
        lift_transient = max(_fsdp_unit_bytes(model, True, False), _refresh_bytes(model, True))
        rows += [
            Row(f"{label}, dense grads", "DDP", k, BF16 * total, BF16 * linear, moments,
                INT32 * k, _refresh_bytes(model, False)),
            Row(f"{label}, freeing hooks", "DDP", k, BF16 * total, FP32 * k, moments, INT32 * k,
                max(one_dense_grad, _refresh_bytes(model, False))),
            Row(f"{label}, sharded grads (built)", "FSDP2", k, BF16 * total // n,
                BF16 * linear // n, moments // n, INT32 * k // n,
                lift_transient),
            Row(f"{label}, freeing hooks (paper)", "FSDP2", k, BF16 * total // n,
                FP32 * k // n, moments // n, INT32 * k // n,
                lift_transient),
        ]
    return rows


def _gib(nbytes: int) -> str:
    return f"{nbytes / GIB:.1f}"


def markdown(model: Llama) -> str:
    """The table of one model, one line per (method, regime)."""
    lines = [
        f"**{model.name}**: {model.total_params():,} parameters, {model.linear_params():,} in "
        f"block linears; per rank of {GPUS} GPUs, GiB",
        "",
        "| method | regime | trained numbers (share of all) | weights | gradients | "
        "optimizer state | "
        "mask indices | transient peak | total | fits 80 GiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows_for(model):
        share = row.trained / model.total_params()
        fits = "yes" if row.total <= GPU_GIB * GIB else "no"
        lines.append(
            f"| {row.setting} | {row.regime} | {row.trained / 1e6:,.0f}M ({share:.1%}) | "
            f"{_gib(row.weights)} | {_gib(row.gradients)} | {_gib(row.optimizer)} | "
            f"{_gib(row.indices)} | {_gib(row.transient)} | {_gib(row.total)} | {fits} |")
    return "\n".join(lines)


def main() -> None:
    print(f"Assumptions: {ASSUMPTIONS}.\n")
    for model in (LLAMA_2_7B, LLAMA_3_70B):
        print(markdown(model))
        print()


if __name__ == "__main__":
    main()
