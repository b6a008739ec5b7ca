"""Low-rank views of one weight matrix: SVD, the principal-weight score, masks, spectra.

- :mod:`.svd`: exact and randomized (block Krylov) rank-r approximations.
- :mod:`.scoring`: ``PrincipalScorer``, the one place |W_r| is computed (SVD reused across
  ranks) and ``top_k_mask``.
- :mod:`.masks`: the mask strategies (LIFT, magnitude, random, LIFT-smallest) in one
  registry, ``MASK_STRATEGIES``, and ``lora_budget``.
- :mod:`.spectra`: singular values, energy, stable/effective rank, Marchenko–Pastur edge.
"""
