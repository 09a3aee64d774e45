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

found = torch.accelerator.current_accelerator(check_available=True)  # None: no accelerator
parser = argparse.ArgumentParser(description="DistributedDataParallel under torchrun.")
parser.add_argument("--device", default=found.type if found and found.type != "mps" else "cpu",
                    help="for every process (not mps: Gloo moves CPU and CUDA tensors only)")
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--batch-size", type=int, default=32, help="per process")
parser.add_argument("--snapshot", type=Path, help="save each epoch here; resume from it")
args = parser.parse_args([] if "kernel_launcher" in sys.argv[0] else None)  # notebook: defaults
torch.manual_seed(0)

# %% [markdown]
# ## One process per device: `init_process_group`
# `torchrun` gives each process `RANK`, `WORLD_SIZE`, `MASTER_ADDR` and `MASTER_PORT`, which
# `init_process_group` reads, and `LOCAL_RANK`, its number on this machine, which picks its GPU.
# With no `RANK` (under `python`) this makes a world of one. Pitfall: `WORLD_SIZE` without `RANK`
# (a launcher of your own that exports only that) would make N worlds of one, all training on all
# the data into one snapshot; so that case goes to `init_process_group`, which raises. Every rank
# must call each collective in the same order, or a call is matched with another rank's next one.
# %%
device, device_id = torch.device("cpu"), None  # device_id: this rank's accelerator, if any
if args.device != "cpu":
    device = device_id = torch.device(args.device, int(os.environ.get("LOCAL_RANK", 0)))
    torch.accelerator.set_device_index(device.index)  # for the calls that name no device index
backend = dist.get_default_backend_for_device(device)  # gloo for the CPU, nccl for CUDA, ...
if "RANK" in os.environ or "WORLD_SIZE" in os.environ:  # env://, which raises if RANK is missing
    dist.init_process_group(backend, device_id=device_id)
else:
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1,
                            device_id=device_id)
rank, world_size = dist.get_rank(), dist.get_world_size()


def gather(t: torch.Tensor) -> torch.Tensor:  # (N, ...) on each rank -> (world_size * N, ...)
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t)  # every rank's t, in rank order; t has one shape on all ranks
    return torch.cat(parts)

# %% [markdown]
# ## Each rank its own shard: `DistributedSampler`
# Every rank builds the same data. The sampler deals rank r every world_size-th index of one
# shuffled order, repeating a few so that all ranks take as many steps (each backward's all-reduce
# needs every rank). Pitfall: it shuffles with seed + epoch, so call `set_epoch(epoch)` each epoch.
# %%
g = torch.Generator().manual_seed(0)  # its own: the same data on every rank
w, inputs = torch.randn(8, 1, generator=g), torch.randn(640, 8, generator=g)  # (8, 1), (N, 8)
targets = inputs @ w + 0.1 * torch.randn(640, 1, generator=g)  # (N, 1): a linear rule, noise
train_set = TensorDataset(inputs[:512], targets[:512])
val_set = TensorDataset(inputs[512:], targets[512:])
sampler = DistributedSampler(train_set, seed=0)  # the rank and world size of the group
loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler)
shard = list(sampler)
# One write per line, because torchrun's output is unbuffered and print writes the newline apart.
sys.stdout.write(f"[rank {rank}] {device} ({dist.get_backend()}): a shard of {len(shard)} of "
                 f"{len(train_set)} samples, first {shard[:5]}\n")
everyone = gather(torch.tensor(shard, device=device))
again = list(sampler)[:3]  # the next epoch, without set_epoch
sampler.set_epoch(1)
if rank == 0:
    print(f"all shards together: {len(everyone)} indices, {len(everyone.unique())} distinct")
    print(f"epoch 0 starts {shard[:3]}; without set_epoch the next epoch starts {again} again; "
          f"after set_epoch(1) it starts {list(sampler)[:3]}")

# %% [markdown]
# ## The model in `DistributedDataParallel`: one averaged gradient on every rank
# Wrapping copies rank 0's weights to all ranks; in `backward()` DDP averages the gradients over
# the ranks, so every rank takes the same step: one model's gradient on all ranks' batches, up to
# rounding. A step takes batch size x world size samples, so N processes take 1/N of the steps
# and end at a higher loss: `--batch-size 16` on 2 processes prints the losses of 32 on 1.
# %%
def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> None:
    model.train()
    for x, y in loader:  # (B, 8) and (B, 1), this rank's part of the global batch
        optimizer.zero_grad()
        F.mse_loss(model(x.to(device)), y.to(device)).backward()  # DDP averages the gradients
        optimizer.step()  # the same step from the same weights: the copies stay equal


model = DDP(nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1)).to(device))
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
single = copy.deepcopy(model.module)  # .module is the model inside the wrapper: the same weights
x, y = (t.to(device) for t in next(iter(loader)))  # this rank's first batch, (B, 8) and (B, 1)
F.mse_loss(model(x), y).backward()  # train_epoch's zero_grad() clears these gradients later
F.mse_loss(single(gather(x)), gather(y)).backward()  # the global batch in one process
same = all(torch.allclose(a.grad, b.grad, atol=1e-6)
           for a, b in zip(model.parameters(), single.parameters()))
if rank == 0:  # after the all-reduce every rank holds the same gradient
    print(f"DDP gradient == gradient of the global batch ({len(x)} x {world_size} samples) in one "
          f"process: {same}; an epoch: {len(loader)} steps of {len(x) * world_size}")

# %% [markdown]
# ## Evaluation: every rank scores a part, `all_reduce` adds up
# Each rank sums the squared errors of every world_size-th sample, so none is padded in or counted
# twice, and `all_reduce` adds up the ranks' sums and counts: the whole set's mean at any world
# size. The totals are float64, which counts exactly up to 2**53 (float32 only up to 2**24).
# %%
@torch.inference_mode()
def evaluate(model: nn.Module, dataset: TensorDataset, batch_size: int = 64) -> tuple[float, int]:
    model.eval()
    part = Subset(dataset, range(dist.get_rank(), len(dataset), dist.get_world_size()))
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of squared errors, count)
    for x, y in DataLoader(part, batch_size=batch_size):
        totals[0] += F.mse_loss(model(x.to(device)), y.to(device), reduction="sum")
        totals[1] += len(y)
    dist.all_reduce(totals)  # sums over the ranks, in place
    return (totals[0] / totals[1]).item(), int(totals[1])  # the mean, the samples scored


loss, count = evaluate(model.module, val_set)  # .module: without DDP's forward and its collectives
if rank == 0:
    print(f"val loss, untrained: {loss:.4f} ({count} samples, each scored once)")

# %% [markdown]
# ## Snapshots: rank 0 saves, every rank resumes
# Rank 0 saves `model.module.state_dict()` (keys without DDP's `module.` prefix), the optimizer's
# state and the epoch to a temporary name, then renames it, so a kill mid-write leaves the last one
# whole. Every rank loads it at start: across machines, put it on a disk they share. Below, the
# variable gives each of torchrun's restarts a new store, without which one can fail to connect:
#
#     TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun --standalone --nproc-per-node 2 \
#         --max-restarts 3 06_distributed.py --epochs 20 --snapshot run.pt
# %%
def save_snapshot(path: Path, model: DDP, optimizer: torch.optim.Optimizer, epoch: int) -> None:
    if dist.get_rank() == 0:
        part = path.with_name(path.name + ".part")
        torch.save({"model": model.module.state_dict(), "optimizer": optimizer.state_dict(),
                    "epoch": epoch}, part)
        os.replace(part, path)  # a rename in one folder: the old snapshot or the new, never half
    dist.barrier()  # no rank goes on before the snapshot is there


done = 0  # the last epoch done
if args.snapshot and args.snapshot.exists():
    snapshot = torch.load(args.snapshot, map_location=device, weights_only=True)
    model.module.load_state_dict(snapshot["model"])  # raises unless the names and shapes match
    optimizer.load_state_dict(snapshot["optimizer"])
    done = snapshot["epoch"]
if done and rank == 0:
    print(f"resumed from {args.snapshot}: epoch {done} of {args.epochs} done")
for epoch in range(done + 1, args.epochs + 1):
    sampler.set_epoch(epoch)  # every rank computes the same new order and takes its own part
    train_epoch(model, loader, optimizer)
    if args.snapshot:
        save_snapshot(args.snapshot, model, optimizer, epoch)
    loss, _ = evaluate(model.module, val_set)
    if rank == 0:
        print(f"epoch {epoch} | val loss {loss:.4f}")
sys.stdout.write(f"[rank {rank}] weights checksum {sum(p.sum() for p in model.parameters()):.6f}\n")
time.sleep(0.1)  # a workaround for a PyTorch bug (see the README), not a pattern
dist.destroy_process_group()
