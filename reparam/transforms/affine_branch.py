r"""A branch that is affine in an FC's input rows, as a matrix (RepMLP, arXiv:2105.01883,
Sec. 3.3: "feed an identity matrix through the branch").

Maths
-----
Let the FC read rows ``z_r`` (``r = 1..R``, ``F_in`` features each) and let a branch map
``z`` to ``g(z)`` in the FC's output layout, rows ``g_r`` of ``F_out`` features. If every
op of the branch is affine and acts on each row alone, the same way for every row, then

.. math:: g_r(z) = M z_r + c,\qquad c = g_r(0),\qquad M e_j = g_r(e_j\,\text{in row } r) - c,

so ``R`` columns of ``M`` come out of one evaluation of the branch (row ``r`` carries the
basis vector ``e_{j_0 + r}``), and ``FC(z) + g(z) = (W + M) z + (b + c)``. The caller
establishes that the branch is affine and row-wise; this module also checks, exactly, that
the response to ``0`` is the same in every row.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["branch_matrix"]


def branch_matrix(
    branch: Callable[[Tensor], Tensor],
    rows: int,
    in_features: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """``(M, c)`` with ``branch(z)[r] == M @ z[r] + c`` for ``z`` of shape ``(rows,
    in_features)``; ``branch`` returns ``(rows, out_features)``. ValueError when the
    response to zero differs between rows (the branch is not row-wise)."""
    if rows < 1 or in_features < 1:
        raise ValueError(f"need rows >= 1 and in_features >= 1, got {rows}, {in_features}")
    zero = torch.zeros((rows, in_features), dtype=dtype, device=device)
    c_rows = branch(zero)
    if c_rows.dim() != 2 or c_rows.shape[0] != rows:
        raise ValueError(f"the branch returned {tuple(c_rows.shape)}, expected ({rows}, F)")
    c = c_rows[0]
    if not bool((c_rows == c).all()):
        raise ValueError("the branch's response to zero differs between rows")
    columns = c_rows.new_empty((c.shape[0], in_features))
    r = torch.arange(rows, device=device)
    for start in range(0, in_features, rows):
        n = min(rows, in_features - start)
        z = zero.clone()
        z[r[:n], start + r[:n]] = 1.0
        response = branch(z)
        columns[:, start : start + n] = (response[:n] - c).T
    return columns, c.clone()
