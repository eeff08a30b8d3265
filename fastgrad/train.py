"""Training: `fit(model, data, ...)` and the command line `python -m fastgrad.train` (`fastgrad-train`).

`fit` runs mini-batch training of a classifier with a softmax (or SVM) loss plus CS231n's L2 term and
returns the loss and accuracy history. The command line trains an MLP (by default on the bundled
digits, in a few seconds), prints train/val/test accuracy and writes the checkpoint, the history and
a PNG of the curves into --out.

>>> from fastgrad import data, nn, train
>>> splits = data.load("digits", seed=0)
>>> model = nn.MLP([64, 100, 10], seed=0)
>>> history = train.fit(model, splits, optimizer="adam", lr=1e-3, epochs=10, seed=0)   # doctest: +SKIP
>>> history.val_acc[-1]                                                                # doctest: +SKIP
0.97...
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import checkpoint as C
from . import data as D
from . import functional as F
from . import nn, optim
from ._io import atomic_write, check_writable_dir
from .generator import Generator
from .autograd import no_grad
from .capture import capture
from .threads import MAX_THREADS, get_num_threads, set_num_threads

__all__ = ["History", "fit", "accuracy", "make_optimizer", "make_scheduler", "OPTIMIZERS", "SCHEDULERS",
           "LOSSES", "main"]

#: optimizer name -> (constructor taking params, lr and weight decay, default lr)
OPTIMIZERS = {
    "sgd": (lambda params, lr, wd=0.0: optim.SGD(params, lr, weight_decay=wd), 1e-1),
    "momentum": (lambda params, lr, wd=0.0: optim.SGD(params, lr, momentum=0.9, weight_decay=wd), 1e-2),
    "rmsprop": (lambda params, lr, wd=0.0: optim.RMSProp(params, lr, weight_decay=wd), 1e-3),
    "adam": (lambda params, lr, wd=0.0: optim.Adam(params, lr, weight_decay=wd), 1e-3),
    "adamw": (lambda params, lr, wd=0.0: optim.AdamW(params, lr, weight_decay=wd), 1e-3),
}

SCHEDULERS = ("none", "step", "cosine", "exponential")

LOSSES = {"softmax": F.softmax_cross_entropy, "svm": F.svm_loss}


class TrainingError(RuntimeError):
    """Training cannot go on (the loss became NaN or infinite)."""


@dataclass
class History:
    """What `fit` records: the loss of every step, and per epoch the mean loss and the accuracies."""

    loss: list = field(default_factory=list)
    epoch_loss: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    val_acc: list = field(default_factory=list)
    seconds: float = 0.0


def make_optimizer(name: str, params, lr: float | None = None, weight_decay: float = 0.0) -> optim.Optimizer:
    """An optimizer by name ("sgd", "momentum" = SGD with momentum 0.9, "rmsprop", "adam", "adamw").

    lr defaults to a value that suits the name (see `OPTIMIZERS`); weight_decay is L2 decay added to
    the gradient, except for adamw where it is decoupled.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    make, default_lr = OPTIMIZERS[name]
    return make(params, default_lr if lr is None else lr, weight_decay)


def make_scheduler(name, opt: optim.Optimizer, epochs: int, step_size: int | None = None,
                   gamma: float | None = None):
    """A per-epoch lr scheduler by name: "step" (x gamma, default 0.1, every step_size epochs,
    default max(1, epochs // 3)), "cosine" (to 0 over `epochs`), "exponential" (x gamma, default
    0.9, every epoch); None or "none" for no scheduler."""
    if name in (None, "none"):
        return None
    if name == "step":
        return optim.StepLR(opt, step_size or max(1, epochs // 3), 0.1 if gamma is None else gamma)
    if name == "cosine":
        return optim.CosineAnnealingLR(opt, T_max=epochs)
    if name == "exponential":
        return optim.ExponentialLR(opt, 0.9 if gamma is None else gamma)
    raise ValueError(f"unknown scheduler {name!r}; choose from {', '.join(SCHEDULERS)}")


def _generators(model) -> dict:
    """Every fastgrad/numpy Generator a module of `model` draws from (dropout), by module path."""
    found, seen = {}, set()
    for name, m in nn._named_modules(model):
        g = getattr(m, "generator", None)
        if isinstance(g, (Generator, np.random.Generator)) and id(g) not in seen:
            seen.add(id(g))
            found[f"module:{name}"] = g
    return found


def accuracy(model, X, y, batch_size: int = 1000) -> float:
    """The fraction of rows of X (N, D) whose highest score is the label y (N,), without recording."""
    if len(X) == 0:
        return float("nan")
    correct = 0
    with no_grad():
        for start in range(0, len(X), batch_size):
            scores = model(X[start:start + batch_size]).data
            correct += int(np.sum(np.argmax(scores, axis=1) == y[start:start + batch_size]))
    return correct / len(X)


def _arrays(data):
    """(X_train, y_train, X_val, y_val) from Splits, or from a tuple of 2 or 4 arrays."""
    if isinstance(data, D.Splits):
        return data.X_train, data.y_train, data.X_val, data.y_val
    if isinstance(data, (tuple, list)) and len(data) in (2, 4):
        X, y, *val = data
        return (X, y, *val) if val else (X, y, X[:0], y[:0])
    raise TypeError("fit: data must be fastgrad.data.Splits or a tuple (X_train, y_train[, X_val, y_val])")


def fit(model, data, optimizer="adam", lr=None, epochs: int = 10, batch_size: int = 64, reg: float = 0.0,
        loss: str = "softmax", seed: int = 0, lr_decay: float = 1.0, acc_samples: int = 2000,
        progress: bool = False, distributed=None, weight_decay: float = 0.0, scheduler=None, checkpoint=None,
        resume=None, on_epoch=None, eager: bool = False) -> History:
    """Train `model` on `data` with mini-batch gradient descent; returns its `History`.

    Each step draws a shuffled batch X (B, D), y (B,) and minimises
        L = loss(model(X), y) + 0.5 * reg * sum of W**2 over the weights,
    then `optimizer` (a name for `make_optimizer`, or an Optimizer over model.parameters()) updates
    the parameters. After every epoch the learning rate is multiplied by `lr_decay` and the train
    accuracy (on a fixed sample of at most `acc_samples` training examples) and the validation
    accuracy are recorded. `seed` fixes the batch order: the same seeded model, data and arguments
    give the same losses to the last digit. `progress` shows a tqdm bar with loss and accuracy.
    `distributed`: a `fastgrad.distributed.DataParallel` over `model` (or True for one on all MPI
    ranks): every rank runs `fit` with the same arguments and data, takes its share of each global
    batch of `batch_size` rows, and all ranks apply the same update (see fastgrad.distributed); the
    accuracies are counted across ranks and only rank 0 shows progress.

    weight_decay goes to an optimizer given by name; scheduler: an LRScheduler over the optimizer,
    or a name for `make_scheduler`, stepped after every epoch. checkpoint: a path written (atomically)
    at the end of every epoch with the model and its buffers, the optimizer, the scheduler, the
    epoch, the history and every RNG state; resume: such a path to continue from, so that a run
    resumed after epoch k gives the same losses as one that never stopped. on_epoch(epoch, history)
    is called after each epoch, before its checkpoint is written.

    The loss and its gradients are computed by a captured step (`fastgrad.capture`: recorded on
    the first batch of each shape, then replayed in C), giving the same numbers as the eager step;
    eager=True runs every step eagerly (a model the capture cannot replay, e.g. with dropout or
    batch norm, runs eagerly anyway, after one CaptureWarning saying why). Under `distributed`
    every step is eager.

    Raises ValueError for bad arguments and TrainingError when the loss or a parameter stops being
    finite (NaN or infinite), naming the epoch and the step.
    """
    X, y, X_val, y_val = _arrays(data)
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"fit: {name} must be a positive integer, got {v!r}")
    if not reg >= 0:
        raise ValueError(f"fit: reg must be >= 0, got {reg}")
    if not 0 < lr_decay <= 1:
        raise ValueError(f"fit: lr_decay must be in (0, 1], got {lr_decay}")
    if loss not in LOSSES:
        raise ValueError(f"fit: unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
    loss_fn = LOSSES[loss]
    dp = None if distributed is None or distributed is False else _data_parallel(
        model, distributed, (X, y, X_val, y_val, [epochs, batch_size, seed, acc_samples]))
    opt = (make_optimizer(optimizer, model.parameters(), lr, weight_decay) if isinstance(optimizer, str)
           else optimizer)
    sched = make_scheduler(scheduler, opt, epochs) if scheduler is None or isinstance(scheduler, str) else scheduler

    rng = np.random.default_rng(seed)
    sample = rng.permutation(len(X))[:acc_samples] if len(X) > acc_samples else slice(None)
    X_acc, y_acc = X[sample], y[sample]
    steps_per_epoch = math.ceil(len(X) / batch_size)
    history = History()
    generators = {"data": rng, **_generators(model)}
    first = 1
    if resume is not None:
        meta = C.load(resume, model, opt, sched, generators)
        first = meta["step"] + 1
        history = History(**meta["extra"]["history"])
    bar = _progress_bar((epochs - first + 1) * steps_per_epoch, progress and (dp is None or dp.rank == 0))
    acc = accuracy if dp is None else dp.accuracy

    def step_loss(Xb, yb):
        L = loss_fn(model(Xb), yb)
        return L + model.l2(reg) if reg else L

    def loss_and_gradients(Xb, yb):
        opt.zero_grad()
        L = step_loss(Xb, yb)
        L.backward()
        return L

    # the optimizer steps outside the captured part: the loss is checked before the weights change
    captured = None if eager or dp is not None else capture(loss_and_gradients)

    start_time = time.perf_counter() - history.seconds
    named = list(model.named_parameters())
    model.train()
    # an exploding loss is reported below as a TrainingError, not as NumPy overflow warnings
    with np.errstate(over="ignore", invalid="ignore"), contextlib.closing(bar):
        for epoch in range(first, epochs + 1):
            total = 0.0
            for Xb, yb in D.minibatches(X, y, batch_size, rng=rng):
                if captured is not None:  # zero_grad, forward and backward, replayed
                    value = captured(Xb, yb).item()
                elif dp is None:
                    opt.zero_grad()
                    L = step_loss(Xb, yb)
                    value = L.item()
                else:  # this rank's share of the batch, then one Allreduce of gradients and loss
                    opt.zero_grad()
                    value = dp.loss_and_gradients(step_loss, Xb, yb)
                if not math.isfinite(value):  # checked before the step: the weights stay as they were
                    raise TrainingError(
                        f"the loss became {value} at epoch {epoch}, step {len(history.loss) + 1}; "
                        "lower the learning rate or check the data for NaN or infinite values"
                    )
                if captured is None and dp is None:
                    L.backward()
                opt.step()
                history.loss.append(value)
                total += value
                bar.update(1)
            # once per epoch: a sum per parameter cost ~25 us against a ~520 us step of MLP
            # [64, 256, 10] at batch 32 (measured on a loaded machine); a NaN weight makes the next
            # loss NaN anyway, and this catches the last steps, whose loss no longer shows it
            bad = _non_finite_parameter(named)
            if bad is not None:
                raise TrainingError(
                    f"the parameter {bad} became NaN or infinite in epoch {epoch} (by step "
                    f"{len(history.loss)}); lower the learning rate or check the data for NaN or "
                    "infinite values"
                )
            if lr_decay != 1.0:
                opt.lr *= lr_decay
            if sched is not None:
                sched.step()
            model.eval()
            history.epoch_loss.append(total / steps_per_epoch)
            history.train_acc.append(acc(model, X_acc, y_acc))
            history.val_acc.append(acc(model, X_val, y_val))
            model.train()
            bar.set_postfix(epoch=epoch, loss=f"{history.epoch_loss[-1]:.4f}",
                            train=f"{history.train_acc[-1]:.3f}", val=f"{history.val_acc[-1]:.3f}")
            if on_epoch is not None:  # first: a report that cannot be printed stops the run before it writes
                on_epoch(epoch, history)
            if checkpoint is not None:
                history.seconds = time.perf_counter() - start_time
                C.save(checkpoint, model, opt, sched, step=epoch, generators=generators,
                       extra={"history": asdict(history)})
    model.eval()
    history.seconds = time.perf_counter() - start_time
    return history


def _non_finite_parameter(named):
    """The name of the first parameter holding a NaN or an infinity, else None.

    One sum per parameter (no temporary): a NaN or an infinity makes it non-finite; only then is the
    parameter searched, so that a finite sum that overflowed is not taken for divergence.
    """
    for name, p in named:
        if not math.isfinite(np.add.reduce(p.data, axis=None)) and not np.isfinite(p.data).all():
            return name
    return None


def _data_parallel(model, distributed, arrays):
    """The DataParallel of `fit(..., distributed=...)`, after checking every rank got the same data."""
    from . import distributed as dist

    dp = dist.DataParallel(model) if distributed is True else distributed
    if not isinstance(dp, dist.DataParallel) or dp.model is not model:
        raise ValueError("fit: distributed must be True or a fastgrad.distributed.DataParallel of the model")
    dp.check_same(*arrays, what="training data or fit arguments")
    return dp


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="step", dynamic_ncols=True, leave=True)


def plot_history(history: History, path) -> bool:
    """Draw loss (per step) and train/val accuracy (per epoch) into a PNG; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(history.loss, lw=0.6, alpha=0.6, label="step")
    steps = len(history.loss) / max(len(history.epoch_loss), 1)
    ax1.plot(np.arange(1, len(history.epoch_loss) + 1) * steps, history.epoch_loss, "o-", label="epoch mean")
    ax1.set(xlabel="step", ylabel="loss", title="training loss", yscale="log")
    ax1.legend()
    epochs = np.arange(1, len(history.train_acc) + 1)
    ax2.plot(epochs, history.train_acc, "o-", label="train")
    ax2.plot(epochs, history.val_acc, "o-", label="val")
    ax2.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax2.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax2.legend()
    fig.tight_layout()
    try:
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
    finally:
        plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------
# the command line


class UsageError(Exception):
    """A mistake on the command line or in the data: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _positive(kind, most=None):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"must be at most {most}, got {text}")
        if not value > 0 or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _probability(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="fastgrad-train",
        description="Train an MLP classifier with fastgrad. Without arguments: the bundled 8x8 digits, "
                    "in a few seconds.",
    )
    p.add_argument("--dataset", choices=D.DATASETS, default="digits",
                   help="digits (bundled), spiral (generated), mnist or cifar10 (from --data-dir)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="folder with the MNIST IDX files or the CIFAR-10 python batches")
    p.add_argument("--hidden", type=_positive(int), nargs="*", default=[256], metavar="H",
                   help="hidden layer widths, e.g. --hidden 256 128 (none: a linear classifier)")
    p.add_argument("--activation", choices=sorted(nn.ACTIVATIONS), default="relu")
    p.add_argument("--dropout", type=_probability, default=0.0, help="dropout probability after each hidden layer")
    p.add_argument("--norm", choices=["none", "batch", "layer"], default="none",
                   help="batch or layer normalisation before each hidden activation")
    p.add_argument("--optimizer", choices=list(OPTIMIZERS), default="adam")
    p.add_argument("--lr", type=_positive(float), default=None,
                   help="learning rate (default: " + ", ".join(f"{k} {v[1]:g}" for k, v in OPTIMIZERS.items()) + ")")
    p.add_argument("--lr-decay", type=_positive(float), default=1.0, help="lr factor after each epoch")
    p.add_argument("--batch-size", type=_positive(int), default=32)
    p.add_argument("--epochs", type=_positive(int), default=20)
    p.add_argument("--reg", type=_non_negative_float, default=1e-3, help="L2 strength: 0.5*reg*sum(W**2)")
    p.add_argument("--weight-decay", type=_non_negative_float, default=0.0,
                   help="the optimizer's weight decay (decoupled for adamw); biases included, unlike --reg")
    p.add_argument("--scheduler", choices=list(SCHEDULERS), default="none",
                   help="per-epoch lr schedule: step (x0.1 every epochs/3), cosine (to 0), exponential (x0.9)")
    p.add_argument("--resume", type=Path, default=None, metavar="PATH",
                   help="continue from a checkpoint (OUT/checkpoint.npz, written after every epoch) "
                        "with the same arguments; --epochs is the total")
    p.add_argument("--loss", choices=list(LOSSES), default="softmax")
    p.add_argument("--seed", type=_non_negative_int, default=0,
                   help="seeds the split, the initial weights and the batches")
    p.add_argument("--threads", type=_positive(int, MAX_THREADS), default=None, help="threads for BLAS and the kernels")
    p.add_argument("--out", type=Path, default=Path("runs"), help="where to write model.npz, history.json, curves.png")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--eager", action="store_true",
                   help="run every step eagerly (default: record the step once per batch shape and "
                        "replay it in C, fastgrad.capture; the same numbers)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI: start under mpiexec -n N; --batch-size is the global "
                        "batch (pip install \"fastgrad[mpi]\"; docs/DISTRIBUTED.md)")
    return p


def _print_epoch(epoch, history):
    print(f"epoch {epoch}: loss {history.epoch_loss[-1]:.6f}, val {history.val_acc[-1]:.4f}", flush=True)


@contextlib.contextmanager
def _threads(n):
    """Use n threads (kernels and BLAS, `fastgrad.set_num_threads`) inside; restore the count after."""
    if n is None:
        yield
        return
    previous = get_num_threads()
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(previous)


#: the files a run writes into --out (all through atomic_write: a reader never sees half a file)
OUTPUTS = ("model.npz", "history.json", "curves.png", "checkpoint.npz")


def _say(*text) -> None:
    """print() to stdout and flush: a closed stdout (`| head -1`) shows up at the line that failed."""
    print(*text, flush=True)


def _prepare_out(out: Path) -> None:
    """Create --out and prove that the outputs can be written there, before any training starts."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"argument --out: cannot create the output folder {out}: {e.strerror or e}") from None
    try:
        check_writable_dir(out, OUTPUTS)  # creates and removes a file: permission bits alone do not tell
    except OSError as e:
        where = f"files in {out}" if e.filename in (None, str(out)) else e.filename
        raise UsageError(f"argument --out: cannot write {where}: {e.strerror or e}") from None


@contextlib.contextmanager
def _writing(path):
    """An OSError while writing `path` (a full disk, a vanished folder) as one UsageError line."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None


def _build_model(sizes, args) -> nn.MLP:
    try:
        return nn.MLP(sizes, activation=args.activation, seed=args.seed, dropout=args.dropout, norm=args.norm,
                      generator=Generator(args.seed))
    except (MemoryError, OverflowError, ValueError) as e:
        what = "not enough memory" if isinstance(e, MemoryError) else str(e) or type(e).__name__
        raise UsageError(f"argument --hidden: cannot build an MLP {sizes}: {what}") from None


def run(args, world=None) -> int:
    """The command line's work; `world` is a DataParallel-ready `_World` under --distributed."""
    if args.lr_decay > 1:
        raise UsageError(f"argument --lr-decay: must be in (0, 1], got {args.lr_decay}")
    error = None
    try:
        splits = D.load(args.dataset, data_dir=args.data_dir, seed=args.seed)
    except (D.DataError, ValueError) as e:
        error = UsageError(str(e))
    if world is not None:
        world.agree(error)  # the same verdict on every rank: all go on, or all stop
    if error is not None:
        raise error from None
    if world is None or world.is_root:
        _prepare_out(args.out)
    sizes = [splits.num_features, *args.hidden, splits.num_classes]
    model = _build_model(sizes, args)
    lr = OPTIMIZERS[args.optimizer][1] if args.lr is None else args.lr
    _say(f"{args.dataset}: {len(splits.y_train)} train / {len(splits.y_val)} val / {len(splits.y_test)} test, "
         f"{splits.num_features} features, {splits.num_classes} classes")
    extras = "".join([f", {args.norm} norm" if args.norm != "none" else "",
                      f", dropout {args.dropout:g}" if args.dropout else "",
                      f", weight decay {args.weight_decay:g}" if args.weight_decay else "",
                      f", {args.scheduler} schedule" if args.scheduler != "none" else ""])
    _say(f"MLP {sizes} {args.activation}, {args.optimizer} lr={lr:g}, batch {args.batch_size}, "
         f"{args.epochs} epochs, reg {args.reg:g}, seed {args.seed}{extras}"
         + ("" if world is None else f", {world.size} rank{'s' if world.size > 1 else ''}"))
    if args.resume is not None and not args.resume.is_file():
        raise UsageError(f"--resume: no such checkpoint: {args.resume}")
    with _threads(args.threads):
        try:
            history = fit(model, splits, optimizer=args.optimizer, lr=lr, epochs=args.epochs,
                          batch_size=args.batch_size, reg=args.reg, loss=args.loss, seed=args.seed,
                          lr_decay=args.lr_decay, progress=not args.no_progress,
                          distributed=None if world is None else world.data_parallel(model),
                          weight_decay=args.weight_decay, scheduler=args.scheduler,
                          checkpoint=args.out / "checkpoint.npz" if world is None or world.is_root else None,
                          resume=args.resume, eager=args.eager,
                          on_epoch=_print_epoch if args.no_progress and (world is None or world.is_root) else None)
        except TrainingError as e:  # under --distributed: decided from the reduced loss, on all ranks
            raise (UsageError if world is None else world.CollectiveUsageError)(str(e)) from None
        except BrokenPipeError:
            raise
        except OSError as e:  # the per-epoch checkpoint could not be written (a full disk)
            raise UsageError(f"cannot write {args.out / 'checkpoint.npz'}: {e.strerror or e}") from None
        except ValueError as e:  # ranks that disagree on the data (MismatchError, raised by all)
            if world is not None and isinstance(e, world.dist.MismatchError):
                raise world.CollectiveUsageError(str(e)) from None
            if args.resume is None:
                raise
            raise UsageError(f"--resume {args.resume}: {e}") from None  # a checkpoint that does not fit
        except MemoryError:
            raise UsageError("out of memory while training: lower --batch-size or --hidden") from None
        acc = accuracy if world is None else world.dp.accuracy
        accs = {part: acc(model, getattr(splits, f"X_{part}"), getattr(splits, f"y_{part}"))
                for part in ("train", "val", "test")}
    _say(f"accuracy: train {accs['train']:.4f}  val {accs['val']:.4f}  test {accs['test']:.4f}  "
         f"({history.seconds:.1f} s, final loss {history.epoch_loss[-1]:.4f})")
    if world is not None and not world.is_root:
        return 0  # only rank 0 writes files
    with _writing(args.out / "model.npz"):
        checkpoint = nn.save(model, args.out / "model.npz")
    with _writing(args.out / "history.json"), atomic_write(args.out / "history.json", "w") as f:
        f.write(json.dumps({**asdict(history), "final_accuracy": accs}) + "\n")
    _say(f"wrote {checkpoint} and {args.out / 'history.json'}")
    png = args.out / "curves.png"
    with _writing(png):
        plotted = plot_history(history, png)
    if plotted:
        _say(f"wrote {png}")
    else:
        _say('no plot: matplotlib is not installed (pip install "fastgrad[plot]")')
    return 0


class _World:
    """What `run` needs under --distributed (fastgrad.distributed imported only then)."""

    def __init__(self):
        try:
            from . import distributed as dist
        except ImportError as e:
            raise UsageError(str(e)) from None
        self.dist = dist
        self.comm = dist.world()
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.is_root = self.rank == 0
        self.dp = None

        class CollectiveUsageError(UsageError, dist.Collective):
            """A usage error that every rank raises together."""

        self.CollectiveUsageError = CollectiveUsageError

    def agree(self, error) -> None:
        """One allgather: if any rank has an error, every rank raises the first one, naming its rank."""
        failed = self.dist.gather_errors(error, self.comm)
        if failed:
            r, message = failed[0]
            raise self.CollectiveUsageError(f"rank {r} of {self.size}: {message}" if self.size > 1 else message)

    def data_parallel(self, model):
        self.dp = self.dist.DataParallel(model, self.comm, excepthook=False)
        return self.dp


def _run_distributed(args) -> int:
    """run() on every MPI rank: only rank 0 prints (others write stdout/stderr to os.devnull); an
    error on one rank prints one line naming it and aborts every rank (MPI Abort, exit status 2)."""
    world = _World()
    if not world.is_root:
        sys.stdout = sys.stderr = open(os.devnull, "w")
        args.no_progress = True
    dist = world.dist
    dist.install_excepthook("fastgrad-train", world.comm)
    with dist.fail_together("fastgrad-train", code=2, comm=world.comm, plain=(UsageError,)):
        return run(args, world)


def _report(line: str) -> None:
    """Print `line` to stderr; a second Ctrl-C meanwhile, or a closed stderr, cannot turn it into a traceback."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals are not ours to change
        previous = None
    try:
        print(line, file=sys.stderr, flush=True)
    except (BrokenPipeError, ValueError):  # stderr closed: nothing left to tell
        _drop_broken_streams()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _drop_broken_streams() -> None:
    """Point a closed stdout/stderr at os.devnull, so that the flush at exit cannot fail again."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):
            with contextlib.suppress(Exception):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
                os.close(devnull)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    _report(f"fastgrad-train: {category.__name__}: {message}")


def main(argv=None) -> int:
    """Entry point of `fastgrad-train` / `python -m fastgrad.train`; returns the exit status.

    A user mistake (bad flag, unknown name, missing or malformed data, an --out that cannot be
    written, a diverging lr) prints one line `fastgrad-train: error: ...` to stderr and returns 2,
    before any training when it can be known then. Ctrl-C prints `fastgrad-train: interrupted`
    and returns 130. A closed stdout or stderr (`fastgrad-train | head -1`) stops the run at the
    line that could not be written and returns 141 (as a process killed by SIGPIPE) without a
    word. Files are written atomically, so none of these leaves a half-written file.
    """
    try:
        args = build_parser().parse_args(argv)
        with warnings.catch_warnings():  # a warning (a step that runs eagerly) is one line, not two
            warnings.showwarning = _one_line_warning
            return _run_distributed(args) if args.distributed else run(args)
    except UsageError as e:
        _report(f"fastgrad-train: error: {e}")
        return 2
    except KeyboardInterrupt:
        _report("fastgrad-train: interrupted")
        return 130
    except BrokenPipeError:
        _drop_broken_streams()
        return 128 + signal.SIGPIPE if hasattr(signal, "SIGPIPE") else 1


if __name__ == "__main__":
    sys.exit(main())
