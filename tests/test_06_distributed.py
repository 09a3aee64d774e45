"""06_distributed.py: process group, DistributedSampler shards, DDP's averaged gradient, the
global batch, all_reduce'd evaluation, snapshots; run as a world of one and under torchrun."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import (
    ROOT,
    early,
    load_script,
    one_thread,
    parse_error,
    run_in_process,
    scratch,
    submit,
)

m = load_script("06_distributed.py")

KEY_LINES = [r"^\[rank 0\] local rank 0, device (cpu|cuda:0)$",
             r"^backend (gloo|nccl), world size 1: no torchrun$",
             r"^all_gather\(rank\) -> \[0\], all_reduce\(rank \+ 1\) -> 1$",
             r"^\[rank 0\] shard: 512 of 512 samples, first \[\d+(, \d+){5}\]$",
             r"^all shards: 512 indices, 512 distinct, of 512 samples$",
             r"^rank 0 with set_epoch\(epoch\): epoch 0 starts \[[\d, ]+\], "
             r"epoch 1 starts \[[\d, ]+\]$",
             r"^rank 0 without set_epoch: +epoch 0 starts .* \(the same order every epoch\)$",
             r"^DDP gradient == gradient of the global batch \(32 samples\) in one process, "
             r"on all 1 ranks: True$",
             r"^global batch: 32 per rank x world size 1 = 32 samples a step, 16 steps an epoch",
             r"^val loss before training: \d+\.\d{4} \(all 128 samples\)$",
             r"^epoch 1 \| val loss \d+\.\d{4}$", r"^epoch 5 \| val loss \d+\.\d{4}$",
             r"^\[rank 0\] weights checksum -?\d+\.\d{6}$"]
BAD_RUN = (["--lr", "2"], "argument --lr: must be in 1e-05..1.0, got 2.0")
FLAG_RUN = (["--batch-size", "64"], r"^global batch: 64 per rank x world size 1 = 64 samples "
                                    r"a step, 8 steps an epoch")
EPOCH = re.compile(r"^epoch (\d+) \| val loss ([\d.]+)$", re.MULTILINE)
CHECKSUM = re.compile(r"^\[rank (\d)\] weights checksum (-?[\d.]+)$", re.MULTILINE)


# --- the command line, in-process --------------------------------------------------------------

@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_defaults_run_on_the_cpu_without_a_gpu(no_gpu):
    args = m.parse_args([])
    assert (args.device, args.epochs, args.batch_size, args.lr, args.seed, args.snapshot) == (
        torch.device("cpu"), 5, 32, 0.01, 0, None)


BAD_FLAGS = [  # argv, the start of the error message (test_scripts.py runs them)
    (["--epochs", "0"], "argument --epochs: must be in 1..100, got 0"),
    (["--epochs", "101"], "argument --epochs: must be in 1..100, got 101"),
    (["--batch-size", "0"], "argument --batch-size: must be in 1..512, got 0"),
    (["--batch-size", "513"], "argument --batch-size: must be in 1..512, got 513"),
    (["--batch-size", "1e3"], "argument --batch-size: invalid integer value: '1e3'"),
    (["--lr", "0"], "argument --lr: must be in 1e-05..1.0, got 0.0"),
    (["--lr", "nan"], "argument --lr: must be in 1e-05..1.0, got nan"),
    (["--lr", "inf"], "argument --lr: must be in 1e-05..1.0, got inf"),
    (["--lr", "fast"], "argument --lr: invalid number value: 'fast'"),
    (["--device", "mps"], "argument --device: invalid choice: 'mps'"),
    (["--steps", "3"], "unrecognized arguments: --steps 3"),
]

def test_cuda_without_a_gpu_is_refused(no_gpu, capsys):
    assert parse_error(m, ["--device", "cuda"], capsys) == (
        "--device cuda: no CUDA GPU on this machine")


def fake_gpus(monkeypatch, count: int, local_rank: int, local_world_size: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world_size))


@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_more_processes_than_gpus_is_refused_on_every_rank(device, monkeypatch, capsys):
    for local_rank in (0, 1):  # rank 0 has a GPU too: it must not go on and wait for rank 1
        fake_gpus(monkeypatch, count=1, local_rank=local_rank, local_world_size=2)
        assert parse_error(m, ["--device", device], capsys) == (
            f"--device {device}: 2 processes but 1 GPU(s) here; nccl needs one GPU per process")


def test_each_process_gets_the_gpu_of_its_local_rank(monkeypatch):
    fake_gpus(monkeypatch, count=2, local_rank=1, local_world_size=2)
    assert m.parse_args([]).device == torch.device("cuda:1")
    assert m.parse_args(["--device", "cpu"]).device == torch.device("cpu")


def ours(path: Path, epoch=1, model: nn.Module | None = None) -> Path:
    model = model or m.make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(4, 8)).sum().backward()
    optimizer.step()  # so that the optimizer has state (Adam's running averages) to save
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "epoch": epoch}, path)
    return path


def make_bad(kind: str, path: Path) -> Path:
    if kind == "garbage bytes":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "empty file":
        path.touch()
    elif kind == "not a dict":
        torch.save([1, 2, 3], path)
    elif kind == "a bare state_dict":
        torch.save(m.make_model().state_dict(), path)
    elif kind == "another shape":
        ours(path, model=nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1)))
    elif kind == "optimizer state of another shape":
        ours(path)
        snapshot = torch.load(path, weights_only=True)
        snapshot["optimizer"]["state"][0]["exp_avg"] = torch.zeros(3)
        torch.save(snapshot, path)
    elif kind == "epoch out of range":
        ours(path, epoch=-1)
    return path


@pytest.mark.parametrize("kind, error", [
    ("garbage bytes", "UnpicklingError"), ("empty file", "EOFError"),
    ("not a dict", "TypeError"), ("a bare state_dict", "KeyError"),
    ("another shape", "RuntimeError"), ("optimizer state of another shape", "RuntimeError"),
    ("epoch out of range", "ValueError"),
])
def test_a_snapshot_that_is_not_ours_is_refused_before_joining(kind, error, tmp_path, no_gpu,
                                                                capsys):
    path = make_bad(kind, tmp_path / "s.pt")
    assert parse_error(m, ["--snapshot", str(path)], capsys) == (
        f"--snapshot {path}: not a snapshot of this script, a dict of model, optimizer and "
        f"epoch ({error})")


def test_a_snapshot_path_that_cannot_be_a_file_is_refused(tmp_path, no_gpu, capsys):
    os.mkfifo(tmp_path / "fifo")  # torch.load would wait on it forever
    (tmp_path / "folder").mkdir()
    with open(tmp_path / "big.pt", "wb") as f:
        f.truncate(2**20 + 1)
    for name in ("fifo", "folder", "big.pt"):
        assert parse_error(m, ["--snapshot", str(tmp_path / name)], capsys) == (
            f"--snapshot {tmp_path / name}: not a file of at most 1 MiB")
    missing = tmp_path / "no" / "s.pt"
    assert parse_error(m, ["--snapshot", str(missing)], capsys) == (
        f"--snapshot {missing}: cannot write in folder {missing.parent}")


def test_a_snapshot_of_ours_is_accepted(tmp_path, no_gpu):
    path = ours(tmp_path / "s.pt", epoch=3)
    assert m.parse_args(["--snapshot", str(path)]).snapshot == path
    assert m.parse_args(["--snapshot", str(tmp_path / "new.pt")]).snapshot == tmp_path / "new.pt"


# --- the definitions, in a world of one in this process ----------------------------------------

@pytest.fixture
def world_of_one():
    assert m.init_distributed(torch.device("cpu")) == (0, 1)
    yield
    torch.distributed.destroy_process_group()


def test_evaluate_is_the_mean_loss_over_the_whole_set(world_of_one):
    torch.manual_seed(0)
    model, x, y = m.make_model(), torch.randn(10, 8), torch.randn(10, 1)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)  # batches of 4, 4 and 2
    with torch.no_grad():
        expected = F.mse_loss(model(x), y).item()
    assert m.evaluate(model, loader) == pytest.approx(expected, rel=1e-6)


def test_gather_joins_the_ranks_tensors_along_dim_0(world_of_one):
    assert torch.equal(m.gather(torch.arange(6).view(3, 2)), torch.arange(6).view(3, 2))


def test_snapshot_round_trip_restores_model_optimizer_and_epoch(world_of_one, tmp_path):
    path = tmp_path / "s.pt"
    model = nn.parallel.DistributedDataParallel(m.make_model())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(4, 8)).sum().backward()
    optimizer.step()
    m.save_snapshot(path, model, optimizer, epoch=7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.pt"]
    plain = m.make_model()  # no DDP: the keys carry no "module." prefix
    fresh = torch.optim.Adam(plain.parameters(), lr=0.5)
    assert m.load_snapshot(path, plain, fresh) == 7
    for a, b in zip(plain.parameters(), model.module.parameters()):
        assert torch.equal(a, b)
        assert torch.equal(fresh.state[a]["exp_avg"], optimizer.state[b]["exp_avg"])
    assert fresh.param_groups[0]["lr"] == 0.01


def test_a_write_cut_short_leaves_the_last_snapshot_whole(world_of_one, tmp_path, monkeypatch):
    path = tmp_path / "s.pt"
    model = nn.parallel.DistributedDataParallel(m.make_model())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    m.save_snapshot(path, model, optimizer, epoch=1)
    before = path.read_bytes()

    def cut_short(obj, file):  # a Ctrl-C halfway through writing
        Path(file).write_bytes(before[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", cut_short)
    with pytest.raises(KeyboardInterrupt):
        m.save_snapshot(path, model, optimizer, epoch=2)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.pt"]


# --- the whole lesson as `python 06_distributed.py`, a world of one, in this process -------------

def run_lesson(monkeypatch, capsys, *argv: str) -> str:
    """Runs the script as __main__ here (no torch import to wait for): what it prints."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run_in_process("06_distributed.py", list(argv), monkeypatch)
    assert not torch.distributed.is_initialized()  # destroy_process_group ran
    return capsys.readouterr().out


def test_a_world_of_one_shards_proves_the_gradient_and_learns(monkeypatch, capsys):
    out = run_lesson(monkeypatch, capsys)
    assert "all shards: 512 indices, 512 distinct, of 512 samples" in out
    assert re.search(r"in one process, on all 1 ranks: True$", out, re.MULTILINE)
    before = float(re.search(r"^val loss before training: ([\d.]+)", out, re.MULTILINE)[1])
    losses = [float(loss) for _, loss in EPOCH.findall(out)]
    assert len(losses) == 5 and losses == sorted(losses, reverse=True)
    assert losses[-1] < before / 10


def test_a_second_run_with_the_snapshot_resumes_where_the_first_ended(monkeypatch, capsys,
                                                                       tmp_path):
    path = str(tmp_path / "s.pt")
    straight = run_lesson(monkeypatch, capsys, "--epochs", "4", "--batch-size", "64")
    first = run_lesson(monkeypatch, capsys, "--epochs", "2", "--batch-size", "64",
                       "--snapshot", path)
    second = run_lesson(monkeypatch, capsys, "--epochs", "4", "--batch-size", "64",
                        "--snapshot", path)
    assert [e for e, _ in EPOCH.findall(first)] == ["1", "2"]
    assert "resumed from s.pt: epoch 2 of 4 done" in second
    assert EPOCH.findall(second) == EPOCH.findall(straight)[2:]  # the same epochs 3 and 4
    assert CHECKSUM.findall(second) == CHECKSUM.findall(straight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.pt"]


# --- torchrun: two processes, one of them killed mid-run -----------------------------------------

def children(pid: int) -> list[int]:
    """The processes whose parent is pid, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):  # gone meanwhile
            pass
    return found


def listening_ports() -> set[int]:
    """The local TCP ports some process listens on, from /proc/net/tcp and tcp6."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A":  # LISTEN
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def rank_of(pid: int) -> int:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(v for v in environ if v.startswith(b"RANK=")).split(b"=")[1])


def kill_one_worker() -> dict:
    """`torchrun --standalone --nproc-per-node 2 --max-restarts 3 06_distributed.py`, one batch
    of 2 a rank per step (slow epochs); once rank 0 has saved epoch 1, rank 1 is killed."""
    if not sys.platform.startswith("linux"):
        pytest.skip("finds the worker processes in /proc")
    cwd, tmp = scratch("torchrun"), scratch("torchrun-tmp")
    env = {key: value for key, value in one_thread().items() if key != "PYTHONUNBUFFERED"}
    env.update(TMPDIR=str(tmp), TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")  # see the script
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "--max-restarts", "3", str(ROOT / "06_distributed.py"),
               "--device", "cpu", "--batch-size", "2", "--epochs", "3", "--snapshot", "s.pt"]
    process = subprocess.Popen(command, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (cwd / "s.pt").exists() and process.poll() is None:
            assert time.monotonic() < deadline, "no snapshot after 120 s"
            time.sleep(0.02)
        workers = children(process.pid)
        assert process.poll() is None and len(workers) == 2, "the run ended before the kill"
        os.kill(next(pid for pid in workers if rank_of(pid) == 1), signal.SIGKILL)
        out, err = process.communicate(timeout=180)
    finally:
        if process.poll() is None:  # the test failed: leave no process behind
            for pid in children(process.pid):
                os.kill(pid, signal.SIGKILL)
            process.kill()
            process.communicate()
    return {"code": process.returncode, "out": out, "err": err, "cwd": cwd, "tmp": tmp,
            "workers": workers}


@early(first=True)
def killed_run():
    return submit(kill_one_worker)


def test_two_ranks_get_disjoint_shards_that_cover_the_data(killed_run_result):
    shards = dict(re.findall(r"^\[rank (\d)\] shard: 256 of 512 samples, first (\[.*\])$",
                             killed_run_result["out"], re.MULTILINE))
    assert sorted(shards) == ["0", "1"]
    assert not set(json.loads(shards["0"])) & set(json.loads(shards["1"]))
    assert "all shards: 512 indices, 512 distinct, of 512 samples" in killed_run_result["out"]


def test_the_ddp_gradient_is_the_global_batch_gradient_on_both_ranks(killed_run_result):
    assert re.search(r"global batch \(4 samples\) in one process, on all 2 ranks: True$",
                     killed_run_result["out"], re.MULTILINE)


def test_a_killed_worker_is_restarted_and_the_job_finishes_from_its_snapshot(killed_run_result):
    assert killed_run_result["code"] == 0, killed_run_result["err"][-3000:]
    done = int(re.search(r"^resumed from s.pt: epoch (\d) of 3 done$", killed_run_result["out"],
                         re.MULTILINE)[1])
    assert 1 <= done < 3
    assert [int(e) for e, _ in EPOCH.findall(killed_run_result["out"])][-(3 - done):] == list(
        range(done + 1, 4))
    assert torch.load(killed_run_result["cwd"] / "s.pt", weights_only=True)["epoch"] == 3


def test_rank_0_alone_prints_the_epoch_lines(killed_run_result):
    """Both ranks print (their own checksum); each epoch's line comes once, not once a rank."""
    assert sorted(rank for rank, _ in CHECKSUM.findall(killed_run_result["out"])) == ["0", "1"]
    epochs = [e for e, _ in EPOCH.findall(killed_run_result["out"])]
    assert len(epochs) == len(set(epochs)) and "3" in epochs


def test_two_ranks_of_2_take_the_steps_of_one_process_of_4(killed_run_result, monkeypatch, capsys):
    """The global batch decides the steps: and the run that was killed and resumed ends where
    an uninterrupted run ends."""
    alone = run_lesson(monkeypatch, capsys, "--batch-size", "4", "--epochs", "3")
    last, loss = EPOCH.findall(killed_run_result["out"])[-1]
    last_alone, loss_alone = EPOCH.findall(alone)[-1]
    assert last == last_alone == "3" and float(loss) == pytest.approx(float(loss_alone), abs=2e-4)
    assert float(loss) < 0.5  # down from 10.5 before training


def test_both_ranks_end_with_the_same_weights(killed_run_result):
    final = dict(CHECKSUM.findall(killed_run_result["out"]))
    assert sorted(final) == ["0", "1"] and final["0"] == final["1"]


def test_torchrun_leaves_no_process_no_port_and_only_the_snapshot(killed_run_result):
    for pid in killed_run_result["workers"]:
        assert not Path(f"/proc/{pid}").exists()
    met = re.findall(r"meeting at \S+:(\d+)$", killed_run_result["out"], re.MULTILINE)
    ports = {int(port) for port in met}
    assert ports and not ports & listening_ports()
    assert [p.name for p in killed_run_result["cwd"].iterdir()] == ["s.pt"]
    # torchrun's own log folders and the compiler's cache folder are not the script's
    assert [p for p in killed_run_result["tmp"].iterdir()
            if not p.name.startswith(("torchelastic_", "torchinductor_"))] == []


@pytest.fixture
def killed_run_result(killed_run):
    return killed_run.result()
