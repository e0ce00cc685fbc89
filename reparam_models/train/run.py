"""One training run: data, model, recipe, DDP, epochs with checkpoints, deploy, comparison."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import checkpoint as ckpt
from .data import (
    DataSplits,
    build_transforms,
    dataset_targets,
    limit,
    load_digits_splits,
    load_image_folder,
    set_transform,
    train_loader,
    verification_pairs,
)
from .distributed import DistEnv, barrier, gather_objects, param_digest, setup, teardown
from .loop import (
    FaceTrainer,
    StepState,
    autocast_factory,
    best_threshold_accuracy,
    max_abs_diff,
    predict,
    seed_epoch,
    top1,
    train_one_epoch,
    verification_scores,
)
from .recipe import (
    Recipe,
    build_ema,
    build_loss,
    build_mixup,
    build_optimizer,
    build_scheduler,
    scaled_lr,
)

__all__ = ["run", "RunError"]

log = logging.getLogger("reparam_models.train")


class RunError(RuntimeError):
    """A problem with the run's inputs found after start-up (reported in one line, exit 2)."""


def _configure_logging(env: DistEnv) -> None:
    if log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO if env.is_main else logging.WARNING)
    log.propagate = False


def _load_data(args: Any) -> DataSplits:
    return load_digits_splits() if args.data is None else load_image_folder(args.data)


def _build_model(args: Any, num_classes: int) -> nn.Module:
    from reparam_models import create_model

    if args.task == "classify":  # recorded in the checkpoints with the other model kwargs
        args.model_kwargs = {"num_classes": num_classes, **args.model_kwargs}
    return create_model(args.model, **args.model_kwargs)


def _progress(env: DistEnv, mode: str) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    enabled = env.is_main and (mode == "on" or (mode == "auto" and sys.stderr.isatty()))
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[loss]}"),
                    console=Console(stderr=True), disable=not enabled, transient=True)


def _check_resume_args(saved: dict[str, Any], args: Any) -> None:
    for key in ("model", "task", "seed", "batch_size"):
        if key in saved and saved[key] != getattr(args, key):
            raise RunError(
                f"--resume: the checkpoint was trained with --{key.replace('_', '-')} "
                f"{saved[key]!r}, this run asks for {getattr(args, key)!r}; resume with the same "
                "value (the data order depends on it)"
            )


def _state(net: nn.Module, state: StepState, epoch: int, args: Any, recipe: Recipe) -> dict:
    return {
        "model": net.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "ema": state.ema.module.state_dict() if state.ema is not None else None,
        "epoch": epoch,
        "epochs": args.epochs,
        "args": {k: v for k, v in vars(args).items() if k != "model_kwargs"}
        | {"model_kwargs": dict(args.model_kwargs)},
        "recipe": {k: getattr(recipe, k) for k in recipe.__dataclass_fields__},
    }


def run(args: Any, recipe: Recipe) -> dict[str, Any]:
    """Train, checkpoint, deploy and compare; returns the result (the same on every rank)."""
    env = setup(args.device)
    _configure_logging(env)
    try:
        return _run(args, recipe, env)
    finally:
        teardown()


def _run(args: Any, recipe: Recipe, env: DistEnv) -> dict[str, Any]:
    start_time = time.perf_counter()
    face = args.task == "face"
    splits = _load_data(args)
    torch.manual_seed(args.seed)  # identical initial weights on every rank (DDP broadcasts too)
    model = _build_model(args, splits.num_classes)
    img_size = args.img_size or int(model.pretrained_cfg["input_size"][-1])
    train_tf, test_tf = build_transforms(
        img_size, splits.mean_std, auto_augment=recipe.auto_augment, scale=recipe.scale,
        hflip=recipe.hflip, crop_pct=recipe.crop_pct,
    )
    train_set, test_set = limit(splits.train, args.train_limit), limit(splits.test, args.test_limit)
    set_transform(train_set, train_tf)
    set_transform(test_set, test_tf)

    net: nn.Module = model
    if face:
        from reparam_models import CosFaceHead

        net = FaceTrainer(model, CosFaceHead(model.embedding_dim, splits.num_classes,
                                             s=args.margin_scale, m=args.margin))
    net.to(env.device)
    per_rank = args.batch_size // env.world_size
    global_batch = per_rank * env.world_size
    loader = train_loader(train_set, per_rank, env.rank, env.world_size, args.seed, args.workers,
                          pin_memory=env.device.type == "cuda")
    updates_per_epoch = len(loader)
    if updates_per_epoch == 0:
        raise RunError(f"the training split has {len(train_set)} images, fewer than one batch "
                       f"of {per_rank} per process; lower --batch-size")
    mixup = None if face else build_mixup(recipe, splits.num_classes)
    if mixup is not None and per_rank % 2:
        raise RunError(f"mixup/cutmix need an even batch per process, got {per_rank}")
    optimizer = build_optimizer(net, recipe, global_batch)
    scheduler = build_scheduler(optimizer, recipe, args.epochs, updates_per_epoch)
    amp = args.amp if args.amp != "auto" else "bf16"
    scaler = torch.amp.GradScaler(env.device.type,
                                  enabled=env.device.type == "cuda" and amp == "fp16")
    ema = build_ema(net, recipe)
    state = StepState(optimizer, scheduler, scaler, build_loss(recipe, mixup), mixup, ema,
                      recipe.clip_grad, autocast_factory(env.device, amp), face=face)

    start_epoch = 0
    if args.resume:
        path = ckpt.resolve_resume(args.resume)
        saved = ckpt.load(path)
        _check_resume_args(saved.get("args", {}), args)
        net.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if saved.get("epochs") == args.epochs:
            scheduler.load_state_dict(saved["scheduler"])
        else:
            log.info("resume: --epochs %s differs from the checkpoint's %s: the cosine schedule "
                     "is rebuilt for %s epochs", args.epochs, saved.get("epochs"), args.epochs)
        scaler.load_state_dict(saved["scaler"])
        if ema is not None and saved.get("ema") is not None:
            ema.module.load_state_dict(saved["ema"])
        start_epoch = int(saved["epoch"])
        log.info("resumed from %s at epoch %d", path, start_epoch)

    digest_start = param_digest(net)
    ddp: nn.Module = net
    if env.distributed:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(
            net, device_ids=[env.device.index] if env.device.type == "cuda" else None
        )
    log.info(
        "training %s (%s, %.2f M params) on %s: %d train / %d test images at %dx%d, "
        "world size %d, global batch %d, lr %.3g, epochs %d..%d",
        args.model, args.task, sum(p.numel() for p in model.parameters()) / 1e6, splits.name,
        len(train_set), len(test_set), img_size, img_size, env.world_size, global_batch,
        scaled_lr(recipe, global_batch), start_epoch + 1, args.epochs,
    )

    out_dir = Path(args.output)
    train_path = out_dir / ckpt.TRAIN_NAME
    history: list[dict[str, Any]] = []
    evaluated = lambda: (ema.module if ema is not None else net)  # noqa: E731
    targets = dataset_targets(test_set)
    pairs = verification_pairs(targets) if face else None
    stopped = False
    with _progress(env, args.progress) as progress:
        for epoch in range(start_epoch, args.epochs):
            seed = seed_epoch(args.seed, epoch, env.rank)
            loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
            loader.generator.manual_seed(seed)  # type: ignore[union-attr]
            task = progress.add_task(f"epoch {epoch + 1}/{args.epochs}",
                                     total=updates_per_epoch, loss="")
            loss = train_one_epoch(
                ddp, loader, state, env, epoch, updates_per_epoch,
                on_step=lambda i, v, task=task: progress.update(task, completed=i,
                                                                loss=f"loss {v:.3f}"),
            )
            progress.remove_task(task)
            entry: dict[str, Any] = {"epoch": epoch + 1, "loss": round(loss, 5)}
            if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs:
                entry["top1"] = _score(evaluated(), test_set, targets, pairs, env, args, face)
            history.append(entry)
            if env.is_main:
                ckpt.atomic_save(_state(net, state, epoch + 1, args, recipe), train_path)
            barrier()
            log.info("epoch %d/%d  loss %.4f%s  lr %.3g  (%.0f s)", epoch + 1, args.epochs, loss,
                     f"  test {'verification' if face else 'top-1'} {entry['top1']:.4f}"
                     if "top1" in entry else "", optimizer.param_groups[0]["lr"],
                     time.perf_counter() - start_time)
            if args.stop_after_epochs and epoch + 1 - start_epoch >= args.stop_after_epochs:
                stopped = epoch + 1 < args.epochs
                break

    digests = gather_objects(param_digest(net))
    if len(set(digests)) > 1:
        log.warning("the ranks' parameters differ after training: %s", digests)
    final = evaluated()
    if stopped:  # as a killed run: no deploy; the last evaluation stands
        last = next((h["top1"] for h in reversed(history) if "top1" in h), None)
        result = {"top1": last, "top1_deployed": None, "prediction_agreement": None}
    else:
        result = _deploy_and_compare(final.backbone if face else final, test_set, targets,
                                     pairs, env, args, out_dir)
    result.update(
        task=args.task, model=args.model, data=splits.name, recipe=args.recipe,
        world_size=env.world_size, device=str(env.device), start_epoch=start_epoch,
        epochs=args.epochs, epochs_done=start_epoch + len(history), stopped_early=stopped,
        global_batch=global_batch, lr=scaled_lr(recipe, global_batch),
        train_images=len(train_set), test_images=len(test_set), img_size=img_size,
        ema=ema is not None, history=history, checkpoint=str(train_path),
        param_digest_start=digest_start, param_digests=digests,
        ranks_in_sync=len(set(digests)) == 1,
        seconds=round(time.perf_counter() - start_time, 2),
    )
    return result


def _score(model: nn.Module, test_set: Any, targets: list[int], pairs: np.ndarray | None,
           env: DistEnv, args: Any, face: bool) -> float:
    if face:
        backbone = model.backbone  # type: ignore[union-attr]
        scores = verification_scores(backbone, test_set, pairs, env, args.eval_batch_size)
        return best_threshold_accuracy(scores, pairs[:, 2])[0]  # type: ignore[index]
    return top1(predict(model, test_set, env, args.eval_batch_size, args.workers), targets)


def _deploy_and_compare(model: nn.Module, test_set: Any, targets: list[int],
                        pairs: np.ndarray | None, env: DistEnv, args: Any,
                        out_dir: Path) -> dict[str, Any]:
    """Deploy ``model`` with ``reparam.deploy`` and evaluate both forms on the whole test split."""
    import reparam

    model.eval()
    example = torch.stack([test_set[i][0] for i in range(min(2, len(test_set)))]).to(env.device)
    t0 = time.perf_counter()
    deployed = reparam.deploy(model, example)
    deploy_seconds = time.perf_counter() - t0
    out: dict[str, Any] = {"deploy_seconds": round(deploy_seconds, 2)}
    if pairs is None:
        logits = predict(model, test_set, env, args.eval_batch_size, args.workers)
        logits_d = predict(deployed, test_set, env, args.eval_batch_size, args.workers)
        out.update(
            top1=top1(logits, targets), top1_deployed=top1(logits_d, targets),
            prediction_agreement=float((logits.argmax(1) == logits_d.argmax(1)).mean()),
            max_abs_logit_diff=max_abs_diff(logits, logits_d),
        )
    else:
        from sklearn.metrics import roc_auc_score

        same = pairs[:, 2]
        s = verification_scores(model, test_set, pairs, env, args.eval_batch_size)
        s_d = verification_scores(deployed, test_set, pairs, env, args.eval_batch_size)
        acc, thr = best_threshold_accuracy(s, same)
        out.update(
            top1=acc, top1_deployed=float(((s_d >= thr) == (same == 1)).mean()),
            prediction_agreement=float(((s >= thr) == (s_d >= thr)).mean()),
            threshold=thr, auc=float(roc_auc_score(same, s)),
            auc_deployed=float(roc_auc_score(same, s_d)), pairs=len(pairs),
            max_abs_similarity_diff=max_abs_diff(s, s_d),
        )
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    out.update(params=n(model), params_deployed=n(deployed))
    deployed_path = out_dir / ckpt.DEPLOYED_NAME
    if env.is_main:
        ckpt.atomic_save(
            {"model": args.model, "model_kwargs": dict(args.model_kwargs), "task": args.task,
             "state_dict": deployed.state_dict()},
            deployed_path,
        )
    barrier()
    out["deployed_checkpoint"] = str(deployed_path)
    return out
