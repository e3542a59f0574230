"""The LSTM quantile forecaster: torch module, seeded training, ``bae train lstm``.

One model serves every series: inputs are per-window normalised features
(``models.features``), outputs are (batch, 3, HORIZON) normalised quantiles p50/p90/p99,
made non-crossing by construction (p90 = p50 + softplus, p99 = p90 + softplus). Training
minimises the pinball loss averaged over quantiles and steps, with Adam, in one thread,
deterministic algorithms and a fixed seed: the same command gives the same weights on
one machine (and outputs equal to ~1e-5 across x86 machines).
"""

from __future__ import annotations

import shlex
import sys
import time

import numpy as np

from models import features as F

HIDDEN = 64
LAYERS = 1


def _torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError("training needs PyTorch: pip install 'bae[train]'") from e
    return torch


def make_model(hidden: int = HIDDEN, n_features: int = F.N_FEATURES,
               horizon: int = F.HORIZON):
    """A fresh ``QuantileLSTM`` (built on first call, so importing this module needs no
    torch)."""
    torch = _torch()
    nn = torch.nn

    class QuantileLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.horizon = horizon
            self.lstm = nn.LSTM(n_features, hidden, num_layers=LAYERS, batch_first=True)
            self.head = nn.Linear(hidden, len(F.QUANTILES) * horizon)

        def forward(self, x):
            _out, (h, _c) = self.lstm(x)
            r = self.head(h[-1]).reshape(-1, len(F.QUANTILES), self.horizon)
            p50 = r[:, 0:1]
            p90 = p50 + nn.functional.softplus(r[:, 1:2])
            p99 = p90 + nn.functional.softplus(r[:, 2:3])
            return torch.cat([p50, p90, p99], 1)

    return QuantileLSTM()


def pinball(q, y, quantiles=F.QUANTILES):
    """Mean pinball loss of q[b, Q, H] against y[b, H]."""
    torch = _torch()
    tau = torch.tensor(quantiles, dtype=q.dtype).reshape(1, -1, 1)
    d = y[:, None, :] - q
    return torch.maximum(tau * d, (tau - 1) * d).mean()


def seed_everything(seed: int, threads: int = 1) -> None:
    torch = _torch()
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def train(x: np.ndarray, y: np.ndarray, *, epochs: int = 12, seed: int = 0,
          threads: int = 1, batch_size: int = 256, lr: float = 1e-3, progress=None):
    """Fit a fresh model on features x[N, WINDOW, F] and normalised targets y[N, H].
    Returns (model in eval mode, final-epoch mean loss)."""
    torch = _torch()
    seed_everything(seed, threads)
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    n = len(xt)
    loss_epoch = float("nan")
    if progress is None:
        progress = sys.stderr.isatty()
    bar = _bar(epochs * ((n + batch_size - 1) // batch_size), progress)
    for _epoch in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad()
            loss = pinball(model(xt[idx]), yt[idx])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += loss.item() * len(idx)
            bar.update(1)
        sched.step()
        loss_epoch = total / n
        bar.set_postfix(loss=f"{loss_epoch:.4f}")
    bar.close()
    model.eval()
    return model, loss_epoch


def _bar(total: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, disable=not enabled, file=sys.stderr, unit="batch",
                desc="train lstm")


# ---------------------------------------------------------------------------- CLI

def train_command(args) -> str:
    """The canonical ``bae train lstm`` command line of parsed ``args``."""
    a = [f"--csv {shlex.quote(c)}" for c in args.csv or []]
    if args.from_journal:
        a.append(f"--from-journal {shlex.quote(str(args.from_journal))}")
    a += [f"--out {shlex.quote(str(args.out))}", f"--epochs {args.epochs}",
          f"--seed {args.seed}", f"--threads {args.threads}",
          f"--batch-size {args.batch_size}", f"--lr {args.lr}",
          f"--train-fraction {args.train_fraction}"]
    return "bae train lstm " + " ".join(a)


def cmd_train_lstm(args) -> int:
    from bae_core.errors import ConfigError
    from models import data, export
    if not args.csv and not args.from_journal:
        raise ConfigError("--csv/--from-journal", "no training data given",
                          "give --csv FILE[:COLUMN] (repeatable) or --from-journal DIR")
    if not 0 < args.train_fraction <= 1:
        raise ConfigError("--train-fraction", f"{args.train_fraction} is not in (0, 1]",
                          "give the share of each series to train on, e.g. 0.5")
    series = [data.read_csv_series(s) for s in args.csv or []]
    source = "the CSV files"
    if args.from_journal:
        series += data.read_journal_series(args.from_journal)
        source = f"journal {args.from_journal}"
    x, y, counts = data.training_set(series, args.train_fraction, source)
    t0 = time.perf_counter()
    model, loss = train(x, y, epochs=args.epochs, seed=args.seed, threads=args.threads,
                        batch_size=args.batch_size, lr=args.lr)
    fit_s = time.perf_counter() - t0
    command = train_command(args)
    diff = export.export_onnx(model, args.out, command=command,
                              extra={"train_windows": str(len(x)),
                                     "train_series": ";".join(f"{k}={v}" for k, v in counts.items()),
                                     "train_loss": f"{loss:.6f}", "seed": str(args.seed),
                                     "epochs": str(args.epochs)})
    print(f"wrote {args.out}: {len(x)} windows from {len(counts)} series, {args.epochs} "
          f"epochs in {fit_s:.1f} s, final pinball loss {loss:.4f}, onnxruntime parity "
          f"max |diff| {diff:.2e}", file=sys.stderr)
    return 0


def add_train_parser(subparsers) -> None:
    """Register ``train lstm ...``."""
    tr = subparsers.add_parser("train", help="train a learned forecaster").add_subparsers(
        dest="what", required=True)
    p = tr.add_parser("lstm", help="train the LSTM quantile forecaster and export it to ONNX")
    p.add_argument("--csv", action="append", metavar="FILE[:COLUMN]",
                   help="a 5-minute series (column default 'value'; a 'timestamp' column "
                   "regrids gaps); repeat for more series")
    p.add_argument("--from-journal", dest="from_journal", metavar="DIR",
                   help="BAE journal: REQUEST events per service in 5-minute counts")
    p.add_argument("--out", required=True, help="ONNX file to write")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: reproducible)")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-fraction", dest="train_fraction", type=float, default=0.5,
                   help="train on the first share of each series (default 0.5: "
                   "`bae eval forecast` evaluates from the middle on)")
    p.set_defaults(fn=cmd_train_lstm)

