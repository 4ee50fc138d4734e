"""Train a defect classifier: ``defectstream train --data DIR --out RUN_DIR`` (or ``python -m models.train``).

A run directory holds:
  ``args.json``       every argument, defaults included
  ``split.json``      the exact train/val/test records (after de-duplication), so evaluation uses the same split
  ``best.pt``         serving checkpoint of the best validation macro-F1 (weights + metadata, weights_only-safe)
  ``last.pt``         resume state: model, optimizer, scheduler, EMA, epoch, args
  ``history.jsonl``   one line of metrics per epoch
  ``metrics.json``    final validation and test metrics of ``best.pt``
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader
from tqdm import tqdm

from models import data as ds
from models.checkpoint import ModelMeta, load_checkpoint, load_resume_state, save_atomically, save_checkpoint
from models.engines.torch_engine import select_device
from models.losses import CombinedLoss, class_alpha
from models.metrics import classification_report
from models.network import BACKBONES, DefectClassifier

log = logging.getLogger(__name__)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train a defect classifier", add_help=add_help)
    p.add_argument(
        "--data", required=True, type=Path, help="ImageFolder root, a folder with images/, or a CSV manifest"
    )
    p.add_argument("--out", required=True, type=Path, help="run directory to create (or resume in)")
    p.add_argument("--backbone", default="resnet50", choices=BACKBONES, help="backbone (default: resnet50)")
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="local torchvision state-dict file for the backbone (default: random init)",
    )
    p.add_argument("--input-size", type=int, default=128, help="square input size in pixels (default: 128)")
    p.add_argument("--epochs", type=int, default=60, help="maximum epochs (default: 60)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    p.add_argument("--opt", default="adamw", choices=["adamw", "adam", "sgd"], help="optimizer (default: adamw)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum, Nesterov (default: 0.9)")
    p.add_argument(
        "--zero-init-residual",
        action="store_true",
        help="ResNets: zero-init the last BN of each residual block (default: off)",
    )
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    p.add_argument("--weight-decay", type=float, default=0.05, help="weight decay (default: 0.05)")
    p.add_argument(
        "--sched", default="cosine", choices=["cosine", "step"], help="LR schedule after warm-up (default: cosine)"
    )
    p.add_argument("--warmup-epochs", type=int, default=3, help="linear warm-up epochs (default: 3)")
    p.add_argument("--step-size", type=int, default=20, help="step schedule: epochs per decay (default: 20)")
    p.add_argument("--loss-a", type=float, default=0.5, help="weight of CE in a*CE + (1-a)*focal (default: 0.5)")
    p.add_argument("--focal-gamma", type=float, default=2.0, help="focal gamma (default: 2.0)")
    p.add_argument(
        "--alpha",
        default="effective",
        choices=["effective", "inverse", "uniform"],
        help="per-class focal alpha (default: effective)",
    )
    p.add_argument("--label-smoothing", type=float, default=0.1, help="label smoothing (default: 0.1)")
    p.add_argument("--mixup-alpha", type=float, default=0.0, help="mixup Beta(a, a); 0 = off (default: 0)")
    p.add_argument("--cutmix-alpha", type=float, default=0.0, help="cutmix Beta(a, a); 0 = off (default: 0)")
    p.add_argument(
        "--ema-decay", type=float, default=0.0, help="EMA of weights per step, e.g. 0.999; 0 = off (default: 0)"
    )
    p.add_argument(
        "--augment", default="strong", choices=["strong", "light"], help="augmentation strength (default: strong)"
    )
    p.add_argument("--balanced", action="store_true", help="class-balanced sampling for rare defects (default: off)")
    p.add_argument(
        "--reencode",
        default="none",
        choices=ds.REENCODINGS,
        help="re-encode every image first so file format cannot leak the label (default: none)",
    )
    p.add_argument("--split", default="0.6,0.2,0.2", help="train,val,test fractions (default: 0.6,0.2,0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed for the split, init and sampling (default: 0)")
    p.add_argument(
        "--patience",
        type=int,
        default=20,
        help="early stop after this many epochs without val macro-F1 gain (default: 20)",
    )
    p.add_argument(
        "--tta", action="store_true", help="flip test-time augmentation in the final evaluation (default: off)"
    )
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default: 0)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads, 0 = torch default (default: 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default: auto)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument(
        "--ok-class", default="ok", help="class that means a good part, for detection rate/FPR (default: ok)"
    )
    return p


def code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _jsonable(args: argparse.Namespace) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


@torch.inference_mode()
def predict_probs(
    model: torch.nn.Module, dataset: ds.ImageDataset, device: str, batch_size: int = 64, tta: bool = False
) -> np.ndarray:
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    out = []
    for x, _ in loader:
        x = x.to(device)
        if device.startswith("cuda"):
            x = x.to(memory_format=torch.channels_last)
        p = torch.softmax(model(x).float(), 1)
        if tta:
            for dims in ((3,), (2,), (2, 3)):
                p = p + torch.softmax(model(torch.flip(x, dims)).float(), 1)
            p = p / 4
        out.append(p.cpu().numpy())
    return np.concatenate(out)


def _schedule(
    optimizer: torch.optim.Optimizer, args: argparse.Namespace, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    warm = max(1, args.warmup_epochs * steps_per_epoch)
    total = max(warm + 1, args.epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if args.sched == "step":
            return 0.1 ** ((step - warm) // (args.step_size * steps_per_epoch))
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / (total - warm)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _history_epoch(line: str) -> float:
    try:
        return json.loads(line)["epoch"]
    except (ValueError, KeyError, TypeError):  # a row torn by a kill mid-write
        return math.inf


def _drop_history_after(path: Path, epochs_done: int) -> None:
    """Keep the history of the epochs that ``last.pt`` holds: none for a new run, and on resume not the row of an
    epoch whose ``last.pt`` was never saved (the row is written first, and the resumed run does that epoch again)."""
    if not path.exists():
        return
    rows = path.read_text().splitlines()
    kept = [line for line in rows if _history_epoch(line) <= epochs_done]
    if not kept:
        path.unlink()
    elif len(kept) != len(rows):
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(path)  # a stop mid-write must not lose the rows of the epochs kept


def main(args: argparse.Namespace) -> dict[str, Any]:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = select_device(args.device)
    fractions = tuple(float(f) for f in args.split.split(","))

    split_path = out / "split.json"
    if args.resume and split_path.exists():
        splits = ds.load_split(split_path)
    else:
        records, dropped = ds.dedupe(ds.discover(args.data))
        if dropped:
            log.info("removed %d exact duplicates before splitting", len(dropped))
        splits = ds.stratified_split(records, fractions, seed=args.seed)  # type: ignore[arg-type]
        ds.save_split(split_path, splits)
    (out / "args.json").write_text(json.dumps(_jsonable(args), indent=2))
    class_names = sorted({r.label for recs in splits.values() for r in recs})
    all_records = [r for recs in splits.values() for r in recs]
    print(f"classes {class_names}; " + ", ".join(f"{s} {len(splits[s])}" for s in ds.SPLITS), flush=True)

    train_set = ds.ImageDataset(
        splits["train"],
        class_names,
        args.input_size,
        augment=ds.train_transforms(args.input_size, args.augment, seed=args.seed),
        reencode=args.reencode,
    )
    val_set = ds.ImageDataset(splits["val"], class_names, args.input_size, reencode=args.reencode)
    test_set = ds.ImageDataset(splits["test"], class_names, args.input_size, reencode=args.reencode)

    model = DefectClassifier(len(class_names), args.backbone, zero_init_residual=args.zero_init_residual)
    if args.weights:
        model.load_backbone_weights(args.weights)
    model.to(device)
    if device.startswith("cuda"):
        model = model.to(memory_format=torch.channels_last)
    counts = ds.class_counts(train_set.labels, len(class_names))
    criterion = CombinedLoss(args.loss_a, args.focal_gamma, class_alpha(counts, args.alpha), args.label_smoothing).to(
        device
    )
    if args.opt == "sgd":
        optimizer = torch.optim.SGD(
            model.parameters(), lr=args.lr, momentum=args.momentum, nesterov=True, weight_decay=args.weight_decay
        )
    else:
        opt_cls = torch.optim.AdamW if args.opt == "adamw" else torch.optim.Adam
        optimizer = opt_cls(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sampler = ds.balanced_sampler(train_set.labels, len(class_names), args.seed) if args.balanced else None
    generator = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(
        train_set,
        batch_size=args.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=True,
        num_workers=args.workers,
        generator=generator,
        persistent_workers=args.workers > 0,
        worker_init_fn=_seed_worker,
    )
    scheduler = _schedule(optimizer, args, len(loader))
    # use_buffers=True: BatchNorm running statistics are averaged with the weights; otherwise the EMA model would
    # keep the statistics of the random init.
    ema = (
        AveragedModel(model, multi_avg_fn=ema_with_warmup(args.ema_decay), use_buffers=True) if args.ema_decay else None
    )
    mix = _mixer(args, len(class_names))
    use_amp = device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, best_f1, best_epoch, stale, elapsed_before = 0, -1.0, -1, 0, 0.0
    if args.resume and (out / "last.pt").exists():
        state = load_resume_state(out / "last.pt", device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema"):
            ema.load_state_dict(state["ema"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        elapsed_before = state.get("elapsed_s", 0.0)
        start_epoch, best_f1, best_epoch, stale = (
            state["epoch"] + 1,
            state["best_f1"],
            state["best_epoch"],
            state["stale"],
        )
        print(f"resumed at epoch {start_epoch} (best val macro-F1 {best_f1:.4f} at epoch {best_epoch})", flush=True)
    _drop_history_after(out / "history.jsonl", start_epoch)

    meta_base = dict(
        class_names=class_names,
        backbone=args.backbone,
        input_size=args.input_size,
        args=_jsonable(args) | {"code_version": code_version(), "dataset_fingerprint": ds.fingerprint(all_records)},
    )
    started = time.perf_counter() - elapsed_before
    for epoch in range(start_epoch, args.epochs):
        # Every random draw of an epoch (shuffle, sampler, dropout, mixup, augmentation) derives from (seed, epoch),
        # so a resumed run continues exactly as the uninterrupted one would.
        epoch_seed = args.seed * 100_003 + epoch
        torch.manual_seed(epoch_seed)
        generator.manual_seed(epoch_seed)
        if sampler is not None:
            sampler.generator.manual_seed(epoch_seed)
        train_set.augment.set_random_seed(epoch_seed)
        model.train()
        losses = []
        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{args.epochs}",
            leave=False,
            mininterval=2.0,
            file=sys.stderr,
            disable=not sys.stderr.isatty(),
        )
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if device.startswith("cuda"):
                x = x.to(memory_format=torch.channels_last)
            target: torch.Tensor = y
            if mix is not None:
                x, target = mix(x, y)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                loss = criterion(model(x), target)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", refresh=False)
        scored = ema.module if ema is not None else model
        val_probs = predict_probs(scored, val_set, device)
        val = classification_report(val_probs, val_set.labels, class_names, args.ok_class)
        row = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)),
            "val_accuracy": val["accuracy"],
            "val_macro_f1": val["macro_f1"],
            "lr": optimizer.param_groups[0]["lr"],
            "elapsed_s": round(time.perf_counter() - started, 1),
        }
        with open(out / "history.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        improved = val["macro_f1"] > best_f1
        if improved:
            best_f1, best_epoch, stale = val["macro_f1"], epoch + 1, 0
            save_checkpoint(
                out / "best.pt",
                _plain(scored, len(class_names), args.backbone),
                ModelMeta(
                    **meta_base,
                    version=f"{out.name}-e{epoch + 1}",
                    metrics={"val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"]},
                ),
            )
        else:
            stale += 1
        print(
            f"epoch {epoch + 1:3d}  loss {row['train_loss']:.4f}  val acc {val['accuracy']:.4f}"
            f"  val macro-F1 {val['macro_f1']:.4f}"
            f"{'  *best*' if improved else ''}  ({row['elapsed_s']:.0f}s)",
            flush=True,
        )
        save_atomically(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "epoch": epoch,
                "best_f1": best_f1,
                "best_epoch": best_epoch,
                "stale": stale,
                "scaler": scaler.state_dict(),
                "elapsed_s": time.perf_counter() - started,
                "args": _jsonable(args),
            },
            out / "last.pt",
        )
        if stale >= args.patience:
            print(f"early stop: no val macro-F1 gain for {args.patience} epochs", flush=True)
            break
    train_seconds = time.perf_counter() - started

    best, meta = load_checkpoint(out / "best.pt")
    best.to(device)
    val = classification_report(predict_probs(best, val_set, device), val_set.labels, class_names, args.ok_class)
    test = classification_report(predict_probs(best, test_set, device), test_set.labels, class_names, args.ok_class)
    metrics = {
        "best_epoch": best_epoch,
        "train_seconds": round(train_seconds, 1),
        "device": device,
        "threads": torch.get_num_threads(),
        "val": val,
        "test": test,
    }
    if args.tta:  # reported beside, never instead of, the single-pass number the worker reproduces
        tta_probs = predict_probs(best, test_set, device, tta=True)
        metrics["test_tta"] = classification_report(tta_probs, test_set.labels, class_names, args.ok_class)
        print(
            f"test with flip TTA: accuracy {metrics['test_tta']['accuracy']:.4f},"
            f" macro-F1 {metrics['test_tta']['macro_f1']:.4f}"
        )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    meta.metrics.update(
        {"test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"], "train_seconds": round(train_seconds, 1)}
    )
    save_checkpoint(out / "best.pt", best.cpu(), meta)
    print(
        f"best epoch {best_epoch}: test accuracy {test['accuracy']:.4f}, macro-F1 {test['macro_f1']:.4f} "
        f"({len(test_set)} images, {train_seconds / 60:.1f} min training on {device})",
        flush=True,
    )
    return metrics


def _seed_worker(worker_id: int) -> None:
    """DataLoader workers: distinct, reproducible augmentation streams (forks would share one otherwise)."""
    info = torch.utils.data.get_worker_info()
    if info is not None and info.dataset.augment is not None:
        info.dataset.augment.set_random_seed((torch.initial_seed() + worker_id) % 2**32)


def ema_with_warmup(decay: float):
    """EMA update whose decay ramps up as min(decay, (1 + n) / (10 + n)) over the first updates.

    Without the ramp, an EMA of a network trained from scratch stays a blend of random-init and trained weights
    for hundreds of steps, and that blend predicts a single class (seen on NEU: 16.7% val accuracy at epoch 4 while
    the live model was at 53%)."""

    @torch.no_grad()
    def update(ema_params: list[torch.Tensor], params: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        if torch.is_floating_point(ema_params[0]):
            torch._foreach_lerp_(ema_params, params, 1.0 - d)
        else:  # integer buffers such as BatchNorm's num_batches_tracked
            for e, p in zip(ema_params, params, strict=True):
                e.copy_(p)

    return update


def _mixer(args: argparse.Namespace, num_classes: int):
    """Mixup / CutMix on a batch, returning soft targets (torchvision.transforms.v2)."""
    if not (args.mixup_alpha or args.cutmix_alpha):
        return None
    from torchvision.transforms import v2

    choices = []
    if args.mixup_alpha:
        choices.append(v2.MixUp(alpha=args.mixup_alpha, num_classes=num_classes))
    if args.cutmix_alpha:
        choices.append(v2.CutMix(alpha=args.cutmix_alpha, num_classes=num_classes))
    op = v2.RandomChoice(choices)
    return lambda x, y: op(x, y)


def _plain(model: torch.nn.Module, num_classes: int, backbone: str) -> DefectClassifier:
    """A plain DefectClassifier with the scored weights, on CPU (what a checkpoint stores)."""
    plain = DefectClassifier(num_classes, backbone)
    plain.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
    return plain


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(get_args_parser().parse_args())
