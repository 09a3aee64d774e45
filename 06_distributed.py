# %% [markdown]
# # 06 - Distributed training: `DistributedDataParallel` under `torchrun`
# One process per device, each with its own copy of the model and its own part of the data. DDP
# averages the gradients, so every copy takes the same step. Run: `python 06_distributed.py` (one
# process), then `torchrun --standalone --nproc-per-node 2 06_distributed.py`.
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

torch.manual_seed(0)
found = torch.accelerator.current_accelerator(check_available=True)  # None if there is none
use_found = found is not None and found.type != "mps"  # mps gets Gloo, which sends no mps tensors
parser = argparse.ArgumentParser(description="DistributedDataParallel under torchrun.")
parser.add_argument("--device", default=found.type if use_found else "cpu")
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--batch-size", type=int, default=32, help="per process")
parser.add_argument("--snapshot", type=Path, help="save each epoch here; resume from it")
# In a notebook, sys.argv is the kernel's own command line, so there the defaults apply.
args = parser.parse_args([] if sys.argv[0].endswith("kernel_launcher.py") else None)
# %% [markdown]
# ## One process per device: `init_process_group`
# `torchrun` sets `RANK`, `WORLD_SIZE` and the address where the processes meet, which
# `init_process_group` reads, and `LOCAL_RANK`, the process's number on its machine, which picks
# its GPU. Under plain `python` none is set, so we make a world of one. Pitfall: a launcher that
# sets only `WORLD_SIZE` must get PyTorch's error, not N worlds of one that each train on all data.
# %%
device = torch.device(args.device)
if device.type != "cpu":  # one GPU per process, picked by LOCAL_RANK
    device = torch.device(device.type, int(os.environ.get("LOCAL_RANK", 0)))
    torch.accelerator.set_device_index(device.index)  # for the calls that name no device
gpu = device if device.type != "cpu" else None  # device_id=gpu tells the group which GPU is ours
backend = dist.get_default_backend_for_device(device)  # gloo for the CPU, nccl for CUDA, xccl, ...
if "RANK" in os.environ or "WORLD_SIZE" in os.environ:
    dist.init_process_group(backend, device_id=gpu)  # raises if a variable is missing
else:  # a HashStore is the table where the ranks meet, here in this process's memory
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, device_id=gpu)
rank = dist.get_rank()
world_size = dist.get_world_size()
# %% [markdown]
# ## Each rank its own shard: `DistributedSampler`
# Every rank builds the same data. The sampler shuffles the indices the same way on every rank and
# deals each rank every world_size-th one, repeating a few if need be to make the shards equal.
# Rank 0 prints the shards, gathered by `all_gather`, which every rank must call, or the rest wait.
# %%
def gather(t: torch.Tensor) -> torch.Tensor:  # (N, ...) on each rank -> (world_size * N, ...)
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t)  # every rank's t, in rank order; t has one shape on all ranks
    return torch.cat(parts)

w = torch.randn(8, 1)  # the rule to learn; every rank has the same seed, so the same data
inputs = torch.randn(640, 8)
targets = inputs @ w + 0.1 * torch.randn(640, 1)  # (640, 1), with a little noise
train_set = TensorDataset(inputs[:512], targets[:512])
val_set = TensorDataset(inputs[512:], targets[512:])
sampler = DistributedSampler(train_set, seed=0)  # reads the rank and world size of the group
loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler)
shards = gather(torch.tensor(list(sampler), device=device))  # all ranks' indices, in rank order
firsts = shards.reshape(world_size, -1)[:, :3].tolist()
if rank == 0:
    print(f"{world_size} process(es) on {device.type}, backend {dist.get_backend()}")
    print(f"first 3 indices of each rank's shard: {firsts}")
    print(f"all shards together: {len(shards)} indices, {len(shards.unique())} distinct of 512")
# %% [markdown]
# ## A new order each epoch: `set_epoch`
# The sampler shuffles with its seed plus the epoch number that `set_epoch` sets. Pitfall: without
# `set_epoch`, every epoch repeats the first order. With it, every rank computes the same new
# permutation and takes its own part.
# %%
again = list(sampler)[:3]  # each list(sampler) is an epoch's pass: here without set_epoch
sampler.set_epoch(1)  # as the training loop does before its epoch 1
new = list(sampler)[:3]
if rank == 0:
    print(f"rank 0's shard starts {firsts[0]}; again without set_epoch, {again}; after it, {new}")
# %% [markdown]
# ## `DistributedDataParallel`: one averaged gradient on every rank
# Wrapping copies rank 0's weights to every rank. In `backward()`, DDP averages the ranks'
# gradients: with batches of one size, the gradient of the mean loss over the global batch. We
# check it against a copy outside DDP (a check that means something with 2 processes or more).
# With the batch per process and the learning rate fixed, N processes take 1/N of the steps per
# epoch: `--batch-size 16` on 2 processes gives the losses of 32 on 1.
# %%
model = DDP(nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1)).to(device))
plain = copy.deepcopy(model.module)  # .module is the model inside DDP
x, y = next(iter(loader))  # this rank's first batch, (B, 8) and (B, 1)
F.mse_loss(model(x.to(device)), y.to(device)).backward()  # then DDP averages the ranks' gradients
F.mse_loss(plain(gather(x.to(device))), gather(y.to(device))).backward()  # (B * world_size, 8)
ddp_grad = torch.cat([p.grad.flatten() for p in model.parameters()])
plain_grad = torch.cat([p.grad.flatten() for p in plain.parameters()])
diff = (ddp_grad - plain_grad).abs().max().item()
close = torch.allclose(ddp_grad, plain_grad, atol=1e-6)
if rank == 0:
    print(f"DDP's gradient vs the global batch's: max difference {diff:.1e}, allclose {close}")
    print(f"a global batch of {len(x)} x {world_size} samples; an epoch: {len(loader)} steps")
# %% [markdown]
# ## Evaluation: each rank scores a part, `all_reduce` adds up
# Rank r scores every world_size-th sample from r, so each sample is scored once (a
# `DistributedSampler` could repeat some). `all_reduce` adds up the ranks' sums and counts. The
# count is int64, so it stays exact; the sum is float64, so it keeps its precision as it grows.
# %%
@torch.inference_mode()
def evaluate(model: nn.Module, dataset: TensorDataset, batch_size: int = 64) -> tuple[float, int]:
    model.eval()
    part = Subset(dataset, range(dist.get_rank(), len(dataset), dist.get_world_size()))
    count = torch.tensor(len(part), device=device)  # int64
    total = torch.zeros((), dtype=torch.float64, device=device)  # the sum of squared errors
    for x, y in DataLoader(part, batch_size=batch_size):
        total += F.mse_loss(model(x.to(device)), y.to(device), reduction="sum")
    dist.all_reduce(count)  # the sum over the ranks, in place
    dist.all_reduce(total)
    return (total / count).item(), count.item()

loss, count = evaluate(model.module, val_set)  # .module: the plain model, no DDP needed
if rank == 0:
    print(f"val loss, untrained: {loss:.4f} ({count} of {len(val_set)} samples, each once)")
# %% [markdown]
# ## Training, with snapshots: rank 0 saves, every rank resumes
# Rank 0 saves `model.module`'s weights, the optimizer's state and the epoch to a temporary file,
# then renames it: a kill mid-write leaves the last snapshot whole. Every rank loads it at start
# (across machines, from a disk they share). With `--max-restarts`, torchrun restarts the workers
# when one dies; the variable works around a PyTorch bug, without which a restart can hang:
#
#     TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun --standalone --nproc-per-node 2 \
#         --max-restarts 3 06_distributed.py --epochs 20 --snapshot run.pt
# %%
def save_snapshot(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int):
    if dist.get_rank() == 0:
        part = path.with_name(path.name + ".part")
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}
        torch.save(state, part)
        os.replace(part, path)  # a rename in one folder: the old snapshot or the new, never half
    dist.barrier()  # no rank goes on before the snapshot is there

optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
done = 0  # the last epoch done
if args.snapshot and args.snapshot.exists():  # across machines, on a disk they all read
    snapshot = torch.load(args.snapshot, map_location=device, weights_only=True)
    model.module.load_state_dict(snapshot["model"])  # raises unless the names and shapes match
    optimizer.load_state_dict(snapshot["optimizer"])
    done = snapshot["epoch"]
    if rank == 0:
        print(f"resumed from {args.snapshot}: epoch {done} of {args.epochs} done")
for epoch in range(done + 1, args.epochs + 1):
    sampler.set_epoch(epoch)  # every rank computes the same new order and takes its own part
    model.train()
    for x, y in loader:  # this rank's part of the global batch
        optimizer.zero_grad()  # also clears the check's gradients above
        F.mse_loss(model(x.to(device)), y.to(device)).backward()  # DDP averages the gradients
        optimizer.step()  # the same step from the same weights on every rank
    if args.snapshot:
        save_snapshot(args.snapshot, model.module, optimizer, epoch)
    loss, _ = evaluate(model.module, val_set)
    if rank == 0:
        print(f"epoch {epoch} | val loss {loss:.4f}")
checksum = nn.utils.parameters_to_vector(model.parameters()).sum()  # one number on each rank
rounded = [round(c, 6) for c in gather(checksum.reshape(1)).tolist()]
if rank == 0:
    print(f"weights checksum on each rank, equal if the copies stayed in step: {rounded}")
time.sleep(0.1)  # a workaround for a PyTorch bug (Gloo may crash a quick exit), not a pattern
dist.destroy_process_group()
