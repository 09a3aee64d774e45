"""06_distributed.py: evaluation that counts each sample once, the sampler's shards, snapshots and
resuming, the errors PyTorch raises; as a world of one in this process, and under torchrun: the
restart command it shows, with a worker killed, and the two-machine command as two agents."""
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from conftest import ROOT, Script

m = Script("06_distributed.py")  # the whole file runs, as a world of one

KEY_LINES = [r"^\[rank 0\] cpu \(gloo\): a shard of 512 of 512 samples, first \[\d+(, \d+){4}\]$",
             r"^all shards together: 512 indices, 512 distinct$",
             r"^epoch 0 starts (\[\d+, \d+, \d+\]); without set_epoch the next epoch starts \1 "
             r"again; after set_epoch\(1\) it starts \[",
             r"^DDP gradient == gradient of the global batch \(32 x 1 samples\) in one process: "
             r"True; an epoch: 16 steps of 32$",
             r"^val loss, untrained: 10\.5027 \(128 samples, each scored once\)$",
             r"^epoch 1 \| val loss 5\.9134$", r"^epoch 5 \| val loss 0\.2921$",
             r"^\[rank 0\] weights checksum -1\.959110$"]
EPOCH = re.compile(r"^epoch (\d+) \| val loss ([\d.]+)$", re.MULTILINE)
CHECKSUM = re.compile(r"^\[rank (\d)\] weights checksum (-?[\d.]+)$", re.MULTILINE)


@pytest.fixture
def world_of_one():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def model():
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))


def test_evaluate_is_the_mean_squared_error_over_the_whole_set(world_of_one):
    torch.manual_seed(0)
    net, x, y = model(), torch.randn(10, 8), torch.randn(10, 1)
    with torch.no_grad():
        expected = F.mse_loss(net(x), y).item()
    loss, count = m.evaluate(net, TensorDataset(x, y), batch_size=4)  # batches of 4, 4 and 2
    assert loss == pytest.approx(expected, rel=1e-6) and count == 10


def test_the_parts_of_an_uneven_world_count_each_sample_once(world_of_one, monkeypatch):
    """128 samples on 3 ranks: 43 + 43 + 42, none padded in or counted twice."""
    torch.manual_seed(0)
    net, x, y = model(), torch.randn(128, 8), torch.randn(128, 1)
    with torch.no_grad():
        errors = (net(x) - y).squeeze(1) ** 2
    monkeypatch.setattr(dist, "get_world_size", lambda: 3)
    for rank, size in enumerate([43, 43, 42]):
        monkeypatch.setattr(dist, "get_rank", lambda rank=rank: rank)
        loss, count = m.evaluate(net, TensorDataset(x, y))  # this rank's part (all_reduce of one)
        assert count == size
        assert loss == pytest.approx(errors[rank::3].mean().item(), rel=1e-5)


def batches(world_size: int, rank: int, batch_size: int, epoch: int) -> list[list[int]]:
    sampler = DistributedSampler(range(512), num_replicas=world_size, rank=rank, seed=0)
    sampler.set_epoch(epoch)
    return [b.tolist() for b in DataLoader(range(512), batch_size=batch_size, sampler=sampler)]


def test_batches_of_16_on_2_ranks_are_together_the_batches_of_32_on_1():
    """So `--batch-size 16` on 2 processes takes the steps of 32 on 1."""
    one, two = batches(1, 0, 32, epoch=3), [batches(2, r, 16, epoch=3) for r in (0, 1)]
    assert len(one) == len(two[0]) == len(two[1]) == 16
    assert [sorted(b) for b in one] == [sorted(a + b) for a, b in zip(*two)]


def test_without_set_epoch_every_epoch_repeats_the_order():
    sampler = DistributedSampler(range(512), num_replicas=2, rank=1, seed=0)
    first, again = list(sampler), list(sampler)
    sampler.set_epoch(1)
    assert first == again != list(sampler)


def ddp_and_adam():
    ddp = nn.parallel.DistributedDataParallel(model())
    optimizer = torch.optim.Adam(ddp.parameters(), lr=0.01)
    ddp(torch.randn(4, 8)).sum().backward()
    optimizer.step()  # so that the optimizer has state (Adam's running averages) to save
    return ddp, optimizer


def test_a_snapshot_holds_the_plain_models_weights_the_optimizer_and_the_epoch(world_of_one,
                                                                                 tmp_path):
    ddp, optimizer = ddp_and_adam()
    m.save_snapshot(tmp_path / "s.pt", ddp, optimizer, epoch=7)
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]  # the .part renamed
    snapshot = torch.load(tmp_path / "s.pt", weights_only=True)
    assert snapshot["epoch"] == 7 and list(snapshot["model"]) == list(model().state_dict())
    assert snapshot["optimizer"]["state"][0]["exp_avg"].shape == (16, 8)


def test_a_write_cut_short_leaves_the_last_snapshot_whole(world_of_one, tmp_path, monkeypatch):
    ddp, optimizer = ddp_and_adam()
    m.save_snapshot(tmp_path / "s.pt", ddp, optimizer, epoch=1)
    before = (tmp_path / "s.pt").read_bytes()

    def killed_halfway(obj, file):
        Path(file).write_bytes(before[:100])
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, "save", killed_halfway)
    with pytest.raises(KeyboardInterrupt):
        m.save_snapshot(tmp_path / "s.pt", ddp, optimizer, epoch=2)
    assert (tmp_path / "s.pt").read_bytes() == before


def run_as_main(monkeypatch, tmp_path, capsys, *args: str) -> str:
    """`python 06_distributed.py ARGS` in this process, in tmp_path; what it printed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["06_distributed.py", *args])
    script = ROOT / "06_distributed.py"
    try:
        exec(compile(script.read_text(), script, "exec"), {"__name__": "__main__"})
    finally:
        if dist.is_initialized():  # it raised after joining
            dist.destroy_process_group()
    return capsys.readouterr().out


def test_a_second_run_with_the_snapshot_goes_on_where_the_first_ended(monkeypatch, capsys,
                                                                       tmp_path):
    straight = run_as_main(monkeypatch, tmp_path, capsys, "--epochs", "4")
    first = run_as_main(monkeypatch, tmp_path, capsys, "--epochs", "2", "--snapshot", "s.pt")
    second = run_as_main(monkeypatch, tmp_path, capsys, "--epochs", "4", "--snapshot", "s.pt")
    assert [e for e, _ in EPOCH.findall(first)] == ["1", "2"]
    assert "resumed from s.pt: epoch 2 of 4 done" in second
    assert EPOCH.findall(second) == EPOCH.findall(straight)[2:]  # the same epochs 3 and 4
    assert CHECKSUM.findall(second) == CHECKSUM.findall(straight)
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]


def test_another_models_snapshot_raises_pytorchs_own_error(monkeypatch, capsys, tmp_path):
    other = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))  # 4 inputs, not 8
    torch.save({"model": other.state_dict()}, tmp_path / "s.pt")
    with pytest.raises(RuntimeError, match=r"size mismatch for 0\.weight"):
        run_as_main(monkeypatch, tmp_path, capsys, "--snapshot", "s.pt")


def test_world_size_without_rank_is_refused(monkeypatch, capsys, tmp_path):
    """`srun python 06_distributed.py` would make N worlds of one, all on all the data."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match="environment variable RANK expected, but not set"):
        run_as_main(monkeypatch, tmp_path, capsys)
    assert capsys.readouterr().out == ""  # refused before anything was printed


# --- under torchrun: the restart command the script shows, one worker killed; two agents -------

def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def shown_command() -> tuple[dict, list[str]]:
    """The command in the snapshot section, `VAR=value torchrun ... 06_distributed.py ...`."""
    text = ROOT.joinpath("06_distributed.py").read_text()
    shown = re.search(r"^#     (TORCH\S+)=(\S+) torchrun (.*) \\\n#\s+(.*)$", text, re.MULTILINE)
    argv = shlex.split(f"{shown[3]} {shown[4]}")
    script = argv.index("06_distributed.py")
    argv[script] = str(ROOT / "06_distributed.py")
    return {shown[1]: shown[2]}, torchrun(*argv)


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):  # gone meanwhile
            pass
    return found


def local_rank(pid: int) -> int:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(v for v in environ if v.startswith(b"LOCAL_RANK=")).split(b"=")[1])


# one test process, so one killed run; `pytest tests/ -m torchrun` runs these, as CI does
def on_the_torchrun_worker(test):
    return pytest.mark.torchrun(pytest.mark.xdist_group("torchrun")(test))


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """The shown command; once rank 0 has saved epoch 1, local rank 1 is killed (kill -9)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("finds the worker processes in /proc")
    cwd, tmp = tmp_path_factory.mktemp("torchrun"), tmp_path_factory.mktemp("torchrun-tmp")
    variables, command = shown_command()
    env = {**os.environ, **variables, "TMPDIR": str(tmp)}
    process = subprocess.Popen(command, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (cwd / "run.pt").exists() and process.poll() is None:
            assert time.monotonic() < deadline, "no snapshot after 120 s"
            time.sleep(0.005)
        workers = children(process.pid)
        assert process.poll() is None and len(workers) == 2, "the run ended before the kill"
        os.kill(next(pid for pid in workers if local_rank(pid) == 1), signal.SIGKILL)
        out, err = process.communicate(timeout=180)
    finally:
        if process.poll() is None:  # the test failed: leave no process behind
            for pid in children(process.pid):
                os.kill(pid, signal.SIGKILL)
            process.kill()
            process.communicate()
    return {"code": process.returncode, "out": out, "err": err, "cwd": cwd, "tmp": tmp,
            "workers": workers}


@on_the_torchrun_worker
def test_the_shown_restart_survives_a_killed_worker(killed_run):
    out = killed_run["out"]
    assert killed_run["code"] == 0, killed_run["err"][-3000:]
    resumed = re.findall(r"^resumed from run.pt: epoch (\d+) of 20 done$", out, re.MULTILINE)
    assert len(resumed) == 1 and 1 <= int(resumed[0]) < 20, resumed  # one restart: the kill's
    assert EPOCH.findall(out)[-1][0] == "20"
    assert torch.load(killed_run["cwd"] / "run.pt", weights_only=True)["epoch"] == 20
    final = dict(CHECKSUM.findall(out))
    assert sorted(final) == ["0", "1"] and final["0"] == final["1"]  # the same weights
    for pid in killed_run["workers"]:
        assert not Path(f"/proc/{pid}").exists()
    assert [p.name for p in killed_run["cwd"].iterdir()] == ["run.pt"]
    assert [p for p in killed_run["tmp"].iterdir()  # torchrun's and the compiler's folders
            if not p.name.startswith(("torchelastic_", "torchinductor_"))] == []


@on_the_torchrun_worker
def test_two_ranks_get_disjoint_shards_the_ddp_gradient_and_the_untrained_loss(killed_run):
    out = killed_run["out"]
    shards = dict(re.findall(r"^\[rank (\d)\] cpu \(gloo\): a shard of 256 of 512 samples, "
                             r"first (\[.*\])$", out, re.MULTILINE))
    assert sorted(shards) == ["0", "1"]
    assert not set(json.loads(shards["0"])) & set(json.loads(shards["1"]))
    assert "all shards together: 512 indices, 512 distinct" in out
    assert ("DDP gradient == gradient of the global batch (32 x 2 samples) in one process: True; "
            "an epoch: 8 steps of 64") in out
    assert "val loss, untrained: 10.5027 (128 samples, each scored once)" in out  # as on one


@on_the_torchrun_worker
def test_two_agents_of_one_process_print_what_one_agent_of_two_does(killed_run, tmp_path):
    """The two-machine command, each agent on this machine: the same losses and weights."""
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = torchrun("--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                       "--rdzv-endpoint", f"127.0.0.1:{port}", str(ROOT / "06_distributed.py"),
                       "--epochs", "20")
    agents = [subprocess.Popen(command, cwd=tmp_path, env={**os.environ, "TMPDIR": str(tmp_path)},
                               text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
              for _ in range(2)]
    try:
        outs = [agent.communicate(timeout=180) for agent in agents]
    finally:
        for agent in agents:
            agent.kill()
    assert [agent.returncode for agent in agents] == [0, 0], outs[0][1][-3000:]
    out = outs[0][0] + outs[1][0]
    losses = dict(EPOCH.findall(out))
    assert sorted(losses, key=int) == [str(e) for e in range(1, 21)]
    assert dict(EPOCH.findall(killed_run["out"])).items() <= losses.items()
    assert dict(CHECKSUM.findall(out)) == dict(CHECKSUM.findall(killed_run["out"]))
