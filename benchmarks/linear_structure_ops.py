"""Op counts (convs, norms, linears) before and after ``reparam.deploy`` for the issue-8
paper-style blocks in ``tests/rules/_paper_models.py``, next to each paper's own conversion.

Usage::

    python benchmarks/linear_structure_ops.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import reparam  # noqa: E402
from reparam.demo import randomize_batch_norms  # noqa: E402
from tests.rules import _paper_models as P  # noqa: E402

CASES = [
    ("UniRepLKNet FFN (Linear → permute → BN)", P.UniRepLKNetStyleBlock(), (2, 8, 6, 5)),
    ("conv → flatten → BatchNorm1d head", P.ConvFlattenNormHead(), (2, 6, 5, 5)),
    ("Inception-style shared BN", P.InceptionStyleHead(), (2, 4, 7, 7)),
    ("BatchNorm pre-norm → q/k/v", P.BatchNormAttention(), (2, 6, 5)),
    ("RepNeXt medium conv, stride 1", P.RepNeXtStyleMediumConv(), (2, 4, 11, 9)),
    ("RepNeXt medium conv, stride 2", P.RepNeXtStyleMediumConv(stride=2), (2, 4, 11, 9)),
    ("RepNeXt 1×11 → 11×1 (kept: slower)", P.RepNeXtStyleLargeConv(bias=False), (1, 4, 12, 12)),
    ("RepMLPNet block (official style)", P.RepMLPNetStyleBlock(), (2, 4, 6, 9)),
    ("RepMLP-ResNet unit", P.RepMLPResNetStyleUnit(), (2, 4, 4, 6)),
    ("unfold partitions + Linear", P.UnfoldPartitionMLP(), (2, 3, 4, 6)),
]


def main() -> None:
    torch.manual_seed(0)
    print(f"{'block':42s} {'before':>10s} {'after':>10s} {'paper':>10s}  error  rules")
    for name, model, shape in CASES:
        model = randomize_batch_norms(model.double(), seed=5).eval()
        x = torch.randn(*shape, dtype=torch.float64)
        result = reparam.deploy_with_report(model, x)
        with torch.no_grad():
            err = reparam.relative_error(model(x), result.model(x))
        fmt = "{}/{}/{}".format
        print(f"{name:42s} {fmt(*P.op_counts(model)):>10s} {fmt(*P.op_counts(result.model)):>10s}"
              f" {fmt(*type(model).PAPER_DEPLOY):>10s}  {err:.0e}  "
              f"{','.join(sorted(result.report.fired()))}")


if __name__ == "__main__":
    main()
