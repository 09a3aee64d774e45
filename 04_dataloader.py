# %% [markdown]
# # 04 - DataLoader: batches from a Dataset, for a training loop
# A DataLoader serves a Dataset in batches, in order or shuffled, and with workers loads them in
# other processes while the model trains: the basic loop, training, the options, worker randomness.
# Run: `python 04_dataloader.py` (try `--num-workers 0`, `--multiprocessing-context spawn`)

# %%
import argparse
import multiprocessing
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, get_worker_info

if __name__ == "__main__":  # not on import, nor in spawn or forkserver workers, which import it
    found = torch.accelerator.current_accelerator(check_available=True)  # None: no accelerator
    devices = ["cpu", found.type] if found else ["cpu"]
    parser = argparse.ArgumentParser(description="DataLoader: batches for a training loop.")
    parser.add_argument("--device", choices=devices, default=devices[-1])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-workers", type=int, choices=range(17), default=2, metavar="0..16")
    parser.add_argument("--multiprocessing-context", help="how workers start; default: Python's",
                        choices=multiprocessing.get_all_start_methods())
    parser.add_argument("--seed", type=int, default=0)
    # flags: `python 04_dataloader.py --num-workers 0` or `%run 04_dataloader.py ...`; notebook: no
    args = parser.parse_args([] if sys.argv[0].endswith("kernel_launcher.py") else None)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    print(f"device: {device}")

# %% [markdown]
# ## The basic loop
# `DataLoader(dataset, batch_size=4, shuffle=True)` draws a new order each epoch and hands out the
# samples a batch at a time: `for batch in loader:` is one epoch. The default `collate_fn` turns a
# list of dict samples into one dict: tensors stacked, numbers made a tensor, a new first dim B.

# %%
class Points(Dataset):
    """n points in the plane, label 1 where x + y > 0. Sample i: {"index", "x", "label"}."""
    def __init__(self, n: int, seed: int = 0, transform=None):
        generator = torch.Generator().manual_seed(seed)  # its own: the data depend on seed only
        self.x = torch.randn(n, 2, generator=generator)  # (n, 2); 02 reads from files instead
        self.labels = (self.x.sum(1) > 0).long().tolist()  # ints: collation makes them a tensor
        self.transform = transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        sample = {"index": i, "x": self.x[i], "label": self.labels[i]}
        return self.transform(sample) if self.transform is not None else sample


def epoch_order(loader: DataLoader) -> list[int]:  # the sample indices, in the order served
    return [i for batch in loader for i in batch["index"].tolist()]


if __name__ == "__main__":
    train_set = Points(62, args.seed)  # 62 = 15 x 4 + 2: the last batch of 4 is short
    try:  # a batch size DataLoader refuses is one error line, not a traceback
        loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    except ValueError as e:
        parser.error(f"--batch-size {args.batch_size}: {e}")
    print(f"train_set[0]: {train_set[0]}")
    seen = epoch_order(loader)
    print(f"one epoch: {len(loader)} batches, every sample once: "
          f"{sorted(seen) == list(range(len(train_set)))}, in a shuffled order: {seen[:6]}...")
    batch = next(iter(loader))
    print("a batch: " + ", ".join(f"{key} {tuple(value.shape)} {value.dtype}"
                                  for key, value in batch.items()))

# %% [markdown]
# ## Training with workers, then evaluation
# `num_workers=2` loads batches in two processes while the model trains. fork (Linux's default up
# to Python 3.13) copies this process, in milliseconds. spawn (macOS, Windows) starts a new Python;
# forkserver (Linux, Python 3.14+) starts a server that forks each worker. Both pickle the Dataset
# (no closures: 03) and import this file and torch, seconds a worker (from Python 3.13.8 and 3.14.1
# forkserver's server imports it once). `persistent_workers=True` keeps the workers from epoch to
# epoch; `pin_memory=True` lets `.to(device, non_blocking=True)` copy to a GPU as the CPU works.

# %%
def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> float:
    """One pass over loader; returns the mean training loss over its samples."""
    device = next(model.parameters()).device
    model.train()
    total, count = 0.0, 0
    for batch in loader:
        x = batch["x"].to(device, non_blocking=True)  # (B, 2)
        label = batch["label"].to(device, non_blocking=True)  # (B,)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), label)
        loss.backward()
        optimizer.step()
        total, count = total + loss.item() * len(label), count + len(label)
    return total / count


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, dataset: Dataset, epochs: int,
        batch_size: int, num_workers: int, context: str | None = None) -> None:
    """Train, loading in num_workers processes started by `context`; Ctrl-C stops it early."""
    device = next(model.parameters()).device
    loader = DataLoader(dataset, batch_size, shuffle=True, num_workers=num_workers,
                        multiprocessing_context=context if num_workers else None,
                        persistent_workers=num_workers > 0,  # it, and a context: workers only
                        pin_memory=device.type == "cuda")
    try:
        for epoch in range(1, epochs + 1):
            print(f"epoch {epoch} | train loss {train_epoch(model, loader, optimizer):.4f}")
    except KeyboardInterrupt:
        print(f"Ctrl-C in epoch {epoch}: training stopped, the model kept as it is")


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    """Mean loss and accuracy over the samples that loader yields (not a mean of batch means)."""
    device = next(model.parameters()).device
    model.eval()
    loss, correct, count = 0.0, 0, 0
    for batch in loader:
        x, label = batch["x"].to(device), batch["label"].to(device)
        logits = model(x)  # (B, 2)
        loss += F.cross_entropy(logits, label, reduction="sum").item()
        correct += (logits.argmax(1) == label).sum().item()
        count += len(label)
    return loss / count, correct / count


if __name__ == "__main__":
    workers = args.num_workers
    context = args.multiprocessing_context or multiprocessing.get_start_method()
    if workers and context != "fork" and sys.argv[0].endswith("kernel_launcher.py"):
        print(f"in a notebook, {context} workers cannot import classes made in its cells: no "
              f"workers here (`%run 04_dataloader.py` can have them)")
        workers = 0
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2)).to(device)
    print("training, loading in " + (f"{workers} {context} workers" if workers else "this process"))
    fit(model, torch.optim.SGD(model.parameters(), lr=0.2), train_set, 3, args.batch_size,
        workers, context)
    loss, accuracy = evaluate(model, DataLoader(Points(15, args.seed + 1), args.batch_size))
    print(f"validation, 15 new points | loss {loss:.4f} | accuracy {accuracy:.1%}")

# %% [markdown]
# ## Options: `drop_last`, `generator` and `collate_fn`
# `drop_last=True` drops a short last batch (in training, `BatchNorm1d` raises on a (1, C) batch).
# `generator=` gives the shuffle (and the workers' seeds) a seeded generator of its own: a new
# order each epoch, the same orders each run, whatever was drawn before. A `collate_fn` replaces
# collation: sequences of different lengths cannot be stacked, so pad them and keep the lengths.

# %%
def pad_collate(batch: list[dict]) -> dict:
    tokens = [sample["tokens"] for sample in batch]
    return {"tokens": nn.utils.rnn.pad_sequence(tokens, batch_first=True),  # (B, T_max): 0-padded
            "lengths": torch.tensor([len(t) for t in tokens])}  # (B,)


if __name__ == "__main__":
    batches = [len(DataLoader(train_set, args.batch_size, drop_last=d)) for d in (False, True)]
    print(f"{len(train_set)} samples in batches of {args.batch_size}: {batches[0]} batches, "
          f"with drop_last=True {batches[1]}")
    orders = [epoch_order(DataLoader(train_set, args.batch_size, shuffle=True,
                                     generator=torch.Generator().manual_seed(args.seed)))
              for _ in range(2)]
    print(f"two loaders, generators seeded {args.seed}: the same order: {orders[0] == orders[1]}")
    sequences = [{"tokens": torch.arange(1, n + 1)} for n in (3, 5, 1)]  # a list: len and [i]
    padded = next(iter(DataLoader(sequences, batch_size=3, collate_fn=pad_collate)))
    print(f"pad_collate: tokens (B, T_max) {tuple(padded['tokens'].shape)}, lengths "
          f"{padded['lengths'].tolist()}, row 0 {padded['tokens'][0].tolist()}")

# %% [markdown]
# ## Randomness in workers
# DataLoader seeds torch and `random` in each worker with `base_seed` + worker id, and numpy's
# global state from both; each new iterator draws a `base_seed`, which persistent workers keep. A
# generator object (`np.random.default_rng(seed)` in a transform) is copied into every worker as is:
# all draw the same. Draw with torch (03), or make one in each worker from its seed, as here.

# %%
class RandomShift:
    """Adds a random number to x, from a numpy Generator; `per_process=False` shows the pitfall."""
    def __init__(self, scale: float, per_process: bool = True):
        self.scale, self.per_process = scale, per_process
        self.rng, self.seed = np.random.default_rng(0), None

    def __call__(self, sample: dict) -> dict:
        info = get_worker_info()  # None in the main process; in a worker, its id and seed
        if self.per_process and info is not None and info.seed != self.seed:  # a new worker
            self.rng, self.seed = np.random.default_rng(info.seed), info.seed
        return {**sample, "x": sample["x"] + self.rng.uniform(-self.scale, self.scale)}


if __name__ == "__main__":
    for per_process in (False, True):
        shifted = Points(6, args.seed, transform=RandomShift(1.0, per_process))
        loader = DataLoader(shifted, batch_size=1, num_workers=workers,
                            multiprocessing_context=context if workers else None)
        shifts = [round((batch["x"] - shifted.x[batch["index"]]).mean().item(), 3)
                  for batch in loader]  # batches come from the workers in turn: w0, w1, w0, ...
        print(f"RandomShift(per_process={per_process}), {workers} workers: shifts {shifts}")
