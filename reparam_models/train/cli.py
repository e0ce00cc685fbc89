"""Command line of ``python -m reparam_models.train`` (also under ``torchrun``).

Usage errors -- a data directory that does not exist, an unknown model, a batch smaller than
the number of processes -- are one line on standard error and exit code 2, raised before the
process group is joined, so every torchrun worker stops at once.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .recipe import PRESETS, Recipe, with_overrides

__all__ = ["main", "train", "build_parser", "UsageError"]

PROG = "python -m reparam_models.train"
DEFAULT_MODEL = {"classify": "repmlpnet_n32", "face": "repmlp_face_res"}

EPILOG = """\
examples:
  python -m reparam_models.train                              # nano RepMLPNet on digits
  torchrun --standalone --nproc_per_node=2 -m reparam_models.train --epochs 2 --output DIR --json
  python -m reparam_models.train --resume DIR --epochs 4      # continue a run
  torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \\
      --rdzv_id=JOB -m reparam_models.train --data /path/to/imagenet --model repmlpnet_b224
"""


class UsageError(ValueError):
    """A bad command line, reported as one line with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (recipe fields default to ``None``: taken from ``--recipe``)."""
    p = argparse.ArgumentParser(
        prog=PROG, description="Train a reparam_models zoo model (DDP via torchrun), deploy it "
        "with reparam.deploy and compare both forms on the test split.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("data and model")
    g.add_argument("--data", metavar="DIR",
                   help="ImageFolder root with train/ and val/ (default: built-in digits)")
    g.add_argument("--task", choices=("classify", "face"), default="classify",
                   help="classify, or face: embedding model + CosFace margin head, "
                   "evaluated by pair verification")
    g.add_argument("--model", help="zoo model name (default: repmlpnet_n32; face: "
                   "repmlp_face_res)")
    g.add_argument("--model-kwargs", type=json.loads, default={}, metavar="JSON",
                   help='extra create_model kwargs, e.g. \'{"reparam_conv_k": []}\'')
    g.add_argument("--img-size", type=int, help="input size (default: the model's own)")
    g.add_argument("--train-limit", type=int, metavar="N", help="use the first N train images")
    g.add_argument("--test-limit", type=int, metavar="N", help="use the first N test images")
    g.add_argument("--workers", type=int, default=0, help="data loader workers per process")

    r = p.add_argument_group("recipe (defaults from --recipe)")
    r.add_argument("--recipe", choices=sorted(PRESETS),
                   help="digits for the built-in data (default there), reference otherwise")
    r.add_argument("--epochs", type=int)
    r.add_argument("--batch-size", type=int, help="global batch, split over the processes")
    r.add_argument("--lr", type=float, help="learning rate per 256 images of global batch")
    r.add_argument("--weight-decay", type=float)
    r.add_argument("--warmup-epochs", type=int)
    r.add_argument("--auto-augment", help="timm RandAugment string, 'none' to disable")
    r.add_argument("--mixup", type=float)
    r.add_argument("--cutmix", type=float)
    r.add_argument("--smoothing", type=float)
    r.add_argument("--clip-grad", type=float, help="gradient norm clip (0: off)")
    r.add_argument("--ema-decay", type=float, help="keep a timm ModelEmaV3 (e.g. 0.999)")
    r.add_argument("--margin", type=float, default=0.35, help="CosFace margin m (face)")
    r.add_argument("--margin-scale", type=float, default=30.0, help="CosFace scale s (face)")

    t = p.add_argument_group("run")
    t.add_argument("--output", default=None, metavar="DIR",
                   help="checkpoint directory (default: runs/MODEL)")
    t.add_argument("--resume", metavar="PATH", help="train.pt or a run directory")
    t.add_argument("--stop-after-epochs", type=int, metavar="N",
                   help="stop after N epochs of this invocation, as a killed run would "
                   "(checkpoint written, no deploy)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    t.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default="auto",
                   help="autocast dtype on CUDA (auto: bf16); ignored on CPU")
    t.add_argument("--eval-every", type=int, default=1, metavar="N")
    t.add_argument("--eval-batch-size", type=int, default=256)
    t.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                   help="progress bar on rank 0 (auto: when stderr is a terminal)")
    t.add_argument("--json", action="store_true", help="print the result as one JSON last line")
    return p


def resolve(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Recipe]:
    """Parse and check ``argv``; UsageError for the one-line errors."""
    from reparam_models import is_model, list_models

    from .data import image_folder_roots
    from .distributed import env_world_size

    args = build_parser().parse_args(argv)
    args.model = args.model or DEFAULT_MODEL[args.task]
    if not is_model(args.model):
        close = difflib.get_close_matches(args.model, list_models(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else \
            f"; see reparam_models.list_models() ({len(list_models())} models)"
        raise UsageError(f"unknown model {args.model!r}{hint}")
    if args.data is not None:
        try:
            image_folder_roots(args.data)
        except FileNotFoundError as e:
            raise UsageError(str(e)) from None
    args.recipe = args.recipe or ("digits" if args.data is None else "reference")
    if args.auto_augment == "none":
        args.auto_augment = ""
    recipe = with_overrides(PRESETS[args.recipe], vars(args))
    if args.clip_grad == 0:
        recipe = replace(recipe, clip_grad=None)
    if args.ema_decay == 0:
        recipe = replace(recipe, ema_decay=None)
    if args.task == "face":  # margin logits: no mixed or smoothed labels
        recipe = replace(recipe, mixup=0.0, cutmix=0.0, smoothing=0.0)
    args.epochs = recipe.epochs
    args.batch_size = recipe.batch_size
    world = env_world_size()
    if args.batch_size < world:
        raise UsageError(f"--batch-size {args.batch_size} is smaller than the world size {world}:"
                         " the global batch is split over the processes, each needs at least one")
    if args.batch_size % world:
        raise UsageError(f"--batch-size {args.batch_size} is not divisible by the world size "
                         f"{world}")
    if args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
    if args.resume is not None:
        from .checkpoint import resolve_resume

        try:
            resolve_resume(args.resume)
        except FileNotFoundError as e:
            raise UsageError(str(e)) from None
    args.output = args.output or str(Path("runs") / args.model)
    return args, recipe


def _summary(result: dict[str, Any]) -> str:
    metric = "verification accuracy" if result["task"] == "face" else "top-1"
    if result["stopped_early"]:
        return (f"{result['model']}: stopped after epoch {result['epochs_done']} of "
                f"{result['epochs']} (--stop-after-epochs); resume with --resume "
                f"{result['checkpoint']}")
    return (
        f"{result['model']} on {result['data']}: epochs {result['start_epoch'] + 1}.."
        f"{result['epochs_done']} of {result['epochs']}, world size {result['world_size']}\n"
        f"  test {metric}: trained {result['top1']:.4f}, deployed {result['top1_deployed']:.4f}, "
        f"identical predictions {result['prediction_agreement']:.4f}\n"
        f"  params {result['params']:,} -> {result['params_deployed']:,} after deploy; "
        f"checkpoints {result['checkpoint']} and {result['deployed_checkpoint']}"
    )


def train(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run in this process (world of one unless under torchrun) and return the result dict
    (what ``--json`` prints). Raises :class:`UsageError` for a bad command line."""
    from .run import RunError, run

    args, recipe = resolve(argv)
    try:
        return run(args, recipe)
    except RunError as e:
        raise UsageError(str(e)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code (0, or 2 for a usage error)."""
    from .distributed import env_rank

    try:
        result = train(argv)
    except UsageError as e:
        if env_rank() == 0:
            print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    if env_rank() == 0:
        as_json = build_parser().parse_known_args(argv)[0].json
        print(json.dumps(result) if as_json else _summary(result), flush=True)
    return 0
