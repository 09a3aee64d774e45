"""06_distributed.py: the process group, DistributedSampler's shards, DDP's averaged gradient,
evaluation that counts each sample once, snapshots; as a world of one, and the restart command
it shows run under torchrun with one worker killed."""
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from conftest import ROOT, error_line, load_script, run_in_process

m = load_script("06_distributed.py")

KEY_LINES = [r"^\[rank 0\] device cpu \(gloo\), shard: 512 of 512 samples, "
             r"first \[\d+(, \d+){4}\]$",
             r"^all shards: 512 indices, 512 distinct$",
             r"^epoch 0 starts (\[\d+, \d+, \d+\]); epoch 1 without set_epoch \1 "
             r"\(the same: True\); with set_epoch\(1\) \[",
             r"^DDP gradient == gradient of the global batch, 32 x 1 samples, in one process: "
             r"True; 16 steps an epoch$",
             r"^val loss, untrained: 10\.5027 \(128 samples\)$",  # the untrained model's
             r"^epoch 1 \| val loss \d+\.\d{4}$", r"^epoch 5 \| val loss \d+\.\d{4}$",
             r"^\[rank 0\] weights checksum -?\d+\.\d{6}$"]
BAD_RUN = (["--device", "tpu"], "argument --device: invalid choice: 'tpu'")
FLAG_RUN = (["--epochs", "2"], r"^epoch 2 \| val loss \d+\.\d{4}\n\[rank 0\] weights")
EPOCH = re.compile(r"^epoch (\d+) \| val loss ([\d.]+)$", re.MULTILINE)
CHECKSUM = re.compile(r"^\[rank (\d)\] weights checksum (-?[\d.]+)$", re.MULTILINE)


@pytest.fixture
def world_of_one():
    assert m.init_distributed("cpu") == torch.device("cpu")
    yield
    dist.destroy_process_group()


def model():
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))


def test_evaluate_is_the_mean_loss_over_the_whole_set(world_of_one):
    torch.manual_seed(0)
    net, x, y = model(), torch.randn(10, 8), torch.randn(10, 1)
    with torch.no_grad():
        expected = F.mse_loss(net(x), y).item()
    loss, count = m.evaluate(net, TensorDataset(x, y), batch_size=4)  # batches of 4, 4 and 2
    assert loss == pytest.approx(expected, rel=1e-6) and count == 10


def test_evaluation_parts_of_an_uneven_world_count_each_sample_once(world_of_one, monkeypatch):
    """128 samples on 3 ranks: 43 + 43 + 42, no sample padded in or counted twice."""
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


def test_gather_joins_the_ranks_tensors_along_dim_0(world_of_one):
    assert torch.equal(m.gather(torch.arange(6).view(3, 2)), torch.arange(6).view(3, 2))


@pytest.mark.parametrize("local_rank", ["0", "1"])  # rank 0 too: it must not wait for rank 1
def test_more_processes_than_devices_is_a_value_error_on_every_rank(local_rank, monkeypatch):
    monkeypatch.setattr(torch.accelerator, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"^fewer cuda devices than processes here$"):
        m.init_distributed("cuda")
    assert not dist.is_initialized()


def ddp_and_adam():
    ddp = nn.parallel.DistributedDataParallel(model())
    optimizer = torch.optim.Adam(ddp.parameters(), lr=0.01)
    ddp(torch.randn(4, 8)).sum().backward()
    optimizer.step()  # so that the optimizer has state (Adam's running averages) to save
    return ddp, optimizer


def test_snapshot_round_trip_restores_model_optimizer_and_epoch(world_of_one, tmp_path):
    ddp, optimizer = ddp_and_adam()
    m.save_snapshot(tmp_path / "s.pt", ddp, optimizer, epoch=7)
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]
    plain = model()  # no DDP: the keys carry no "module." prefix
    fresh = torch.optim.Adam(plain.parameters(), lr=0.5)
    assert m.load_snapshot(tmp_path / "s.pt", plain, fresh) == 7
    for a, b in zip(plain.parameters(), ddp.module.parameters()):
        assert torch.equal(a, b)
        assert torch.equal(fresh.state[a]["exp_avg"], optimizer.state[b]["exp_avg"])
    assert fresh.param_groups[0]["lr"] == 0.01
    assert m.load_snapshot(tmp_path / "none.pt", plain, fresh) == 0  # nothing saved yet


def test_a_write_cut_short_leaves_the_last_snapshot_whole(world_of_one, tmp_path, monkeypatch):
    ddp, optimizer = ddp_and_adam()
    m.save_snapshot(tmp_path / "s.pt", ddp, optimizer, epoch=1)
    before = (tmp_path / "s.pt").read_bytes()

    def cut_short(obj, file):  # a Ctrl-C halfway through writing
        Path(file).write_bytes(before[:100])
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, "save", cut_short)
    with pytest.raises(KeyboardInterrupt):
        m.save_snapshot(tmp_path / "s.pt", ddp, optimizer, epoch=2)
    assert (tmp_path / "s.pt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]


NOT_SNAPSHOTS = {  # what s.pt holds -> the exception load_snapshot names
    "garbage": (lambda path: path.write_bytes(bytes(range(256)) * 4), "UnpicklingError"),
    "nothing": (lambda path: path.touch(), "EOFError"),
    "a list": (lambda path: torch.save([1, 2, 3], path), "TypeError"),
    "a bare state_dict": (lambda path: torch.save(model().state_dict(), path), "KeyError"),
    "another model": (lambda path: torch.save({"model": nn.Linear(8, 1).state_dict()}, path),
                      "RuntimeError"),
}


@pytest.mark.parametrize("kind", NOT_SNAPSHOTS)
def test_a_file_that_is_not_a_snapshot_is_one_error_line(kind, tmp_path, monkeypatch, capsys):
    write, error = NOT_SNAPSHOTS[kind]
    write(tmp_path / "s.pt")
    try:
        line = error_line("06_distributed.py", ["--snapshot", "s.pt"], monkeypatch, capsys,
                          tmp_path)
    finally:
        dist.destroy_process_group()  # it stopped after joining, as every rank would
    assert line == f"--snapshot s.pt: cannot load it into this model ({error})"


def test_a_snapshot_in_a_folder_that_is_not_there_is_refused_before_training(tmp_path,
                                                                            monkeypatch, capsys):
    try:
        line = error_line("06_distributed.py", ["--snapshot", "no/s.pt"], monkeypatch, capsys,
                          tmp_path)
    finally:
        dist.destroy_process_group()
    assert line == "--snapshot no/s.pt: no folder no to save in"
    assert list(tmp_path.iterdir()) == []


def lesson(monkeypatch, capsys, tmp_path, *argv: str) -> str:
    """The script as `python 06_distributed.py ARGV`, a world of one, in this process."""
    run_in_process("06_distributed.py", list(argv), monkeypatch, tmp_path)
    assert not dist.is_initialized()  # destroy_process_group ran
    return capsys.readouterr().out


def test_a_world_of_one_learns(monkeypatch, capsys, tmp_path):
    out = lesson(monkeypatch, capsys, tmp_path)
    before = float(re.search(r"^val loss, untrained: ([\d.]+)", out, re.MULTILINE)[1])
    losses = [float(loss) for _, loss in EPOCH.findall(out)]
    assert len(losses) == 5 and losses == sorted(losses, reverse=True)
    assert losses[-1] < before / 10


def test_a_second_run_with_the_snapshot_goes_on_where_the_first_ended(monkeypatch, capsys,
                                                                       tmp_path):
    straight = lesson(monkeypatch, capsys, tmp_path, "--epochs", "4")
    first = lesson(monkeypatch, capsys, tmp_path, "--epochs", "2", "--snapshot", "s.pt")
    second = lesson(monkeypatch, capsys, tmp_path, "--epochs", "4", "--snapshot", "s.pt")
    assert [e for e, _ in EPOCH.findall(first)] == ["1", "2"]
    assert "resumed from s.pt: epoch 2 of 4 done" in second
    assert EPOCH.findall(second) == EPOCH.findall(straight)[2:]  # the same epochs 3 and 4
    assert CHECKSUM.findall(second) == CHECKSUM.findall(straight)
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]


# --- the restart command the script shows, under torchrun, one worker killed ---------------------

def shown_command() -> tuple[dict, list[str]]:
    """The command in the snapshot section, `VAR=value torchrun ... 06_distributed.py ...`."""
    text = ROOT.joinpath("06_distributed.py").read_text()
    shown = re.search(r"^#     (TORCH\S+=\S+) (torchrun .*\\\n#\s+.*)$", text, re.MULTILINE)
    variable, command = shown[1], shown[2].replace("\\\n#", " ")
    name, value = variable.split("=")
    argv = shlex.split(command)
    script = argv.index("06_distributed.py")
    return {name: value}, [sys.executable, "-m", "torch.distributed.run", *argv[1:script],
                           str(ROOT / "06_distributed.py"), *argv[script + 1:]]


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


shares_the_killed_run = pytest.mark.xdist_group("torchrun")  # on one test process: one run


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


@shares_the_killed_run
def test_the_shown_restart_survives_a_killed_worker(killed_run):
    assert killed_run["code"] == 0, killed_run["err"][-3000:]
    resumed = re.findall(r"^resumed from run.pt: epoch (\d+) of 20 done$", killed_run["out"],
                         re.MULTILINE)
    assert len(resumed) == 1 and 1 <= int(resumed[0]) < 20, resumed  # one restart: the kill's
    assert EPOCH.findall(killed_run["out"])[-1][0] == "20"
    assert torch.load(killed_run["cwd"] / "run.pt", weights_only=True)["epoch"] == 20
    final = dict(CHECKSUM.findall(killed_run["out"]))
    assert sorted(final) == ["0", "1"] and final["0"] == final["1"]  # the same weights


@shares_the_killed_run
def test_two_ranks_get_disjoint_shards_and_the_ddp_gradient(killed_run):
    shards = dict(re.findall(r"^\[rank (\d)\] device cpu \(gloo\), shard: 256 of 512 samples, "
                             r"first (\[.*\])$", killed_run["out"], re.MULTILINE))
    assert sorted(shards) == ["0", "1"]
    assert not set(json.loads(shards["0"])) & set(json.loads(shards["1"]))
    assert "all shards: 512 indices, 512 distinct" in killed_run["out"]
    assert ("DDP gradient == gradient of the global batch, 32 x 2 samples, in one process: True; "
            "8 steps an epoch") in killed_run["out"]


@shares_the_killed_run
def test_two_ranks_score_the_untrained_model_as_one_process_does(killed_run):
    assert "val loss, untrained: 10.5027 (128 samples)" in killed_run["out"]


@shares_the_killed_run
def test_torchrun_leaves_no_process_and_only_the_snapshot(killed_run):
    for pid in killed_run["workers"]:
        assert not Path(f"/proc/{pid}").exists()
    assert [p.name for p in killed_run["cwd"].iterdir()] == ["run.pt"]
    # torchrun's log folders and the compiler's cache folder are theirs, not the script's
    assert [p for p in killed_run["tmp"].iterdir()
            if not p.name.startswith(("torchelastic_", "torchinductor_"))] == []
