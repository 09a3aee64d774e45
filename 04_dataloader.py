# %% [markdown]
# # 04 - DataLoader: batches from a Dataset, for a training loop
# A DataLoader hands out a Dataset's samples in batches, shuffled if you ask, and can load them in
# worker processes. Run: `python 04_dataloader.py`, or add `--multiprocessing-context spawn`.
# %%
import argparse
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset, get_worker_info

SEED = 0
torch.manual_seed(SEED)
# The accelerator (a GPU, say) if one is usable; where none is, this gives None, so the CPU.
device = torch.accelerator.current_accelerator(check_available=True) or torch.device("cpu")

# Spawn workers (the default on macOS and Windows) and forkserver ones (on Linux from Python 3.14)
# import this file again: the demo code runs only under this guard, or each worker would run it too.
if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A DataLoader, with worker processes.")
    parser.add_argument("--num-workers", type=int, default=2, help="0: load in the main process")
    parser.add_argument("--multiprocessing-context", choices=["fork", "spawn", "forkserver"])
    # In Jupyter or Colab, sys.argv is the kernel's. There the loader works in this process: spawned
    # workers cannot import a notebook's classes, and forked ones can deadlock on its threads.
    in_notebook = sys.argv[0].endswith("kernel_launcher.py")
    args = parser.parse_args(["--num-workers", "0"] if in_notebook else None)

# %% [markdown]
# ## The basic loop, `drop_last` and `generator`
# Anything with `len()` and `[i]` serves as a Dataset, a list too. `for batch in loader:` is one
# epoch: every sample once, four at a time, and with `shuffle=True` in a new order each epoch.
# `drop_last=True` drops a short last batch: in training, `BatchNorm1d` raises on a batch of one.
# `generator=` gives the loader a random generator of its own: seeded, it serves the same order
# whatever other code drew from the global generator.
# %%
if __name__ == "__main__":
    numbers = list(range(10))  # a Dataset of 10 samples: len(numbers) and numbers[i]
    loader = DataLoader(numbers, batch_size=4, shuffle=True)
    for epoch in range(1, 3):
        batches = [batch.tolist() for batch in loader]  # one epoch
        print(f"epoch {epoch} with shuffle=True: {batches}, each number once")
    dropped = DataLoader(numbers, batch_size=4, drop_last=True)
    batches = [batch.tolist() for batch in dropped]
    print(f"drop_last=True: {batches}, without the short last batch")
    generator = torch.Generator().manual_seed(SEED)
    loader = DataLoader(numbers, batch_size=4, shuffle=True, generator=generator)
    first = [batch.tolist() for batch in loader]
    torch.randn(3)  # other code, a model's initialization say, draws from the global generator
    generator.manual_seed(SEED)  # the same seed again
    again = [batch.tolist() for batch in loader]
    print(f"generator seeded {SEED}: {first}; reseeded after another draw, the same: {again}")

# %% [markdown]
# ## Collation
# `TensorDataset(x, labels)` returns sample i as the tuple `(x[i], labels[i])`. The default
# `collate_fn` stacks each part of B samples along a new first dimension: a batch unpacks as
# `x, label`. It turns Python ints into an int64 tensor and Python floats into a float64 one.
# Pitfall: `binary_cross_entropy` refuses a float64 target for a float32 output: use float32.
# %%
if __name__ == "__main__":
    points = torch.randn(79, 2)  # (79, 2): random points in the plane
    labels = (points.sum(dim=1) > 0).long()  # (79,): 1 where x + y > 0
    train_set = TensorDataset(points[:64], labels[:64])
    val_set = TensorDataset(points[64:], labels[64:])  # 15 points: batches of 4, 4, 4 and 3
    x, label = next(iter(DataLoader(train_set, batch_size=4)))
    print(f"a batch of 4 samples: x {x.shape} {x.dtype}, label {label.shape} {label.dtype}")
    targets = next(iter(DataLoader([0.0, 1.0, 1.0, 0.0], batch_size=4)))
    try:
        F.binary_cross_entropy(torch.full((4,), 0.5), targets)  # a float32 output, as a model's
    except RuntimeError as e:
        print(f"Python floats collate to {targets.dtype}, and binary_cross_entropy raises: {e}")

# %% [markdown]
# ## `collate_fn`: padding sequences
# Sequences of different lengths cannot be stacked. `collate_fn=pad_collate` pads them to the
# longest and returns their lengths, so that a model can ignore the padding. It pads with 0, and 0
# is often a real token's id, so here the tokens start at 1.
# %%
def pad_collate(batch: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    padded = nn.utils.rnn.pad_sequence(batch, batch_first=True, padding_value=0)  # (B, T_max)
    lengths = torch.tensor([len(tokens) for tokens in batch])  # (B,)
    return padded, lengths

if __name__ == "__main__":
    sequences = [torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6, 7, 8]), torch.tensor([9])]
    tokens, lengths = next(iter(DataLoader(sequences, batch_size=3, collate_fn=pad_collate)))
    print(f"pad_collate: tokens {tokens.tolist()}, lengths {lengths.tolist()}")

# %% [markdown]
# ## Workers
# With `num_workers=2`, two worker processes load batches while this one trains. They pay off when
# `__getitem__` is slow (files, decoding, augmenting); for data in memory, as here, they only add
# the time to start them and to send batches back. fork copies this process. spawn and forkserver
# start a fresh Python process that imports this file, and send each worker the dataset by pickle.
# Each new iterator over a loader draws a base seed from the global generator; persistent workers
# reuse one iterator, so with `--num-workers 0` the later shuffles, and losses, differ from epoch 2.
# %%
if __name__ == "__main__":
    train_loader = DataLoader(
        train_set, batch_size=4, shuffle=True, num_workers=args.num_workers,
        multiprocessing_context=args.multiprocessing_context,  # None: the platform's default
        persistent_workers=args.num_workers > 0,  # keep the workers between epochs, if any
        pin_memory=device.type == "cuda")  # so that .to(device, non_blocking=True) is async
    print(f"training on {device}, num_workers={args.num_workers}")

# %% [markdown]
# ## A training epoch, and an evaluation summed over samples
# `train_epoch` moves each batch to the device and takes one optimizer step on it. `evaluate` adds
# up the samples' losses (`reduction="sum"`) and divides by their number: a mean of the batches'
# means would weigh the last batch of 3 as much as a batch of 4.
# %%
def train_epoch(model: nn.Module, loader: DataLoader, optimizer, device: torch.device) -> None:
    model.train()
    for x, label in loader:
        x = x.to(device, non_blocking=True)  # (B, 2)
        label = label.to(device, non_blocking=True)  # (B,)
        loss = F.cross_entropy(model(x), label)  # the mean over the batch
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    model.eval()
    total = 0.0
    count = 0
    for x, label in loader:
        logits = model(x.to(device))  # (B, 2)
        total += F.cross_entropy(logits, label.to(device), reduction="sum").item()
        count += len(label)
    return total / count

if __name__ == "__main__":
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    val_loader = DataLoader(val_set, batch_size=4)
    for epoch in range(1, 4):
        train_epoch(model, train_loader, optimizer, device)
        loss = evaluate(model, val_loader, device)
        print(f"epoch {epoch} | validation loss {loss:.4f}")
    del train_loader  # ends its persistent workers: killed at exit, they leave temp folders behind

# %% [markdown]
# ## Randomness in workers
# Each worker seeds torch and `random` with the loader's base seed plus its id, and numpy's global
# generator from the two, so their draws differ from worker to worker. A numpy `Generator` made
# in `__init__` is copied into each worker as it is, so all the workers draw the same numbers. A
# `worker_init_fn`, which each worker runs as it starts, can reseed its copy.
#
# Under DDP, if every rank calls `torch.manual_seed(SEED)`, worker w draws the same numbers on
# every rank. Seeding rank r's loader `generator=` with `SEED + r` makes them differ (a
# `DistributedSampler` already gives each rank its own samples).
# %%
class RandomDraws(Dataset):  # 6 samples, each a random number, as an augmentation would draw
    def __init__(self):
        self.rng = np.random.default_rng(SEED)  # made here, it is copied into every worker

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> float:
        return self.rng.uniform(-1, 1)

def reseed_rng(worker_id: int) -> None:  # a worker_init_fn
    info = get_worker_info()  # this worker's seed, and its own copy of the dataset
    info.dataset.rng = np.random.default_rng(info.seed)

if __name__ == "__main__" and args.num_workers > 0:  # not with --num-workers 0, nor in a notebook
    context = args.multiprocessing_context
    copied = DataLoader(RandomDraws(), num_workers=2, multiprocessing_context=context)
    draws = [round(batch.item(), 3) for batch in copied]  # batches of one, from workers 0, 1, 0...
    print(f"one Generator copied into 2 workers, each number twice: {draws}")
    reseeded = DataLoader(RandomDraws(), num_workers=2, multiprocessing_context=context,
                          worker_init_fn=reseed_rng)
    draws = [round(batch.item(), 3) for batch in reseeded]
    print(f"each worker's copy reseeded by reseed_rng, all different: {draws}")
