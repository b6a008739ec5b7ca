"""Benchmark: when does ``--svd randomized`` pay off, on pretrained vs random weights?

A LIFT mask needs the top-r singular subspace of each matrix. The block Krylov path
(``svd="randomized"``) converges fast when the spectrum decays (trained weights) and slowly on a
flat one (random initialisation), where its accuracy check falls back to an exact SVD after
paying for the sketch. Three kinds of square matrix at each size, filter rank = budget rank r:

- pretrained: MiniLM's real weights tiled into an n x n block (q, k, v, o of successive layers
  for 768^2; the MLP's up and down matrices for 1536^2), and MiniLM's own 384-wide layers
  with Krylov forced below the size rule;
- power-law: singular values i^-0.5 (the stand-in for a large trained matrix);
- random: i.i.d. N(0, 0.02^2), a freshly initialised layer (flat Marchenko-Pastur spectrum).

    nice python -m bench.bench_svd_choice           # ~2 min on one core
"""

from __future__ import annotations

import argparse
import json

import torch

from bench.bench_masks import RESULTS, compare, machine
from bench.common import power_law_matrix
from lift_core.lowrank import svd as svd_module
from lift_core.lowrank.masks import lora_budget


def _minilm_tiles() -> dict[int, torch.Tensor]:
    from lift_core.models.loading import layer_weight, list_linear_layers, load_model

    model = load_model("minilm")
    by_role: dict[str, list[torch.Tensor]] = {}
    for layer in list_linear_layers(model, blocks_only=True):
        by_role.setdefault(layer.role, []).append(layer_weight(model, layer).float())
    attention = [torch.cat([by_role[r][i] for r in ("q", "k")], 1) for i in range(6)]
    attention_v = [torch.cat([by_role[r][i] for r in ("v", "o")], 1) for i in range(6)]
    tile_768 = torch.cat([attention[0], attention_v[0]], 0)  # (768, 768) of block 0
    tile_1536 = torch.cat(by_role["up"][:4], 1)  # (1536, 1536): up of blocks 0-3 side by side
    return {384: by_role["o"][0], 768: tile_768, 1536: tile_1536}


def _matrices(n: int, pretrained: dict[int, torch.Tensor]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    found = {"random": torch.randn(n, n, generator=g) * 0.02, "power-law": power_law_matrix(n, n)}
    if n in pretrained:
        found["pretrained (MiniLM)"] = pretrained[n].contiguous()
    return found


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[4, 32])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pretrained = _minilm_tiles()
    rows = []
    forced = svd_module.RANDOMIZED_MIN_DIM
    svd_module.RANDOMIZED_MIN_DIM = 0  # measure Krylov itself, below the size rule too
    try:
        for n in (384, 768, 1536, 2048):
            for kind, w in _matrices(n, pretrained).items():
                for rank in args.ranks:
                    k = lora_budget(tuple(w.shape), rank)
                    row = {"n": n, "kind": kind, "rank": rank,
                           **compare(w, k, rank, args.repeats)}
                    rows.append(row)
                    print(f"{n}^2 {kind:<20} r={rank:<3} exact {row['exact_cpu_s']:.3f} s  "
                          f"randomized {row['randomized_cpu_s']:.3f} s  "
                          f"speedup {row['speedup_cpu']:.2f}x  Jaccard {row['jaccard']:.4f}",
                          flush=True)
    finally:
        svd_module.RANDOMIZED_MIN_DIM = forced
    result = {"machine": machine(), "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "svd_choice.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
