"""A DataLoader turns a Dataset into shuffled batches, loaded by worker processes: collation,
reproducible shuffling, padding sequences, seeding workers, splitting an IterableDataset
across workers, and sharding a data set across processes.

Run:  python 04_dataloader.py --num-workers 2 --multiprocessing-context spawn
"""
# %%
import argparse
import multiprocessing
import sys

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    get_worker_info,
)

# %% [markdown]
# ## Batches from dict samples
# The default `collate_fn` turns a list of samples into one batch of the same structure: a
# list of dicts becomes a dict of stacked tensors (ints become a tensor too).

# %%
class Squares(Dataset):
    """Sample i: {"index": i, "x": [i, i*i] as float32, "label": i % 3}."""

    def __init__(self, length: int):
        self.length = length

    def __len__(self):
        return self.length

    def __getitem__(self, idx):
        if not 0 <= idx < self.length:
            raise IndexError(f"index {idx} is out of range for {self.length} samples")
        return {"index": idx, "x": torch.tensor([idx, idx * idx], dtype=torch.float32),
                "label": idx % 3}


def epoch_order(loader: DataLoader) -> list[int]:
    """The sample indices in the order one epoch of `loader` yields them."""
    return [i for batch in loader for i in batch["index"].tolist()]


def shuffled_order(dataset: Dataset, batch_size: int, seed: int) -> list[int]:
    # The order comes from the sampler in the main process, whatever the number of workers.
    generator = torch.Generator().manual_seed(seed)  # its own: no other code can shift it
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)
    return epoch_order(loader)


# %% [markdown]
# ## Variable-length sequences
# Default collation stacks tensors, so it fails when they differ in length. A `collate_fn`
# pads them to the longest in the batch and keeps the true lengths, which an LSTM needs
# (`nn.utils.rnn.pack_padded_sequence(tokens, lengths, enforce_sorted=False)`).
# With workers, collation runs in them: a module-level function, it pickles for spawn.

# %%
class Sequences(Dataset):
    """Sample i: the tokens 1..length_i and a label."""

    def __init__(self, lengths: list[int]):
        self.lengths = lengths

    def __len__(self):
        return len(self.lengths)

    def __getitem__(self, idx):
        return {"tokens": torch.arange(1, self.lengths[idx] + 1), "label": idx % 2}


def pad_collate(batch: list[dict]) -> dict:
    tokens = [sample["tokens"] for sample in batch]
    return {
        "tokens": pad_sequence(tokens, padding_value=0),  # (T_max, B); batch_first=True: (B, T_max)
        "lengths": torch.tensor([len(t) for t in tokens]),  # (B,)
        "label": torch.tensor([sample["label"] for sample in batch]),  # (B,)
    }


# %% [markdown]
# ## Randomness in workers
# Each worker gets a copy of the Dataset. A numpy `Generator` made in `__init__` is copied
# too, state and all, so every worker draws the same "random" numbers: augmentations repeat.
# (torch seeds its own generator and `random` in each worker, and numpy's legacy global
# `np.random` too; a Generator object you own is yours to seed.) The fix: reseed it in each
# worker from `get_worker_info().seed`, which is `base_seed + worker_id`, and `base_seed`
# comes from the loader's generator, so a seeded loader still repeats run to run.

# %%
class NoisyDataset(Dataset):
    def __init__(self, length: int, seed: int):
        self.length = length
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return self.length

    def __getitem__(self, idx):
        info = get_worker_info()  # None in the main process
        return {"draw": int(self.rng.integers(1000)), "worker": info.id if info else -1}


def seed_worker(worker_id: int) -> None:
    """worker_init_fn: runs once in each worker, before it loads anything."""
    info = get_worker_info()
    info.dataset.rng = np.random.default_rng(info.seed)


def draws_by_worker(loader: DataLoader) -> dict[int, list[int]]:
    draws = {}
    for batch in loader:
        for worker, draw in zip(batch["worker"].tolist(), batch["draw"].tolist()):
            draws.setdefault(worker, []).append(draw)
    return dict(sorted(draws.items()))


# %% [markdown]
# ## An IterableDataset in several workers
# Every worker runs `__iter__` on its own copy, so without a split each item comes once per
# worker. `get_worker_info()` tells the copy which worker it is and how many there are.

# %%
class RangeStream(IterableDataset):
    def __init__(self, start: int, end: int, split: bool = True):
        self.start, self.end, self.split = start, end, split

    def __iter__(self):
        info = get_worker_info()
        if info is None or not self.split:
            return iter(range(self.start, self.end))
        return iter(range(self.start + info.id, self.end, info.num_workers))  # every n-th item


# %% [markdown]
# ## Sharding across processes
# When one machine is not enough, each process (one per GPU) trains on its own shard.
# `DistributedSampler` gives rank r of `num_replicas` a disjoint share of the indices. Here the
# ranks are passed by hand; under `torchrun` they come from the process group. Call
# `sampler.set_epoch(epoch)` every epoch, or every epoch repeats the first one's shuffle.
# When the length does not divide evenly, it pads by repeating a few samples.

# %%
def shards(dataset: Dataset, num_replicas: int, seed: int, epoch: int = 0) -> list[list[int]]:
    result = []
    for rank in range(num_replicas):
        sampler = DistributedSampler(dataset, num_replicas=num_replicas, rank=rank, seed=seed)
        sampler.set_epoch(epoch)
        result.append(list(sampler))
    return result


# %%
def pick_device(name: str) -> torch.device:
    """'auto' is the available accelerator (CUDA, MPS, ...), else the CPU."""
    if name == "auto":
        # current_accelerator() alone names cuda even where no GPU is usable: ask first
        if torch.accelerator.is_available():
            return torch.accelerator.current_accelerator()
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is available on this machine")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps: MPS (Apple GPU) is not available on this machine")
    return torch.device(name)


def int_at_least(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = "int"  # argparse's message for a non-number: "invalid int value"
    return parse


class Parser(argparse.ArgumentParser):
    def error(self, message):  # bad input: one line naming it, exit 2, no usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv=None):
    parser = Parser(description=__doc__.split("\n\n")[0],
                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--num-workers", type=int_at_least(0), default=2,
                        help="worker processes; 0 loads in the main process")
    parser.add_argument("--multiprocessing-context", default=None,
                        choices=multiprocessing.get_all_start_methods(),
                        help="how workers start; none: this platform's, "
                             + multiprocessing.get_start_method())
    parser.add_argument("--batch-size", type=int_at_least(1), default=4, help="samples per batch")
    parser.add_argument("--num-samples", type=int_at_least(1), default=10, help="data set size")
    parser.add_argument("--seed", type=int, default=0, help="seed for shuffling and workers")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="where batches go; auto: the available accelerator, else cpu")
    if argv is None and "ipykernel" in sys.modules:  # a Jupyter kernel's argv is its own
        argv = []
    args = parser.parse_args(argv)
    try:
        device = pick_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    workers = args.num_workers
    context = args.multiprocessing_context or multiprocessing.get_start_method()
    print(f"device: {device} | workers: {workers} | start method: {context}")
    # DataLoader refuses a multiprocessing_context when there are no worker processes.
    context_if_workers = args.multiprocessing_context if workers else None
    in_workers = {"num_workers": workers, "multiprocessing_context": context_if_workers}

    dataset = Squares(args.num_samples)
    loader = DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, **in_workers,
        generator=torch.Generator().manual_seed(args.seed),
        pin_memory=device.type == "cuda",  # page-locked memory: fast, asynchronous copies to a GPU
        persistent_workers=workers > 0,  # keep workers between epochs: starting them costs seconds
    )
    print(f"dataset[1]: {dataset[1]}")
    orders = []
    for epoch in (1, 2):
        batches = list(loader)  # one epoch; persistent workers stay for the next
        orders.append([i for batch in batches for i in batch["index"].tolist()])
        print(f"epoch {epoch} order: {orders[-1]} | each sample once: "
              f"{sorted(orders[-1]) == list(range(len(dataset)))}")
    batch = batches[0]
    print("batch: " + ", ".join(f"{key} {tuple(value.shape)}" for key, value in batch.items()))
    x = batch["x"].to(device, non_blocking=True)  # (B, 2); the copy overlaps compute when pinned
    print(f"batch['x'] on {x.device}, pinned before the copy: {batch['x'].is_pinned()}")
    short = len(dataset) % args.batch_size
    print(f"batches per epoch: {len(loader)}" + (f" (the last has {short})" if short else "")
          + f"; with drop_last=True: "
          f"{len(DataLoader(dataset, batch_size=args.batch_size, drop_last=True))}")
    print(f"a new loader with seed {args.seed}: same order as epoch 1: "
          f"{shuffled_order(dataset, args.batch_size, args.seed) == orders[0]} | "
          f"seed {args.seed + 1}: {shuffled_order(dataset, args.batch_size, args.seed + 1)}")

    padded = next(iter(DataLoader(Sequences([3, 5, 1, 4]), batch_size=4, collate_fn=pad_collate)))
    print(f"padded tokens (T_max, B): {tuple(padded['tokens'].shape)}, "
          f"lengths {padded['lengths'].tolist()}, column 2: {padded['tokens'][:, 2].tolist()}")

    if workers < 2:
        print(f"with {workers} worker(s) there are no copies to compare: try --num-workers 2")
    else:
        def noisy_loader(worker_init_fn):
            return DataLoader(NoisyDataset(3 * workers, args.seed), batch_size=1, **in_workers,
                              worker_init_fn=worker_init_fn,
                              generator=torch.Generator().manual_seed(args.seed))
        before = draws_by_worker(noisy_loader(None))
        print(f"numpy Generator from __init__: draws by worker {before}")
        after = draws_by_worker(noisy_loader(seed_worker))
        print(f"reseeded in worker_init_fn:    draws by worker {after}")

        for split in (False, True):
            stream = RangeStream(0, 8, split=split)
            items = list(DataLoader(stream, batch_size=None, **in_workers))  # None: no batching
            print(f"RangeStream(0, 8, split={split}) in {workers} workers: "
                  f"{len(items)} items, {sorted(int(i) for i in items)}")

    rank0, rank1 = shards(dataset, num_replicas=2, seed=args.seed)
    covering = sorted(rank0 + rank1) == list(range(len(dataset)))
    print(f"DistributedSampler: rank 0 {rank0}, rank 1 {rank1} | "
          f"disjoint: {not set(rank0) & set(rank1)}, covering: {covering}")


# Workers started with spawn or forkserver import this file again (as "__mp_main__") to find
# Squares and pad_collate. Without this guard that import would run main() once more and try
# to start workers from inside a worker: Python stops it with a RuntimeError about the
# "bootstrapping phase". With the guard, importing does nothing.
if __name__ == "__main__":
    main()
