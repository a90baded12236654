"""Small torch heads: linear and one-hidden-layer MLP, trained with early stopping (CPU, or CUDA when present).

torch is imported inside fit() only: predicting with a stored torch head runs its Program in numpy (or ONNX),
so featstore's predict path never needs torch. The number of epochs is chosen on a validation part of the
data given to fit() (early stopping with patience), and the weights of the best epoch are kept.
"""
from __future__ import annotations

import time

import numpy as np

from .base import ProgramClassifier, ProgramRegressor, standardiser
from .program import Step, dense, standardise


class _TorchTrainer:
    """Shared training loop; `hidden=0` is a linear model."""

    def _train(self, X: np.ndarray, target: np.ndarray, n_out: int, loss_name: str, strat: np.ndarray | None):
        import torch
        from sklearn.model_selection import train_test_split

        t0 = time.perf_counter()
        torch.manual_seed(self.seed)
        device = "cuda" if self.device == "auto" and torch.cuda.is_available() else \
            ("cpu" if self.device == "auto" else self.device)
        mean, scale = standardiser(X)
        Z = ((X - mean) / scale).astype(np.float32)
        idx = np.arange(len(Z))
        tr, va = train_test_split(idx, test_size=self.validation_fraction, random_state=self.seed, stratify=strat)
        Xt = torch.from_numpy(Z).to(device)
        yt = torch.from_numpy(target).to(device)
        layers = ([torch.nn.Dropout(self.dropout), torch.nn.Linear(Z.shape[1], self.hidden), torch.nn.ReLU(),
                   torch.nn.Dropout(self.dropout), torch.nn.Linear(self.hidden, n_out)] if self.hidden
                  else [torch.nn.Dropout(self.dropout), torch.nn.Linear(Z.shape[1], n_out)])
        model = torch.nn.Sequential(*layers).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = torch.nn.CrossEntropyLoss() if loss_name == "ce" else torch.nn.MSELoss()
        gen = torch.Generator().manual_seed(self.seed)
        tr_t, va_t = torch.from_numpy(tr).to(device), torch.from_numpy(va).to(device)
        best, best_state, best_epoch, waited = np.inf, None, 0, 0
        for epoch in range(1, self.max_epochs + 1):
            model.train()
            for batch in tr_t[torch.randperm(len(tr_t), generator=gen).to(device)].split(self.batch_size):
                opt.zero_grad()
                loss_fn(model(Xt[batch]), yt[batch]).backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                val = float(loss_fn(model(Xt[va_t]), yt[va_t]))
            if val < best - 1e-4:
                best, best_epoch, waited = val, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                waited += 1
                if waited >= self.patience:
                    break
        model.load_state_dict(best_state)
        linears = [m for m in model if isinstance(m, torch.nn.Linear)]
        arrays = [(m.weight.detach().cpu().numpy().T, m.bias.detach().cpu().numpy()) for m in linears]
        self.search_ = {"param": "epochs", "chosen": best_epoch, "ran": epoch, "validation_loss": round(best, 6),
                        "validation_fraction": self.validation_fraction, "device": device,
                        "method": f"early stopping on a {self.validation_fraction:.0%} validation part",
                        "seconds": round(time.perf_counter() - t0, 4)}
        self.epochs_ = best_epoch
        return mean, scale, arrays


def _steps(mean, scale, arrays, head: list[Step]) -> list[Step]:
    steps = [standardise(mean, scale)]
    for i, (w, b) in enumerate(arrays):
        steps += [dense(w, b)] + ([Step("relu")] if i < len(arrays) - 1 else [])
    return steps + head


class TorchHead(_TorchTrainer, ProgramClassifier):
    """Linear (hidden=0) or one-hidden-layer MLP classifier, AdamW + early stopping on a stratified validation part."""

    def __init__(self, hidden=0, dropout=0.0, lr=1e-3, weight_decay=1e-2, batch_size=64, max_epochs=200,
                 patience=10, validation_fraction=0.15, seed=0, device="auto"):
        self.hidden = hidden
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.seed = seed
        self.device = device

    def _fit(self, X, yi, n_classes):
        strat = yi if np.bincount(yi).min() >= 2 else None
        mean, scale, arrays = self._train(X, yi.astype(np.int64), n_classes, "ce", strat)
        return _steps(mean, scale, arrays, [Step("softmax")])


class TorchMLPRegressor(_TorchTrainer, ProgramRegressor):
    """One-hidden-layer MLP for a numeric target (trained on the standardised target, rescaled back)."""

    def __init__(self, hidden=256, dropout=0.1, lr=1e-3, weight_decay=1e-2, batch_size=64, max_epochs=300,
                 patience=15, validation_fraction=0.15, seed=0, device="auto"):
        self.hidden = hidden
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.seed = seed
        self.device = device

    def _fit(self, X, y):
        y_mean, y_std = float(y.mean()), float(y.std()) or 1.0
        t = ((y - y_mean) / y_std).astype(np.float32)[:, None]
        mean, scale, arrays = self._train(X, t, 1, "mse", None)
        w, b = arrays[-1]
        arrays[-1] = (w * y_std, b * y_std + y_mean)
        return _steps(mean, scale, arrays, [])
