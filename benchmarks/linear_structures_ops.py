"""Op counts (convs / norms / linears one forward runs) before and after ``deploy`` for the
issue-8 part-A paper-style models, next to the paper's own deploy form.

    python benchmarks/linear_structures_ops.py
"""

from __future__ import annotations

import torch

import reparam
from reparam.testing.opcount import op_counts
from reparam.testing.zoo_linear import LINEAR_ZOO, LINEAR_ZOO_PLAIN, linear_zoo_input


def main() -> None:
    torch.set_num_threads(1)
    print(f"{'model':16} {'before':>22} {'after deploy':>22} {'paper deploy form':>22}  rel.err")
    for name in sorted(LINEAR_ZOO):
        model, x = LINEAR_ZOO[name](), linear_zoo_input(name)
        result = reparam.deploy_with_report(model, x)
        fmt = lambda c: f"{c['conv']}c/{c['norm']}n/{c['linear']}l"  # noqa: E731
        before, after = op_counts(model, x), op_counts(result.model, x)
        plain = op_counts(LINEAR_ZOO_PLAIN[name](), x)
        err = reparam.relative_error(model(x), result.model(x))
        print(f"{name:16} {fmt(before):>22} {fmt(after):>22} {fmt(plain):>22}  {err:.1e}")


if __name__ == "__main__":
    main()
