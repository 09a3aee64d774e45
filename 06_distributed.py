# %% [markdown]
# # 06 - Distributed training: `DistributedDataParallel` under `torchrun`
# One process per device, each on its own shard of the data; DDP averages the gradients, so every
# copy of the model takes the same step. Run: `python 06_distributed.py` (a world of one), then
# `torchrun --standalone --nproc-per-node 2 06_distributed.py` (add `--device cpu` with one GPU).

# %%
import argparse
import copy
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, Subset, TensorDataset

if __name__ == "__main__":  # the demos run when this file is the program, never on import
    found = torch.accelerator.current_accelerator(check_available=True)  # None: no accelerator
    devices = ["cpu", found.type] if found and found.type != "mps" else ["cpu"]  # Gloo: no MPS
    parser = argparse.ArgumentParser(description="DistributedDataParallel under torchrun.")
    parser.add_argument("--device", choices=devices, default=devices[-1], help="for every process")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--snapshot", type=Path, help="save each epoch here; resume from it")
    parser.add_argument("--seed", type=int, default=0)
    # flags: `python 06_distributed.py --epochs 2` or `%run 06_distributed.py ...`; notebook: none
    args = parser.parse_args([] if sys.argv[0].endswith("kernel_launcher.py") else None)
    torch.manual_seed(args.seed)

# %% [markdown]
# ## One process per device: `init_process_group`
# `torchrun` gives each process `RANK` (0..world-1), `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`,
# which `init_process_group` reads, and `LOCAL_RANK`, `LOCAL_WORLD_SIZE` (on this machine), which
# pick our GPU. Every rank must call each collective (`all_reduce`, `barrier`, ...) in the same
# order. One under `if rank == 0:` meets the others' next one: wrong values, an error or a hang.

# %%
def init_distributed(device_type: str) -> torch.device:
    """Join torchrun's group (or a world of one); return this rank's device, or raise ValueError."""
    device = torch.device("cpu")
    if device_type != "cpu":
        device = torch.device(device_type, int(os.environ.get("LOCAL_RANK", 0)))
        if int(os.environ.get("LOCAL_WORLD_SIZE", 1)) > torch.accelerator.device_count():
            raise ValueError(f"fewer {device_type} devices than processes here")  # on every rank
        torch.accelerator.set_device_index(device.index)  # for calls that name no device index
    backend = dist.get_default_backend_for_device(device)  # gloo for the CPU, nccl for CUDA
    device_id = None if device.type == "cpu" else device  # this rank's accelerator, never a CPU
    if "RANK" in os.environ:  # env://: torchrun's variables
        dist.init_process_group(backend, device_id=device_id)
    elif not dist.is_initialized():  # no torchrun: a world of one (a re-run cell has joined)
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1,
                                device_id=device_id)
    return device


def say(line: str, every_rank: bool = False) -> None:  # one write: print makes two, lines mix
    if every_rank or dist.get_rank() == 0:
        sys.stdout.write(f"[rank {dist.get_rank()}] {line}\n" if every_rank else f"{line}\n")


def gather(t: torch.Tensor) -> torch.Tensor:  # every rank's t (one shape on all), in rank order
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t)
    return torch.cat(parts)


if __name__ == "__main__":
    try:
        device = init_distributed(args.device)
    except ValueError as e:
        parser.error(f"--device: {e}")

# %% [markdown]
# ## Each rank its own shard: `DistributedSampler`
# Every rank builds the same data. The sampler deals rank r every world-th index of one order
# (shuffled by default), repeating a few so that all take as many steps (each backward's all-reduce
# needs every rank). Pitfall: it shuffles with seed + epoch, so call `set_epoch(epoch)`.

# %%
def make_data(seed: int, n_train: int = 512, n_val: int = 128):  # y = x @ w + noise
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(8, 1, generator=g)
    x = torch.randn(n_train + n_val, 8, generator=g)  # (N, 8)
    y = x @ w + 0.1 * torch.randn(n_train + n_val, 1, generator=g)  # (N, 1)
    return TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:])


if __name__ == "__main__":
    train_set, val_set = make_data(args.seed)
    sampler = DistributedSampler(train_set, seed=args.seed)  # rank and world: from the group
    try:  # a batch size DataLoader refuses: one error line
        loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler)
    except ValueError as e:
        parser.error(f"--batch-size {args.batch_size}: {e}")
    shard = list(sampler)
    say(f"device {device} ({dist.get_backend()}), shard: {len(shard)} of {len(train_set)} samples, "
        f"first {shard[:5]}", every_rank=True)
    everyone = gather(torch.tensor(shard, device=device))
    say(f"all shards: {len(everyone)} indices, {len(everyone.unique())} distinct")
    again = list(sampler)[:3]  # the next epoch without set_epoch
    sampler.set_epoch(1)
    say(f"epoch 0 starts {shard[:3]}; epoch 1 without set_epoch {again} (the same: "
        f"{again == shard[:3]}); with set_epoch(1) {list(sampler)[:3]}")

# %% [markdown]
# ## The model in `DistributedDataParallel`: one averaged gradient on every rank
# Wrapping copies rank 0's weights to all ranks; in `backward()` DDP averages the gradients over
# the ranks, so every rank takes the same step. Check: that equals, up to rounding, one model's
# gradient on all ranks' batches. A step takes batch size x world size samples: to keep the run,
# divide the batch size (`--batch-size 16` on 2 processes prints the losses of 32 on 1), or scale
# the lr (x world for SGD, x sqrt(world) for Adam: rules of thumb).

# %%
def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> None:
    device = next(model.parameters()).device
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        F.mse_loss(model(x.to(device)), y.to(device)).backward()  # DDP averages the gradients
        optimizer.step()  # the same step from the same weights: the copies stay equal


if __name__ == "__main__":
    model = DDP(nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1)).to(device))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    single = copy.deepcopy(model.module)  # .module: the model inside the wrapper, the same weights
    x, y = (t.to(device) for t in next(iter(loader)))  # this rank's first batch
    F.mse_loss(model(x), y).backward()  # train_epoch's zero_grad() clears these later
    F.mse_loss(single(gather(x)), gather(y)).backward()  # the global batch in one process
    same = all(torch.allclose(a.grad, b.grad, atol=1e-6)
               for a, b in zip(model.parameters(), single.parameters()))
    agree = gather(torch.tensor([int(same)], device=device))  # 1 or 0 from every rank
    say(f"DDP gradient == gradient of the global batch, {len(x)} x {dist.get_world_size()} "
        f"samples, in one process: {bool(agree.all())}; {len(loader)} steps an epoch")

# %% [markdown]
# ## Evaluation: every rank scores a part, `all_reduce` adds up
# Each rank sums the squared errors of every world-th sample (no padding: each counts once); summed
# by `all_reduce`, that is the whole set's loss at any world size. It scores `model.module`: DDP's
# first forward after training broadcasts buffers (batch norm's), which a rank with no batch skips.

# %%
@torch.inference_mode()
def evaluate(model: nn.Module, dataset: TensorDataset, batch_size: int = 64) -> tuple[float, int]:
    """(mean squared error over dataset, the number of samples scored), on every rank."""
    device = next(model.parameters()).device
    model.eval()
    part = Subset(dataset, range(dist.get_rank(), len(dataset), dist.get_world_size()))
    totals = torch.zeros(2, device=device)  # (sum of squared errors, number of samples)
    for x, y in DataLoader(part, batch_size=batch_size):
        totals[0] += F.mse_loss(model(x.to(device)), y.to(device), reduction="sum")
        totals[1] += len(y)
    dist.all_reduce(totals)  # sums over the ranks
    return (totals[0] / totals[1]).item(), int(totals[1].item())


if __name__ == "__main__":
    loss, count = evaluate(model.module, val_set)
    say(f"val loss, untrained: {loss:.4f} ({count} samples)")

# %% [markdown]
# ## Snapshots: rank 0 saves, every rank resumes
# Rank 0 saves `model.module.state_dict()` (no `module.` prefix), the optimizer's state and the
# epoch to a temporary name, then renames it: a kill mid-write leaves the last one whole. Every rank
# loads it at start (across machines: from a shared disk). `--max-restarts 3` restarts all after a
# kill; the variable gives each restart a new store, or one can fail to connect (pytorch#135712):
#
#     TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun --standalone --nproc-per-node 2 \
#         --max-restarts 3 06_distributed.py --epochs 20 --snapshot run.pt

# %%
def save_snapshot(path: Path, model: DDP, optimizer: torch.optim.Optimizer, epoch: int) -> None:
    if dist.get_rank() == 0:
        part = path.with_name(path.name + ".part")
        try:
            torch.save({"model": model.module.state_dict(), "optimizer": optimizer.state_dict(),
                        "epoch": epoch}, part)
            os.replace(part, path)  # atomic: the old snapshot or the new one, never half of one
        finally:
            part.unlink(missing_ok=True)  # after a Ctrl-C mid-write
    dist.barrier()  # every rank waits here until the snapshot is there


def load_snapshot(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Load save_snapshot's file into model and optimizer; return its epoch (0: no file yet).
    Raises ValueError naming the file if its folder is missing or it cannot be loaded here."""
    if not path.parent.is_dir():
        raise ValueError(f"{path}: no folder {path.parent} to save in")
    if not path.exists():
        return 0
    try:
        snapshot = torch.load(path, map_location=next(model.parameters()).device, weights_only=True)
        model.load_state_dict(snapshot["model"])  # the same names and shapes, or an error
        optimizer.load_state_dict(snapshot["optimizer"])
        return int(snapshot["epoch"])
    except Exception as e:  # torch.load and load_state_dict raise many kinds
        raise ValueError(f"{path}: cannot load it into this model ({type(e).__name__})") from None


if __name__ == "__main__":
    try:
        done = load_snapshot(args.snapshot, model.module, optimizer) if args.snapshot else 0
    except ValueError as e:
        parser.error(f"--snapshot {e}")
    if done:
        say(f"resumed from {args.snapshot.name}: epoch {done} of {args.epochs} done")
    for epoch in range(done + 1, args.epochs + 1):
        sampler.set_epoch(epoch)  # a new order each epoch, the same on every rank
        train_epoch(model, loader, optimizer)
        if args.snapshot:
            save_snapshot(args.snapshot, model, optimizer, epoch)
        say(f"epoch {epoch} | val loss {evaluate(model.module, val_set)[0]:.4f}")
    say(f"weights checksum {sum(p.sum() for p in model.parameters()).item():.6f}", every_rank=True)
    time.sleep(0.1)  # Gloo's threads freeing tensors as Python exits can abort it (pytorch#190489)
    dist.destroy_process_group()
