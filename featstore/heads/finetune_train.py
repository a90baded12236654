"""The fine-tuning loop (torch, fit time only): the pretrained layers above a cut plus a linear layer, trained on
stored activations.

AdamW with layer-wise learning rates (the new linear layer at `lr`, the pretrained layers at `lr * top_lr_ratio`),
label smoothing, a seeded stratified validation part of the data given (view 0 only) for early stopping on its
loss, the weights of the best epoch kept. Each epoch shows every training item once, through one of its stored
views drawn at random (view 0 is the plain preprocessing, the others augmented), so stored augmentations are used
without the epoch growing with the number of views. Batch norm keeps its pretrained statistics (a few hundred
examples estimate them worse than ImageNet did); its scale and shift are trained.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class TuneSettings:
    lr: float = 1e-3                 # the linear layer's learning rate
    top_lr_ratio: float = 0.5        # the pretrained layers' rate relative to it (layer-wise rates)
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    dropout: float = 0.2
    batch_size: int = 32
    max_epochs: int = 30
    patience: int = 5
    warmup_epochs: int = 1           # epochs training the linear layer alone first (the top frozen)
    validation_fraction: float = 0.15
    seed: int = 0


class Tuned:
    """What training returns: the tuned top (torch, eval mode), the linear layer's weight (d, classes) and bias,
    and the training report."""

    def __init__(self, top, weight: np.ndarray, bias: np.ndarray, report: dict):
        self.top, self.weight, self.bias, self.report = top, weight, bias, report


def train(top, x: np.ndarray, mask: np.ndarray | None, yi: np.ndarray, n_classes: int, settings: TuneSettings,
          log=lambda _m: None) -> Tuned:
    """Fine-tune `top` (a torch module: activations[, mask] -> pooled features) with a new linear layer on x
    (n, views, *shape) float16/32 and class indices yi (n,)."""
    import torch
    from sklearn.model_selection import train_test_split

    t0, cpu0 = time.perf_counter(), time.process_time()
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    strat = yi if np.bincount(yi).min() >= 2 else None
    n_val = max(int(round(settings.validation_fraction * len(yi))), n_classes if strat is not None else 1)
    tr, va = train_test_split(np.arange(len(yi)), test_size=n_val, random_state=settings.seed, stratify=strat)
    dim = _out_dim(top, x, mask)
    linear = torch.nn.Linear(dim, n_classes)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    drop = torch.nn.Dropout(settings.dropout)
    opt = torch.optim.AdamW([{"params": [p for p in top.parameters() if p.requires_grad],
                              "lr": settings.lr * settings.top_lr_ratio},
                             {"params": linear.parameters(), "lr": settings.lr}], weight_decay=settings.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    plain_loss = torch.nn.CrossEntropyLoss()
    y_t = torch.from_numpy(yi.astype(np.int64))
    views = x.shape[1]
    best, best_state, best_epoch, waited, epoch = np.inf, None, 0, 0, 0
    history = []
    for epoch in range(1, settings.max_epochs + 1):
        frozen = epoch <= settings.warmup_epochs
        _train_mode(top, not frozen)
        opt.param_groups[0]["lr"] = 0.0 if frozen else settings.lr * settings.top_lr_ratio
        order = rng.permutation(tr)
        view = rng.integers(0, views, len(order))
        for start in range(0, len(order), settings.batch_size):
            idx, v = order[start:start + settings.batch_size], view[start:start + settings.batch_size]
            xb = torch.from_numpy(np.asarray(x[idx, v], dtype=np.float32))
            mb = None if mask is None else torch.from_numpy(np.asarray(mask[idx], dtype=np.int64))
            if frozen:
                with torch.no_grad():
                    feats = _forward(top, xb, mb)
            else:
                feats = _forward(top, xb, mb)
            opt.zero_grad()
            loss_fn(linear(drop(feats)), y_t[idx]).backward()
            opt.step()
        val_loss, val_acc = _validate(top, linear, x, mask, va, y_t, plain_loss, settings.batch_size)
        history.append({"epoch": epoch, "validation_loss": round(val_loss, 5),
                        "validation_accuracy": round(val_acc, 4)})
        log(f"epoch {epoch}: validation loss {val_loss:.4f}, accuracy {val_acc:.1%} "
            f"({time.perf_counter() - t0:.1f} s)")
        if val_loss < best - 1e-4:
            best, best_epoch, waited = val_loss, epoch, 0
            best_state = ({k: v.detach().clone() for k, v in top.state_dict().items()},
                          {k: v.detach().clone() for k, v in linear.state_dict().items()})
        else:
            waited += 1
            if waited >= settings.patience:
                break
    top.load_state_dict(best_state[0])
    linear.load_state_dict(best_state[1])
    top.eval()
    report = {"param": "epochs", "chosen": best_epoch, "ran": epoch, "validation_loss": round(best, 6),
              "validation_fraction": settings.validation_fraction, "n_validation": int(len(va)),
              "method": f"early stopping on a {settings.validation_fraction:.0%} validation part (view 0)",
              "views": int(views), "threads": torch.get_num_threads(), "history": history,
              "settings": vars(settings).copy(), "seconds": round(time.perf_counter() - t0, 3),
              "cpu_seconds": round(time.process_time() - cpu0, 3)}     # all threads: a measure free of others' load
    return Tuned(top, linear.weight.detach().numpy().T.copy(), linear.bias.detach().numpy().copy(), report)


def _forward(top, xb, mb):
    return top(xb) if mb is None else top(xb, mb)


def _out_dim(top, x, mask) -> int:
    import torch

    top.eval()
    with torch.no_grad():
        xb = torch.from_numpy(np.asarray(x[:1, 0], dtype=np.float32))
        mb = None if mask is None else torch.from_numpy(np.asarray(mask[:1], dtype=np.int64))
        return int(_forward(top, xb, mb).shape[1])


def _train_mode(top, on: bool) -> None:
    """Dropout on while the top trains; batch norm always on its stored statistics."""
    import torch

    top.train(on)
    for m in top.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    for p in top.parameters():
        p.requires_grad_(True)


def _validate(top, linear, x, mask, va, y_t, loss_fn, batch: int) -> tuple[float, float]:
    import torch

    top.eval()
    logits = []
    with torch.no_grad():
        for start in range(0, len(va), batch):
            idx = va[start:start + batch]
            xb = torch.from_numpy(np.asarray(x[idx, 0], dtype=np.float32))
            mb = None if mask is None else torch.from_numpy(np.asarray(mask[idx], dtype=np.int64))
            logits.append(linear(_forward(top, xb, mb)))
        z = torch.cat(logits)
        yv = y_t[torch.from_numpy(va)]
        return float(loss_fn(z, yv)), float((z.argmax(1) == yv).float().mean())
