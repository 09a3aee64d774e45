# %% [markdown]
# # 04 - DataLoader: batches from a Dataset, for a training loop
# A DataLoader hands out a Dataset's samples in batches, loading them in worker processes if asked.
# Run: `python 04_dataloader.py` (try `--num-workers 0`, `--multiprocessing-context spawn`)
# %%
import argparse
import sys
from multiprocessing import get_all_start_methods, get_start_method

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, get_worker_info

# Spawn and forkserver workers import this file again, so the demos run only under this guard;
# unguarded, each worker would try to start its own workers: the classic error on macOS, Windows.
if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="DataLoader: batches for a training loop.")
    parser.add_argument("--num-workers", type=int, default=2, help="0 loads in this process")
    parser.add_argument("--multiprocessing-context", choices=get_all_start_methods())
    in_notebook = sys.argv[0].endswith("kernel_launcher.py")  # a kernel's argv is not ours
    args = parser.parse_args([] if in_notebook else None)
    torch.manual_seed(0)

# %% [markdown]
# ## The basic loop, and collation
# `DataLoader(dataset, batch_size=4, shuffle=True)` draws a new order each epoch and hands out the
# samples a batch at a time: `for batch in loader:` is one epoch. Collation (the default
# `collate_fn`) stacks B samples' tensors along a new first dim, Python ints into an int64 tensor
# and floats into float64. Pitfall: `binary_cross_entropy` refuses float64 targets for a float32
# output, so store float targets as float32. A plain list works as a Dataset too.
# %%
class Points(Dataset):  # n points in the plane, labelled 1 where x + y > 0
    def __init__(self, n: int, seed: int = 0, transform=None):
        generator = torch.Generator().manual_seed(seed)  # its own: the points depend on seed only
        self.x = torch.randn(n, 2, generator=generator)  # (n, 2)
        self.labels = (self.x.sum(1) > 0).long().tolist()  # Python ints: collation makes int64
        self.transform = transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        sample = {"index": i, "x": self.x[i], "label": self.labels[i]}  # index: to show the order
        return self.transform(sample) if self.transform is not None else sample


def epoch_order(loader: DataLoader) -> list[int]:  # the sample indices, in the order served
    return [i for batch in loader for i in batch["index"].tolist()]


if __name__ == "__main__":
    train_set = Points(61)  # 61 = 15 x 4 + 1: 15 full batches of 4, then a batch of one
    loader = DataLoader(train_set, batch_size=4, shuffle=True)
    print(f"train_set[0], one sample: {train_set[0]}")
    order = epoch_order(loader)
    print(f"one epoch: {len(loader)} batches, each of the 61 samples once: "
          f"{sorted(order) == list(range(61))}, in a shuffled order {order[:6]}...")
    batch = next(iter(loader))
    print("a batch, collated into a dict: " + ", ".join(
        f"{key} {tuple(value.shape)} {value.dtype}" for key, value in batch.items()))
    targets = next(iter(DataLoader([0.0, 0.25, 0.5, 1.0], batch_size=4)))  # four Python floats
    try:  # a float32 output, as a model gives, against those targets
        F.binary_cross_entropy(torch.full((4,), 0.5), targets)
    except RuntimeError as e:
        print(f"float targets collate to {targets.dtype}, and binary_cross_entropy raises: {e}")

# %% [markdown]
# ## Training with workers, then evaluation
# `num_workers=2` loads batches in two other processes while this one trains. Workers pay off
# when `__getitem__` is slow (reading files, decoding, augmenting); for data already in memory,
# as here, they cost more than they save: starting them, and sending each batch across. fork
# (Linux up to Python 3.13) copies this process. spawn (macOS, Windows) starts each worker as a
# fresh process that imports torch and this file and unpickles the Dataset (no lambdas: 03);
# forkserver (Linux from 3.14) imports them once, in a server that forks the workers. Neither can
# import a class made in a notebook cell, and fork from a kernel, which runs threads of its own,
# can deadlock (Python 3.12+ warns of it), so in a notebook this loads in the main process.
# `persistent_workers=True` keeps the workers from epoch to epoch; `pin_memory=True` (on an
# accelerator) lets `.to(device, non_blocking=True)` copy while the CPU goes on.
# %%
def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> float:
    device, total, count = next(model.parameters()).device, 0.0, 0
    model.train()
    for batch in loader:
        x = batch["x"].to(device, non_blocking=True)  # (B, 2)
        label = batch["label"].to(device, non_blocking=True)  # (B,)
        loss = F.cross_entropy(model(x), label)  # the mean over this batch
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total, count = total + loss.item() * len(label), count + len(label)
    return total / count  # the mean training loss over the epoch's samples


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    device, loss, correct, count = next(model.parameters()).device, 0.0, 0, 0
    model.eval()
    for batch in loader:
        logits, label = model(batch["x"].to(device)), batch["label"].to(device)  # (B, 2), (B,)
        loss += F.cross_entropy(logits, label, reduction="sum").item()
        correct += (logits.argmax(1) == label).sum().item()
        count += len(label)
    return loss / count, correct / count  # over the samples, not a mean of batch means


if __name__ == "__main__":
    context = args.multiprocessing_context or get_start_method()  # fork, spawn or forkserver
    args.num_workers = 0 if in_notebook else args.num_workers
    device = torch.accelerator.current_accelerator(check_available=True) or torch.device("cpu")
    loader = DataLoader(train_set, batch_size=4, shuffle=True, num_workers=args.num_workers,
                        multiprocessing_context=args.multiprocessing_context,
                        persistent_workers=args.num_workers > 0, pin_memory=device.type == "cuda")
    where = f"{args.num_workers} {context} workers" if args.num_workers else "the main process"
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    print(f"training on {device}, loading in {where}")
    for epoch in range(1, 4):
        print(f"epoch {epoch} | train loss {train_epoch(model, loader, optimizer):.4f}")
    del loader  # persistent workers live as long as their loader
    loss, accuracy = evaluate(model, DataLoader(Points(15, seed=1), batch_size=4))  # 4+4+4+3
    print(f"validation on 15 new points | loss {loss:.4f} | accuracy {accuracy:.1%}")

# %% [markdown]
# ## Options: `drop_last`, `generator` and `collate_fn`
# `drop_last=True` drops a short last batch: in training, `BatchNorm1d` raises on a batch of one.
# `generator=` draws the shuffle and the workers' seeds from a seeded generator of the loader's
# own, whatever else drew from the global one. A `collate_fn` replaces collation: `pad_collate`
# pads sequences, which cannot be stacked unless their lengths agree, to the longest and keeps the
# lengths. It pads with 0, which must be an id no token has (here tokens start at 1).
# %%
def pad_collate(batch: list[dict]) -> dict:
    tokens = [sample["tokens"] for sample in batch]  # B tensors of different lengths
    return {"tokens": nn.utils.rnn.pad_sequence(tokens, batch_first=True, padding_value=0),
            "lengths": torch.tensor([len(t) for t in tokens])}  # (B, T_max) and (B,)


if __name__ == "__main__":
    batches = [len(DataLoader(train_set, batch_size=4, drop_last=d)) for d in (False, True)]
    print(f"61 samples in batches of 4: {batches[0]} batches, with drop_last=True {batches[1]}")
    orders = [epoch_order(DataLoader(train_set, batch_size=4, shuffle=True, generator=g)) for g in
              [None, None, torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)]]
    print(f"two loaders one after the other serve the same order: {orders[0] == orders[1]} from "
          f"the global generator, {orders[2] == orders[3]} from generators seeded 0")
    sequences = [{"tokens": torch.arange(1, n + 1)} for n in (3, 5, 1)]  # a list works as a Dataset
    padded = next(iter(DataLoader(sequences, batch_size=3, collate_fn=pad_collate)))
    print(f"pad_collate: tokens (B, T_max) {tuple(padded['tokens'].shape)}, lengths "
          f"{padded['lengths'].tolist()}, row 0 {padded['tokens'][0].tolist()} padded with 0")

# %% [markdown]
# ## Randomness in workers
# Each new iterator, with or without workers, draws a base seed from `generator=` or the global
# generator (persistent workers keep one iterator). Each worker seeds torch and `random` with base
# seed + worker id, and numpy's global generator from both. A numpy `Generator` made in `__init__`
# is copied into every worker as it is, so all draw the same: in a `worker_init_fn`, reseed each
# copy from its worker's seed. Under DDP, where each rank seeds torch alike (06), give rank r's
# loader `generator=` seeded with seed + r (with a DistributedSampler it seeds only the workers).
# %%
class RandomShift:  # adds a number drawn from [-1, 1] to a sample's x
    def __init__(self):
        self.rng = np.random.default_rng(0)  # made here, it is copied into every worker as it is

    def __call__(self, sample: dict) -> dict:
        return {**sample, "x": sample["x"] + self.rng.uniform(-1, 1)}


def reseed_rng(worker_id: int) -> None:  # a worker_init_fn: each worker runs it as it starts
    info = get_worker_info()  # this worker's id, its seed and its own copy of the dataset
    info.dataset.transform.rng = np.random.default_rng(info.seed)


if __name__ == "__main__":
    for name, init_fn in [("None", None), ("reseed_rng", reseed_rng)]:
        shifted = Points(6, transform=RandomShift())
        loader = DataLoader(shifted, worker_init_fn=init_fn, num_workers=args.num_workers,
                            multiprocessing_context=args.multiprocessing_context)  # batch_size 1
        shifts = [round((b["x"] - shifted.x[b["index"]])[0, 0].item(), 3) for b in loader]
        verdict = "all different" if len(set(shifts)) == 6 else "every worker draws the same"
        print(f"RandomShift in {where}, worker_init_fn={name}: {verdict} {shifts}")
