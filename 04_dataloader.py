# %% [markdown]
# # 04 - DataLoader: batches from a Dataset, as a training loop consumes them
# A DataLoader shuffles a Dataset, collates its samples into batches and can load them in worker
# processes. The basic loop first, then a real training epoch, then its options and workers.
# Run: `python 04_dataloader.py` (try `--multiprocessing-context spawn`, `--help`)

# %%
import argparse
import functools
import multiprocessing
import pickle
import re
import signal
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    get_worker_info,
)


def int_in(lo: int, hi: int):
    """An argparse type: an integer from lo to hi."""
    def integer(text: str) -> int:
        value = int(text)  # not a number: argparse says "invalid integer value"
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in {lo}..{hi}, got {value}")
        return value
    return integer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="DataLoader: batches for a training loop.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="auto: the available accelerator, else the CPU")
    parser.add_argument("--seed", type=int_in(0, 2**32 - 1), default=0, help="0..2**32-1")
    parser.add_argument("--num-samples", type=int_in(1, 10_000), default=62, help="1..10000")
    parser.add_argument("--batch-size", type=int_in(1, 1024), default=4, help="1..1024")
    parser.add_argument("--epochs", type=int_in(1, 20), default=3, help="1..20")
    parser.add_argument("--num-workers", type=int_in(0, 8), default=2,
                        help="0..8; 0: load in the main process")
    parser.add_argument("--multiprocessing-context", default=multiprocessing.get_start_method(),
                        choices=multiprocessing.get_all_start_methods(), help="how workers start")
    args = parser.parse_args(argv)
    # None where no accelerator is usable (without the check it can name cuda on a CPU machine)
    found = torch.accelerator.current_accelerator(check_available=True)
    if args.device == "auto":
        args.device = found or torch.device("cpu")
    elif args.device != "cpu" and (found is None or found.type != args.device):
        parser.error(f"--device {args.device}: not available on this machine")
    args.device = torch.device(args.device)
    return args


if __name__ == "__main__":  # demo code runs when this file is run, not on import, nor in the
    # spawn and forkserver workers below, which import this file again
    # Flags come from `python 04_dataloader.py --x` or `%run 04_dataloader.py --x`; in a notebook,
    # the kernel's argv is not ours, so the defaults apply.
    ours = Path(sys.argv[0]).name == Path(globals().get("__file__", "")).name
    args = parse_args(None if ours else [])

    def excepthook(kind, *info):  # Ctrl-C: one line, not a traceback
        if not issubclass(kind, KeyboardInterrupt):
            return sys.__excepthook__(kind, *info)
        print("interrupted", file=sys.stderr)
        if hasattr(signal, "SIGCHLD"):  # else torch reports the workers Ctrl-C stopped as killed
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    sys.excepthook = excepthook
    device = args.device
    torch.manual_seed(args.seed)
    print(f"device: {device}")

# %% [markdown]
# ## The basic loop
# `DataLoader(dataset, batch_size=4, shuffle=True)` draws a new order every epoch and hands the
# samples out a batch at a time; `for batch in loader:` is one epoch.

# %%
class Points(Dataset):
    """n points in the plane, label 1 where x + y > 0. Sample i: {"index", "x", "label"}."""

    def __init__(self, n: int, seed: int, transform=None):
        generator = torch.Generator().manual_seed(seed)  # its own: the data depend on seed only
        self.x = torch.randn(n, 2, generator=generator)  # (n, 2); a real Dataset reads lazily (02)
        self.labels = (self.x.sum(1) > 0).long().tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        sample = {"index": i, "x": self.x[i], "label": self.labels[i]}
        return self.transform(sample) if self.transform is not None else sample


if __name__ == "__main__":
    train_set = Points(args.num_samples, args.seed)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    seen = []
    for batch in loader:
        seen += batch["index"].tolist()
    print(f"one epoch: {len(loader)} batches, every sample once: "
          f"{sorted(seen) == list(range(len(train_set)))}, shuffled: {seen[:6]}"
          + ("..." if len(seen) > 6 else ""))

# %% [markdown]
# The default `collate_fn` turns a list of samples into one batch of the same structure: a list
# of dicts becomes a dict of stacked tensors, with a new first dimension B; ints become a tensor.

# %%
if __name__ == "__main__":
    print(f"train_set[0]: {train_set[0]}")
    batch = next(iter(loader))
    print("a batch: " + ", ".join(f"{key} {tuple(value.shape)} {value.dtype}"
                                  for key, value in batch.items()))

# %% [markdown]
# ## One epoch of training, then evaluation
# Each batch moves to the model's device, then the step of 01: clear, loss, backward, step.
# Evaluation adds up the loss of every sample (`reduction="sum"`) and divides by their number: a
# mean of batch means would overweight a short last batch. Ctrl-C stops training early; the
# script goes on with the model as it is.

# %%
def tiny_model(hidden: int = 16) -> nn.Module:
    return nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, 2))  # (B, 2) -> logits


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> float:
    """One pass over loader; returns the mean training loss over its samples."""
    device = next(model.parameters()).device
    model.train()
    total, count = 0.0, 0
    for batch in loader:
        x, label = batch["x"].to(device), batch["label"].to(device)  # (B, 2), (B,)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), label)
        loss.backward()
        optimizer.step()
        total, count = total + loss.item() * len(label), count + len(label)
    return total / count


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    """Mean loss and accuracy over every sample of loader.dataset."""
    device = next(model.parameters()).device
    model.eval()
    loss, correct = 0.0, 0
    for batch in loader:
        x, label = batch["x"].to(device), batch["label"].to(device)
        logits = model(x)  # (B, 2)
        loss += F.cross_entropy(logits, label, reduction="sum").item()
        correct += (logits.argmax(1) == label).sum().item()
    return loss / len(loader.dataset), correct / len(loader.dataset)


if __name__ == "__main__":
    model = tiny_model().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    val_loader = DataLoader(Points(max(args.num_samples // 4, 1), args.seed + 1),
                            batch_size=args.batch_size)  # no need to shuffle for evaluation
    try:
        for epoch in range(1, args.epochs + 1):
            print(f"epoch {epoch} | train loss {train_epoch(model, loader, optimizer):.4f}")
    except KeyboardInterrupt:  # Ctrl-C: stop training, keep the model as it is, go on
        print(f"interrupted in epoch {epoch}: training stopped; evaluating the model as it is")
    val_loss, accuracy = evaluate(model, val_loader)
    print(f"validation | loss {val_loss:.4f} over {len(val_loader.dataset)} samples | "
          f"accuracy {accuracy:.1%}")

# %% [markdown]
# ## Options: `drop_last` and `generator`
# `drop_last=True` drops a short last batch (a batch of one sample makes `BatchNorm1d` raise in
# training). `generator=` gives the shuffle its own seeded generator; without it, the order comes
# from torch's global one, and any other random draw (a new layer, dropout) shifts it.

# %%
def epoch_order(loader: DataLoader) -> list[int]:
    return [i for batch in loader for i in batch["index"].tolist()]


def shuffled_order(dataset: Dataset, batch_size: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return epoch_order(DataLoader(dataset, batch_size, shuffle=True, generator=generator))


if __name__ == "__main__":
    dropped = DataLoader(train_set, batch_size=args.batch_size, drop_last=True)
    short = len(train_set) % args.batch_size
    print(f"{len(train_set)} samples in batches of {args.batch_size}: {len(loader)} batches"
          + (f" (the last has {short})" if short else "") + f", with drop_last=True {len(dropped)}")
    order = shuffled_order(train_set, args.batch_size, args.seed)
    print(f"generator seeded {args.seed}: the same order again: "
          f"{order == shuffled_order(train_set, args.batch_size, args.seed)}")

# %% [markdown]
# ## Workers
# `num_workers=2` loads batches in two processes while the model trains. How they start: fork
# (the default on Linux up to Python 3.13) copies this process, in milliseconds; spawn (the
# default on macOS and Windows) and forkserver (on Linux from Python 3.14) start each worker
# from a clean process that imports this file, and torch with it, again: up to seconds per
# worker. The `if __name__ == "__main__":` guards keep the lesson from running in them.
# `persistent_workers=True` keeps workers for the next epoch instead of starting new ones.
# `pin_memory=True` (only where a GPU is) lets `.to(device, non_blocking=True)` copy while the
# CPU goes on. The order still comes from the sampler in this process (with the default
# `in_order=True`, batches arrive in it too).

# %%
def add_noise(sample: dict, std: float) -> dict:
    return {**sample, "x": sample["x"] + std * torch.randn_like(sample["x"])}


if __name__ == "__main__":
    workers, context = args.num_workers, args.multiprocessing_context
    if workers and context != "fork" and not ours:  # a notebook
        print(f"in a notebook, {context} workers cannot import the classes defined in its cells: "
              f"num_workers=0 here")
        workers = 0
    where = f"{workers} {context} workers" if workers else "the main process"
    in_workers = {"num_workers": workers, "multiprocessing_context": context if workers else None}
    noisy_set = Points(args.num_samples, args.seed, functools.partial(add_noise, std=0.1))
    worker_loader = DataLoader(noisy_set, batch_size=args.batch_size, shuffle=True, **in_workers,
                               generator=torch.Generator().manual_seed(args.seed),
                               persistent_workers=workers > 0, pin_memory=device.type == "cuda")
    orders = [epoch_order(worker_loader) for epoch in range(2)]
    print(f"loading in {where}, 2 epochs: every sample once per epoch: "
          f"{all(sorted(o) == list(range(len(noisy_set))) for o in orders)}, "  # same seed, same n:
          f"epoch 1 in the order of the same seed without workers: {orders[0] == order}")
    del worker_loader  # persistent workers end with their loader (at exit they would be killed)

# %% [markdown]
# A `collate_fn` replaces the default collation. Sequences of different lengths cannot be
# stacked; pad them to the longest in the batch and keep the true lengths, which an RNN needs
# (`nn.utils.rnn.pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)`).
# A plain list serves as the dataset here: DataLoader needs only `__getitem__` and `__len__`.

# %%
def pad_collate(batch: list[dict]) -> dict:
    tokens = [sample["tokens"] for sample in batch]
    return {"tokens": pad_sequence(tokens, batch_first=True),  # (B, T_max), 0 after each end
            "lengths": torch.tensor([len(t) for t in tokens]),  # (B,)
            "label": torch.tensor([sample["label"] for sample in batch])}  # (B,)


if __name__ == "__main__":
    sequences = [{"tokens": torch.arange(1, n + 1), "label": n % 2} for n in (3, 5, 1, 4)]
    try:
        next(iter(DataLoader(sequences, batch_size=4)))
    except RuntimeError as e:
        print(f"default collation: RuntimeError: {e}")
    padded = next(iter(DataLoader(sequences, batch_size=4, collate_fn=pad_collate)))
    print(f"pad_collate: tokens (B, T_max) {tuple(padded['tokens'].shape)}, lengths "
          f"{padded['lengths'].tolist()}, row 0: {padded['tokens'][0].tolist()}")

# %% [markdown]
# ## What a worker receives
# spawn and forkserver workers get the Dataset, its transform, `collate_fn` and `worker_init_fn`
# pickled. pickle stores a function or a class by its importable name, and an instance as its
# class's name and its attributes: a class instance or a partial of a module-level function gets
# through (the workers above received a partial); a closure, a lambda or an open file fails
# before any worker starts. fork copies the memory: nothing is pickled there.

# %%
def make_add_noise(std: float):
    def add_noise_sample(sample: dict) -> dict:  # a closure: fine without workers, or with fork
        return add_noise(sample, std)
    return add_noise_sample


def first_batch(dataset: Dataset, context: str) -> str:
    """One batch from one worker started with `context`, or the error that stopped it."""
    loader = DataLoader(dataset, batch_size=2, num_workers=1, multiprocessing_context=context)
    try:
        with warnings.catch_warnings(record=True):  # torch also warns, with a long hint
            return f"works, x {tuple(next(iter(loader))['x'].shape)}"
    except (AttributeError, TypeError, pickle.PicklingError) as e:  # 3.14: PicklingError
        return re.sub(r" at 0x\w+", "", f"fails: {type(e).__name__}: {e}")  # address varies


if __name__ == "__main__":
    closure_set = Points(4, args.seed, transform=make_add_noise(0.1))
    print(f"a closure as the transform, spawn workers: {first_batch(closure_set, 'spawn')}")

# %% [markdown]
# ## Randomness in workers
# DataLoader reseeds the global generators in each worker (torch's with `base_seed + worker_id`,
# `base_seed` drawn from the loader's generator each epoch; Python's `random` and `np.random`
# too). But each worker gets a copy of the transform, and a numpy `Generator` made in `__init__`
# is copied state and all: every worker, every epoch, draws the same numbers (below, the workers
# take turns: w0, w1, w0, ...). Reseed it from the worker's seed in `worker_init_fn`.

# %%
class RandomShift:
    """A random transform with its own numpy Generator."""

    def __init__(self, scale: float, seed: int):
        self.scale, self.rng = scale, np.random.default_rng(seed)

    def __call__(self, sample: dict) -> dict:
        shift = float(self.rng.uniform(-self.scale, self.scale))
        return {**sample, "x": sample["x"] + shift, "shift": shift}


def seed_worker(worker_id: int) -> None:
    """worker_init_fn: runs once in each worker, before it loads anything."""
    info = get_worker_info()
    info.dataset.transform.rng = np.random.default_rng(info.seed)  # base_seed + worker_id


def shifts(loader: DataLoader) -> list[float]:
    return [round(shift, 2) for batch in loader for shift in batch["shift"].tolist()]


if __name__ == "__main__":
    if workers < 2:
        print(f"with {workers} worker(s) there are no copies to compare: try --num-workers 2")
    else:
        for init in (None, seed_worker):
            shifted = DataLoader(Points(3 * workers, args.seed, RandomShift(1.0, args.seed)),
                                 batch_size=1, worker_init_fn=init, **in_workers,
                                 generator=torch.Generator().manual_seed(args.seed))  # base_seed
            print(f"worker_init_fn={init and init.__name__}: shifts in loading order "
                  f"{shifts(shifted)}")

# %% [markdown]
# ## An IterableDataset in workers
# A stream has no indices to share out: every worker runs `__iter__` on its own copy, so each
# item comes once per worker. `get_worker_info()` tells a copy which worker it is in.

# %%
class Stream(IterableDataset):
    """The numbers 0..n-1, read front to back like lines of a file."""

    def __init__(self, n: int, split: bool = True):
        self.n, self.split = n, split

    def __iter__(self):
        info = get_worker_info()  # None in the main process
        if info is None or not self.split:
            return iter(range(self.n))
        return iter(range(info.id, self.n, info.num_workers))  # worker k: k, k + W, ...


if __name__ == "__main__":
    for split in (False, True):
        items = list(DataLoader(Stream(8, split), batch_size=None, **in_workers))  # unbatched
        print(f"Stream(8, split={split}) in {where}: {len(items)} items {sorted(items)}")

# %% [markdown]
# ## Sharding across processes: `DistributedSampler`
# With one process per GPU, each trains on its own shard: rank r of `num_replicas` gets every
# num_replicas-th index of a shuffled order, the same on every rank (same `seed`). It replaces
# `shuffle=True`: `DataLoader(dataset, batch_size, sampler=sampler)`. Here the ranks are passed by
# hand; under `torchrun` they come from the process group (06, which also shows why to call
# `sampler.set_epoch(epoch)` every epoch). A length that does not divide evenly is padded by
# repeating samples from the start of the order, so every rank gets as many batches.

# %%
def shards(n: int, num_replicas: int, seed: int) -> list[list[int]]:
    return [list(DistributedSampler(range(n), num_replicas=num_replicas, rank=rank, seed=seed))
            for rank in range(num_replicas)]


if __name__ == "__main__":
    for n in (len(train_set), len(train_set) + 1):
        rank0, rank1 = shards(n, num_replicas=2, seed=args.seed)
        repeated = sorted(set(rank0) & set(rank1))
        print(f"DistributedSampler, {n} samples on 2 ranks: {len(rank0)} + {len(rank1)} | "
              f"covering: {set(rank0) | set(rank1) == set(range(n))} | disjoint: {not repeated}"
              + (f" (padded with a repeat of {repeated})" if repeated else ""))
