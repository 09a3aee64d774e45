"""06_distributed.py: evaluation that counts each sample once, the sampler's shards, snapshots and
resuming, the errors PyTorch raises; as a world of one in this process, and under torchrun: the
restart command it shows, with a worker killed, 16 per process on 2 against 32 on 1, the untrained
loss on 3, and the two-machine command as two agents."""
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

KEY_LINES = [r"^1 process\(es\) on (cpu|cuda|xpu), backend (gloo|nccl|xccl)$",
             r"^first 3 indices of each rank's shard: \[\[\d+, \d+, \d+\]\]$",
             r"^all shards together: 512 indices, 512 distinct of 512$",
             r"^rank 0's shard starts (\[\d+, \d+, \d+\]); again without set_epoch, \1; "
             r"after it, (?!\1)\[\d+, \d+, \d+\]$",
             r"^DDP's gradient vs the global batch's: max difference 0\.0e\+00, allclose True$",
             r"^a global batch of 32 x 1 samples; an epoch: 16 steps$",
             r"^val loss, untrained: 10\.0181 \(128 of 128 samples, each once\)$",
             r"^epoch 1 \| val loss 5\.0978$", r"^epoch 5 \| val loss 0\.2473$",
             r"^weights checksum on each rank, equal if the copies stayed in step: \[0\.104222\]$"]
EPOCH = re.compile(r"^epoch (\d+) \| val loss ([\d.]+)$", re.MULTILINE)
CHECKSUMS = re.compile(r"^weights checksum on each rank, equal if the copies stayed in step: "
                       r"(\[.*\])$", re.MULTILINE)
UNTRAINED = re.compile(r"^val loss, untrained: .*$", re.MULTILINE)


def checksums(out: str) -> list[list[float]]:
    """Every checksum line printed, each a list with one sum per rank."""
    return [json.loads(line) for line in CHECKSUMS.findall(out)]


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
    """Why `--batch-size 16` on 2 processes takes the steps of 32 on 1 (run under torchrun)."""
    one, two = batches(1, 0, 32, epoch=3), [batches(2, r, 16, epoch=3) for r in (0, 1)]
    assert len(one) == len(two[0]) == len(two[1]) == 16
    assert [sorted(b) for b in one] == [sorted(a + b) for a, b in zip(*two)]


def model_and_adam():
    net = model()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    net(torch.randn(4, 8)).sum().backward()
    optimizer.step()  # so that the optimizer has state (Adam's running averages) to save
    return net, optimizer


def test_a_snapshot_holds_the_weights_the_optimizer_and_the_epoch(world_of_one, tmp_path):
    net, optimizer = model_and_adam()
    m.save_snapshot(tmp_path / "s.pt", net, optimizer, epoch=7)
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]  # the .part renamed
    snapshot = torch.load(tmp_path / "s.pt", weights_only=True)
    assert snapshot["epoch"] == 7
    assert torch.equal(snapshot["model"]["0.weight"], net[0].weight)
    assert torch.equal(snapshot["optimizer"]["state"][0]["exp_avg"],
                       optimizer.state[net[0].weight]["exp_avg"])


def test_a_write_cut_short_leaves_the_last_snapshot_whole(world_of_one, tmp_path, monkeypatch):
    net, optimizer = model_and_adam()
    m.save_snapshot(tmp_path / "s.pt", net, optimizer, epoch=1)
    before = (tmp_path / "s.pt").read_bytes()

    def killed_halfway(obj, file):
        Path(file).write_bytes(before[:100])
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, "save", killed_halfway)
    with pytest.raises(KeyboardInterrupt):
        m.save_snapshot(tmp_path / "s.pt", net, optimizer, epoch=2)
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
    assert checksums(second) == checksums(straight)
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]


def test_another_models_snapshot_raises_pytorchs_own_error(monkeypatch, capsys, tmp_path):
    other = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))  # 4 inputs, not 8
    torch.save({"model": other.state_dict()}, tmp_path / "s.pt")
    with pytest.raises(RuntimeError, match=r"size mismatch for 0\.weight"):
        run_as_main(monkeypatch, tmp_path, capsys, "--snapshot", "s.pt")


@pytest.mark.parametrize("given, missing", [("WORLD_SIZE", "RANK"), ("RANK", "WORLD_SIZE")])
def test_one_of_rank_and_world_size_without_the_other_is_refused(given, missing, monkeypatch,
                                                                  capsys, tmp_path):
    """A launcher that sets only one would otherwise make N worlds of one, all on all the data."""
    monkeypatch.setenv(given, "2" if given == "WORLD_SIZE" else "1")
    monkeypatch.delenv(missing, raising=False)
    with pytest.raises(ValueError, match=f"environment variable {missing} expected, but not set"):
        run_as_main(monkeypatch, tmp_path, capsys)
    assert capsys.readouterr().out == ""  # refused before anything was printed


# --- under torchrun: the shown restart with a worker killed; 2 and 3 processes; two agents ----

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
    [final] = checksums(out)
    assert len(final) == 2 and final[0] == final[1]  # the two copies stayed equal
    for pid in killed_run["workers"]:
        assert not Path(f"/proc/{pid}").exists()
    assert [p.name for p in killed_run["cwd"].iterdir()] == ["run.pt"]
    assert [p for p in killed_run["tmp"].iterdir()  # torchrun's and the compiler's folders
            if not p.name.startswith(("torchelastic_", "torchinductor_"))] == []


@on_the_torchrun_worker
def test_two_ranks_get_disjoint_shards_and_ddps_gradient_is_the_global_batchs(killed_run):
    out = killed_run["out"]
    assert "2 process(es) on cpu, backend gloo" in out
    firsts = re.search(r"^first 3 indices of each rank's shard: (\[.*\])$", out, re.MULTILINE)
    rank_0, rank_1 = json.loads(firsts[1])
    assert len(rank_0) == len(rank_1) == 3 and not set(rank_0) & set(rank_1)
    assert "all shards together: 512 indices, 512 distinct of 512" in out
    difference = re.search(r"^DDP's gradient vs the global batch's: max difference (\S+), "
                           r"allclose True$", out, re.MULTILINE)
    assert float(difference[1]) < 1e-6  # rounding: two processes add up in another order
    assert "a global batch of 32 x 2 samples; an epoch: 8 steps" in out


def torchrun_standalone(tmp_path, processes: int, *args: str) -> str:
    """`torchrun --standalone --nproc-per-node N 06_distributed.py ARGS`; what it printed."""
    command = torchrun("--standalone", "--nproc-per-node", str(processes),
                       str(ROOT / "06_distributed.py"), *args)
    done = subprocess.run(command, cwd=tmp_path, env={**os.environ, "TMPDIR": str(tmp_path)},
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@on_the_torchrun_worker
def test_16_per_process_on_2_prints_the_losses_of_32_on_1(monkeypatch, capsys, tmp_path):
    one = run_as_main(monkeypatch, tmp_path, capsys)  # the defaults: 32 on 1, 5 epochs
    two = torchrun_standalone(tmp_path, 2, "--batch-size", "16")
    assert "a global batch of 16 x 2 samples; an epoch: 16 steps" in two
    assert len(EPOCH.findall(one)) == 5 and EPOCH.findall(two) == EPOCH.findall(one)


@on_the_torchrun_worker
def test_the_untrained_loss_is_the_same_on_1_2_and_3_processes(killed_run, monkeypatch, capsys,
                                                               tmp_path):
    """3 processes split the 128 validation samples 43 + 43 + 42; the sampler pads 512 to 513."""
    one = run_as_main(monkeypatch, tmp_path, capsys, "--epochs", "0")
    three = torchrun_standalone(tmp_path, 3, "--epochs", "1")
    [untrained] = UNTRAINED.findall(one)
    assert untrained == "val loss, untrained: 10.0181 (128 of 128 samples, each once)"
    assert UNTRAINED.findall(killed_run["out"]) == [untrained, untrained]  # the start and restart
    assert UNTRAINED.findall(three) == [untrained]
    assert "all shards together: 513 indices, 512 distinct of 512" in three
    [final] = checksums(three)
    assert len(final) == 3 and final[0] == final[1] == final[2]


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
    out = outs[0][0] + outs[1][0]  # one of them is rank 0, which prints
    losses = dict(EPOCH.findall(out))
    assert sorted(losses, key=int) == [str(e) for e in range(1, 21)]
    assert dict(EPOCH.findall(killed_run["out"])).items() <= losses.items()
    assert checksums(out) == checksums(killed_run["out"])
