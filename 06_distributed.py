# %% [markdown]
# # 06 - Distributed training: `DistributedDataParallel` under `torchrun`
# One process per device, each on its own shard of the data; DDP averages the gradients, so every
# copy of the model takes the same step. Run: `python 06_distributed.py` (a world of one), then
# `torchrun --standalone --nproc-per-node 2 06_distributed.py` (two processes, on the CPU too);
# across machines, on each: `torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d
# --rdzv-endpoint HOST:29500 06_distributed.py`. Add `--snapshot run.pt` to save and resume.

# %%
import argparse
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset


def number_in(kind: type, lo, hi):
    """An argparse type: a number of the given kind (int or float) from lo to hi."""
    def number(text: str):
        value = kind(text)  # not a number: argparse says "invalid integer/number value"
        if not lo <= value <= hi:  # nan compares false: refused too
            raise argparse.ArgumentTypeError(f"must be in {lo}..{hi}, got {value}")
        return value
    number.__name__ = "integer" if kind is int else "number"
    return number


def make_model() -> nn.Module:  # small on purpose: the lesson is the processes, not the model
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))


def load_snapshot(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Load what save_snapshot (at the end) wrote into model and optimizer; return its epoch."""
    snapshot = torch.load(path, map_location=next(model.parameters()).device, weights_only=True)
    model.load_state_dict(snapshot["model"])  # strict: the same names and shapes, or an error
    optimizer.load_state_dict(snapshot["optimizer"])
    if type(snapshot["epoch"]) is not int or not 0 <= snapshot["epoch"] <= 100:
        raise ValueError(f"epoch {snapshot['epoch']!r}")
    return snapshot["epoch"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="DistributedDataParallel under torchrun.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: CUDA if there is a GPU, else the CPU")
    parser.add_argument("--epochs", type=number_in(int, 1, 100), default=5, help="1..100")
    parser.add_argument("--batch-size", type=number_in(int, 1, 512), default=32,
                        help="per process: 1..512")
    parser.add_argument("--lr", type=number_in(float, 1e-5, 1.0), default=0.01, help="1e-05..1")
    parser.add_argument("--seed", type=number_in(int, 0, 2**32 - 1), default=0, help="0..2**32-1")
    parser.add_argument("--snapshot", type=Path, help="save each epoch here; resume from it")
    args = parser.parse_args(argv)
    # Every rank checks alike, so a bad input stops all of them with the same error before any
    # joins the group (where the others would wait for it)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", 1))  # torchrun's, on this machine
    kind = "cuda" if args.device == "cuda" or (args.device == "auto" and gpus) else "cpu"
    if kind == "cuda" and not gpus:
        parser.error("--device cuda: no CUDA GPU on this machine")
    if kind == "cuda" and processes > gpus:
        parser.error(f"--device {args.device}: {processes} processes but {gpus} GPU(s) here; "
                     "nccl needs one GPU per process")
    args.device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if kind == "cuda"
                               else "cpu")  # LOCAL_RANK: which GPU of this machine is ours
    path = args.snapshot
    if path and not (path.parent.is_dir() and os.access(path.parent, os.W_OK)):
        parser.error(f"--snapshot {path}: cannot write in folder {path.parent}")
    if path and path.exists() and not (path.is_file() and path.stat().st_size <= 2**20):
        parser.error(f"--snapshot {path}: not a file of at most 1 MiB")  # a FIFO, a folder
    if path and path.exists():  # a trial load, and a step, on a fresh model
        try:
            model = make_model()
            optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
            load_snapshot(path, model, optimizer)
            for p in model.parameters():
                p.grad = torch.zeros_like(p)
            optimizer.step()  # optimizer state of the wrong shape fails here, not mid-training
        except Exception as e:  # torch.load and load_state_dict raise many kinds
            parser.error(f"--snapshot {path}: not a snapshot of this script, a dict of model, "
                         f"optimizer and epoch ({type(e).__name__})")
    return args


if __name__ == "__main__":  # demo code runs only when this file is run, never on import
    # Flags come from `python 06_distributed.py --x`, `torchrun ... 06_distributed.py --x` or
    # `%run 06_distributed.py --x`; in a notebook, the kernel's argv is not ours: the defaults.
    ours = Path(sys.argv[0]).name == Path(globals().get("__file__", "")).name
    args = parse_args(None if ours else [])
    sys.excepthook = lambda kind, *info: (  # Ctrl-C: one line, not a traceback
        print("interrupted", file=sys.stderr) if issubclass(kind, KeyboardInterrupt)
        else sys.__excepthook__(kind, *info))
    device = args.device
    torch.manual_seed(args.seed)

# %% [markdown]
# ## One process per device: `init_process_group`
# `torchrun` starts the processes and puts in each one's environment its `RANK` (0..world-1), its
# `LOCAL_RANK` on its machine (which GPU) and the `WORLD_SIZE`; `init_process_group` reads them
# and meets the others. The backend moves the tensors: `nccl` between GPUs, `gloo` on the CPU.
# Under plain `python` this script makes a world of one, so the same code runs. A collective
# (`all_gather`, `all_reduce`, `barrier`) must be called by every rank, in the same order: a rank
# that skips one (an `if rank == 0:` around `evaluate` below, say) leaves the others waiting.

# %%
def init_distributed(device: torch.device) -> tuple[int, int]:
    backend, gpu = ("nccl", device) if device.type == "cuda" else ("gloo", None)
    if gpu:
        torch.cuda.set_device(gpu)  # this rank's GPU, before nccl uses "the current" one
    if not dist.is_initialized():  # it is on a second run in the same notebook kernel
        if "RANK" in os.environ:  # env://: torchrun's RANK, WORLD_SIZE, MASTER_ADDR, ...
            # (another launcher, srun or mpirun, must set these too, or each process is alone)
            dist.init_process_group(backend, device_id=gpu)
        else:  # a world of one: the group's key-value store in this process, no port
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1,
                                    device_id=gpu)
    return dist.get_rank(), dist.get_world_size()


def say(line: str, every_rank: bool = False) -> None:
    """Print on rank 0 (the others would repeat the line) or, tagged, on every rank. In one
    write: torchrun starts `python -u`, where print writes text and newline apart, and another
    rank's line can land in between."""
    if every_rank:
        line = f"[rank {dist.get_rank()}] {line}"
    if every_rank or dist.get_rank() == 0:
        sys.stdout.write(line + "\n")


def gather(t: torch.Tensor) -> torch.Tensor:
    """Every rank's tensor, joined along dim 0 in rank order; every rank gets the result."""
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t)
    return torch.cat(parts)


if __name__ == "__main__":
    rank, world = init_distributed(device)
    say(f"local rank {os.environ.get('LOCAL_RANK', 0)}, device {device}", every_rank=True)
    port = os.environ.get("MASTER_PORT")  # where torchrun's processes meet
    how = f"torchrun, meeting at {os.environ.get('MASTER_ADDR')}:{port}" if port else "no torchrun"
    say(f"backend {dist.get_backend()}, world size {world}: {how}")
    total = torch.tensor([rank + 1], device=device)
    dist.all_reduce(total)  # in place: the sum over the ranks, on every rank
    say(f"all_gather(rank) -> {gather(torch.tensor([rank], device=device)).tolist()}, "
        f"all_reduce(rank + 1) -> {total.item()}")

# %% [markdown]
# ## Each rank its own shard: `DistributedSampler`
# Every rank builds the same data set (the seed decides it, not the rank); the sampler gives rank
# r every world-th index of one shuffled order, the same order on every rank. Pitfall: the
# shuffle is seeded with seed + epoch, so without `sampler.set_epoch(epoch)` every epoch repeats
# the first one's order.

# %%
def make_data(seed: int, n_train: int = 512, n_val: int = 128):
    """A small regression, y = x @ w + noise: the training and the validation set."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(8, 1, generator=g)
    x = torch.randn(n_train + n_val, 8, generator=g)  # (N, 8)
    y = x @ w + 0.1 * torch.randn(n_train + n_val, 1, generator=g)  # (N, 1)
    return TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:])


if __name__ == "__main__":
    train_set, val_set = make_data(args.seed)
    sampler = DistributedSampler(train_set, seed=args.seed)  # rank and world: from the group
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler)  # no shuffle=
    shard = list(sampler)
    say(f"shard: {len(shard)} of {len(train_set)} samples, first {shard[:6]}", every_rank=True)
    everyone = gather(torch.tensor(shard, device=device))
    say(f"all shards: {len(everyone)} indices, {len(everyone.unique())} distinct, "
        f"of {len(train_set)} samples")
    starts = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        starts.append(list(sampler)[:4])
    say(f"rank 0 with set_epoch(epoch): epoch 0 starts {starts[0]}, epoch 1 starts {starts[1]}")
    forgot = DistributedSampler(train_set, seed=args.seed)  # set_epoch never called
    again = [list(forgot)[:4] for _ in range(2)]
    say(f"rank 0 without set_epoch:     epoch 0 starts {again[0]}, epoch 1 starts {again[1]}"
        + (" (the same order every epoch)" if again[0] == again[1] else ""))

# %% [markdown]
# ## The model in `DistributedDataParallel`: one averaged gradient on every rank
# Wrapping the model copies rank 0's weights to all ranks. During `backward()` DDP all-reduces
# the gradients and divides by the world size: every rank holds the mean gradient over the global
# batch, takes the same step and keeps the same weights. The training loop is the one-process
# loop. The proof: the DDP gradient equals the same model's gradient on all ranks' batches at
# once, in one process (exactly so when every rank's batch has the same size: DDP averages the
# ranks' mean gradients).

# %%
def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> None:
    device = next(model.parameters()).device
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        loss = F.mse_loss(model(x.to(device)), y.to(device))
        loss.backward()  # DDP averages the gradients across the ranks here
        optimizer.step()  # the same step from the same weights: the copies stay equal


if __name__ == "__main__":
    ids = [device.index] if device.type == "cuda" else None  # None: the model's device
    model = DDP(make_model().to(device), device_ids=ids)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    x, y = (t.to(device) for t in next(iter(loader)))  # this rank's first batch
    F.mse_loss(model(x), y).backward()
    single = make_model().to(device)
    single.load_state_dict(model.module.state_dict())  # .module: the model inside the wrapper
    F.mse_loss(single(gather(x)), gather(y)).backward()  # the global batch in one process
    same = all(torch.allclose(a.grad, b.grad, atol=1e-6)
               for a, b in zip(model.parameters(), single.parameters()))
    agree = torch.tensor([int(same)], device=device)
    dist.all_reduce(agree, op=dist.ReduceOp.MIN)  # 1 only if every rank found the same
    say(f"DDP gradient == gradient of the global batch ({len(x) * world} samples) "
        f"in one process, on all {world} ranks: {bool(agree.item())}")

# %% [markdown]
# ## More processes, bigger steps: the global batch
# A step takes `--batch-size` samples on every rank: a global batch of batch size x world size,
# and fewer steps an epoch. `torchrun --nproc-per-node 2 06_distributed.py --batch-size 16` takes
# the same steps, and prints the same losses, as `python 06_distributed.py` (batch 32). Keep the
# per-rank batch instead, and the learning rate no longer fits: lr x world size (the linear
# scaling rule, with a few epochs of warmup) is a place to start for SGD, lr x sqrt(world size)
# for Adam; then tune.

# %%
if __name__ == "__main__":
    say(f"global batch: {args.batch_size} per rank x world size {world} = "
        f"{args.batch_size * world} samples a step, {len(loader)} steps an epoch, "
        f"lr {args.lr:g}")

# %% [markdown]
# ## Evaluation: every rank scores its shard, `all_reduce` adds up
# Each rank sums the loss and counts the samples of its shard; all-reducing both gives every rank
# the loss over the whole validation set. Where the world size does not divide its 128 samples,
# the sampler repeats a few to even the shards, and those count twice.

# %%
@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader) -> float:
    device = next(model.parameters()).device
    model.eval()
    totals = torch.zeros(2, device=device)  # (sum of squared errors, number of samples)
    for x, y in loader:
        error = F.mse_loss(model(x.to(device)), y.to(device), reduction="sum")
        totals += torch.stack([error, torch.tensor(float(len(y)), device=device)])
    dist.all_reduce(totals)  # sums over the ranks
    return (totals[0] / totals[1]).item()


if __name__ == "__main__":
    val_loader = DataLoader(val_set, batch_size=args.batch_size,
                            sampler=DistributedSampler(val_set, shuffle=False))
    say(f"val loss before training: {evaluate(model, val_loader):.4f} "
        f"(all {len(val_set)} samples)")

# %% [markdown]
# ## Snapshots: rank 0 saves, every rank resumes
# The weights are the same everywhere, so rank 0 alone writes `model.module.state_dict()` (keys
# without DDP's `module.` prefix: a plain model loads them), the optimizer's state (Adam's
# running averages) and the epoch, to a temporary name that it then renames: a process killed
# mid-write leaves the last snapshot whole. At start every rank loads it (`load_snapshot`, in the
# first cell, where `parse_args` tries it) and goes on at the next epoch. `torchrun
# --max-restarts 3` restarts all processes after one dies; the snapshot is what makes them resume
# rather than start over. Across machines, the path must be on a file system that all of them
# share: a rank that finds no snapshot starts at epoch 1 while the others resume, and they hang.

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
    dist.barrier()  # the others wait: no rank goes on before the snapshot is there


if __name__ == "__main__":
    done = 0
    if args.snapshot and args.snapshot.exists():
        done = load_snapshot(args.snapshot, model.module, optimizer)
        say(f"resumed from {args.snapshot.name}: epoch {done} of {args.epochs} done")
    for epoch in range(done + 1, args.epochs + 1):
        sampler.set_epoch(epoch)  # a new order each epoch, the same on every rank
        train_epoch(model, loader, optimizer)
        loss = evaluate(model, val_loader)
        if args.snapshot:
            save_snapshot(args.snapshot, model, optimizer, epoch)
        say(f"epoch {epoch} | val loss {loss:.4f}")
    checksum = sum(p.sum() for p in model.parameters()).item()  # each rank its own copy's
    say(f"weights checksum {checksum:.6f}", every_rank=True)
    dist.destroy_process_group()
