"""04_dataloader.py: the basic loop, a training epoch and its evaluation, the options, workers
(what they receive, their randomness, a stream split among them) and DistributedSampler."""
import functools
import multiprocessing
import os
import pickle
import re
import signal
import sys
import time
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from conftest import ROOT, early, interrupt, load_script, run_in_process, scratch, submit

m = load_script("04_dataloader.py")
needs_fork = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                                reason="the in-process worker tests start workers with fork")
CLOSURE_FAILS = r"fails: (AttributeError|PicklingError): Can't (pickle|get) local object"  # 3.10+

KEY_LINES = [r"^device: (cpu|cuda|mps)$",
             r"^one epoch: 16 batches, every sample once: True, shuffled: \[",
             r"^train_set\[0\]: \{'index': 0, 'x': tensor\(\[.+\]\), 'label': [01]\}$",
             r"^a batch: index \(4,\) torch.int64, x \(4, 2\) torch.float32, label \(4,\) ",
             r"^epoch 1 \| train loss 0\.\d{4}$", r"^epoch 3 \| train loss 0\.\d{4}$",
             r"^validation \| loss 0\.\d{4} over 15 samples \| accuracy \d+\.\d%$",
             r"^62 samples in batches of 4: 16 batches \(the last has 2\), with drop_last=True 15$",
             r"^generator seeded 0: the same order again: True$",
             r"^loading in 2 \w+ workers, 2 epochs: every sample once per epoch: True, .*: True$",
             r"^default collation: RuntimeError: stack expects each tensor to be equal size",
             r"^pad_collate: tokens \(B, T_max\) \(4, 5\), lengths \[3, 5, 1, 4\], "
             r"row 0: \[1, 2, 3, 0, 0\]$",
             r"^a closure as the transform, spawn workers: " + CLOSURE_FAILS,
             r"^worker_init_fn=None: shifts in loading order \[(\S+), \1, (\S+), \2, (\S+), \3\]$",
             r"^worker_init_fn=seed_worker: shifts in loading order \[",
             r"^Stream\(8, split=False\) in 2 \w+ workers: 16 items \[0, 0, 1, 1, ",
             r"^Stream\(8, split=True\) in 2 \w+ workers: 8 items \[0, 1, 2, 3, 4, 5, 6, 7\]$",
             r"^DistributedSampler, 62 samples on 2 ranks: 31 \+ 31 \| covering: True \| "
             r"disjoint: True$",
             r"^DistributedSampler, 63 samples on 2 ranks: 32 \+ 32 \| covering: True \| "
             r"disjoint: False \(padded with a repeat of \[\d+\]\)$"]
if multiprocessing.get_start_method() != "fork":  # a notebook there loads without workers
    NOTEBOOK_KEY_LINES = [r"^device: (cpu|cuda|mps)$",
                          r"^in a notebook, \w+ workers cannot import the classes",
                          r"^loading in the main process, 2 epochs: every sample once per epoch",
                          r"^with 0 worker\(s\) there are no copies to compare",
                          r"^Stream\(8, split=True\) in the main process: 8 items"]
BAD_RUN = (["--num-samples", "0"], "argument --num-samples: must be in 1..10000, got 0")
FLAG_RUN = (["--batch-size", "8"], r"^one epoch: 8 batches, every sample once: True")


def test_default_collate_turns_dict_samples_into_a_dict_of_batches():
    dataset = m.Points(10, seed=0)
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch["index"].tolist() == [0, 1, 2, 3]
    assert batch["x"].shape == (4, 2) and torch.equal(batch["x"], dataset.x[:4])
    assert batch["label"].tolist() == [int(dataset.x[i].sum() > 0) for i in range(4)]


def test_points_depend_on_the_seed_only_and_apply_their_transform():
    assert torch.equal(m.Points(5, seed=1).x, m.Points(5, seed=1).x)
    assert not torch.equal(m.Points(5, seed=1).x, m.Points(5, seed=2).x)
    doubled = m.Points(5, seed=1, transform=lambda s: {**s, "x": 2 * s["x"]})
    assert torch.equal(doubled[3]["x"], 2 * m.Points(5, seed=1)[3]["x"])
    assert len(list(m.Points(5, seed=1))) == 5  # IndexError ends iteration


def test_shuffle_gives_every_sample_once_per_epoch_in_a_new_order():
    loader = DataLoader(m.Points(13, seed=0), batch_size=4, shuffle=True)
    first, second = m.epoch_order(loader), m.epoch_order(loader)
    assert sorted(first) == sorted(second) == list(range(13))
    assert first != second and first != list(range(13))


def test_same_seed_same_order_another_seed_another_order():
    dataset = m.Points(20, seed=0)
    assert m.shuffled_order(dataset, 4, seed=0) == m.shuffled_order(dataset, 4, seed=0)
    assert m.shuffled_order(dataset, 4, seed=0) != m.shuffled_order(dataset, 4, seed=1)


def test_drop_last_drops_the_short_batch():
    assert len(DataLoader(m.Points(10, 0), batch_size=4)) == 3
    assert len(DataLoader(m.Points(10, 0), batch_size=4, drop_last=True)) == 2


def test_training_epochs_lower_the_loss():
    torch.manual_seed(0)
    model = m.tiny_model()
    loader = DataLoader(m.Points(64, seed=0), batch_size=4, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    losses = [m.train_epoch(model, loader, optimizer) for epoch in range(3)]
    assert losses[0] > losses[1] > losses[2] and losses[2] < 0.7 * losses[0]


def test_evaluation_averages_over_samples_not_over_batches():
    torch.manual_seed(0)
    model, dataset = m.tiny_model(), m.Points(10, seed=3)
    loader = DataLoader(dataset, batch_size=4)  # batches of 4, 4 and 2
    logits = model(dataset.x)
    labels = torch.tensor(dataset.labels)
    loss, accuracy = m.evaluate(model, loader)
    assert loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    assert accuracy == (logits.argmax(1) == labels).sum().item() / 10
    batch_means = [F.cross_entropy(model(b["x"]), b["label"]).item() for b in loader]
    assert loss != pytest.approx(sum(batch_means) / len(batch_means), rel=1e-3)


def test_evaluate_switches_to_eval_mode_and_records_no_gradients():
    model = m.tiny_model()
    m.evaluate(model, DataLoader(m.Points(4, seed=0), batch_size=2))
    assert not model.training and all(p.grad is None for p in model.parameters())


@needs_fork
def test_workers_load_every_sample_once_per_epoch_in_the_main_process_order():
    dataset = m.Points(13, 0, transform=functools.partial(m.add_noise, std=0.1))
    loader = DataLoader(dataset, batch_size=4, shuffle=True, num_workers=2,
                        multiprocessing_context="fork", persistent_workers=True,
                        generator=torch.Generator().manual_seed(5))
    first, second = m.epoch_order(loader), m.epoch_order(loader)
    assert sorted(first) == sorted(second) == list(range(13)) and first != second
    assert first == m.shuffled_order(m.Points(13, 0), 4, seed=5)  # workers do not change it


def shifts(worker_init_fn, seed=0):
    loader = DataLoader(m.Points(8, 0, m.RandomShift(1.0, seed=1)), batch_size=1, num_workers=2,
                        multiprocessing_context="fork", worker_init_fn=worker_init_fn,
                        generator=torch.Generator().manual_seed(seed))
    return m.shifts(loader)


@needs_fork
def test_a_numpy_generator_from_init_repeats_in_every_worker():
    before = shifts(None)  # batches alternate between workers 0 and 1
    assert before[0::2] == before[1::2] and len(set(before[0::2])) > 1


@needs_fork
def test_reseeding_in_worker_init_fn_gives_distinct_repeatable_draws():
    after = shifts(m.seed_worker)
    assert len(set(after)) == 8
    assert shifts(m.seed_worker) == after and shifts(m.seed_worker, seed=1) != after


@needs_fork
@pytest.mark.parametrize("split, copies", [(True, 1), (False, 2)])
def test_a_stream_in_two_workers_yields_each_item_once_only_when_split(split, copies):
    loader = DataLoader(m.Stream(9, split=split), batch_size=None, num_workers=2,
                        multiprocessing_context="fork")
    assert sorted(int(i) for i in loader) == sorted(list(range(9)) * copies)


def test_a_stream_without_workers_yields_each_item_once():
    assert list(m.Stream(5)) == [0, 1, 2, 3, 4]


def test_distributed_shards_cover_an_uneven_length_and_split_an_even_one():
    rank0, rank1 = m.shards(11, num_replicas=2, seed=0)
    assert len(rank0) == len(rank1) == 6
    assert set(rank0) | set(rank1) == set(range(11)) and len(set(rank0) & set(rank1)) == 1
    assert rank1[-1] == rank0[0]  # the padding repeats the start of the shuffled order
    rank0, rank1 = m.shards(10, num_replicas=2, seed=0)
    assert sorted(rank0 + rank1) == list(range(10))  # disjoint and covering


def test_pad_collate_pads_to_the_longest_and_keeps_lengths():
    sequences = [{"tokens": torch.arange(1, n + 1), "label": n % 2} for n in (3, 5, 1)]
    batch = next(iter(DataLoader(sequences, batch_size=3, collate_fn=m.pad_collate)))
    assert batch["tokens"].shape == (3, 5)  # (B, T_max)
    assert batch["tokens"][0].tolist() == [1, 2, 3, 0, 0]
    assert batch["lengths"].tolist() == [3, 5, 1] and batch["label"].tolist() == [1, 1, 1]
    with pytest.raises(RuntimeError, match="equal size"):
        next(iter(DataLoader(sequences, batch_size=3)))


@pytest.mark.parametrize("context", [c for c in ("spawn", "forkserver")
                                     if c in multiprocessing.get_all_start_methods()])
def test_a_closure_stops_spawn_and_forkserver_workers_before_they_start(context):
    message = m.first_batch(m.Points(4, 0, m.make_add_noise(0.1)), context)
    assert re.match(CLOSURE_FAILS, message) and " at 0x" not in message
    with pytest.raises((AttributeError, pickle.PicklingError)):
        pickle.dumps(m.make_add_noise(0.1))


def processes_running(command_line: list[str]) -> list[str]:
    """Process ids whose command line is this one (forked workers share their parent's)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    wanted = "\0".join(command_line)
    found = []
    for entry in proc.iterdir():
        try:
            if entry.name.isdigit() and wanted in (entry / "cmdline").read_text():
                found.append(entry.name)
        except OSError:  # gone meanwhile
            pass
    return found


def interrupt_twice(argv: list[str]) -> tuple:
    """Ctrl-C once in the epoch loop, and once while workers load `worker_loader`."""
    cwd, tmp = scratch("04-ctrl-c"), scratch("04-ctrl-c-tmp")
    code, out, err = interrupt("04_dataloader.py", *argv, cwd=cwd,
                               env={**os.environ, "TMPDIR": str(tmp)},
                               after={"epoch 1 |": 0, "generator seeded": 0.3})  # workers by then
    time.sleep(0.5)
    return code, out, err, cwd, tmp, processes_running(argv)


CTRL_C_ARGV = ["--epochs", "20", "--num-samples", "3000", "--batch-size", "1"]


@early()
def interrupted():
    return submit(interrupt_twice, CTRL_C_ARGV)


def test_ctrl_c_stops_training_early_and_later_stops_the_workers_in_one_line(interrupted):
    """The first Ctrl-C lands in the epoch loop: training stops, the lesson goes on. The second
    lands while workers load the two epochs of `worker_loader`: one line, status 130 (the
    shell's number for a program stopped by SIGINT), and no worker left running."""
    code, out, err, cwd, tmp, left_running = interrupted.result()
    # A Ctrl-C that lands while a fork worker hands a batch over (file descriptors, through
    # multiprocessing's resource_sharer) can make that worker print a ConnectionResetError
    # traceback as it is torn down: multiprocessing's, not the script's. Only that is allowed.
    if "resource_sharer.py" in err:  # that worker's lines, which may come between ours
        err = "".join(line for line in err.splitlines(True)
                      if not re.match(r"Traceback \(|  |\w+Error: ", line))
    assert code in (130, -signal.SIGINT) and err == "interrupted\n", err
    assert re.search(r"^interrupted in epoch \d+: training stopped", out, re.MULTILINE)
    assert re.search(r"^validation \| loss 0\.\d+ over 750 samples", out, re.MULTILINE)
    assert "epoch 20 |" not in out and "every sample once per epoch" not in out
    assert left_running == [] and list(cwd.iterdir()) == []
    # the workers ended as they should: their multiprocessing temp folders are gone
    assert [p for p in tmp.iterdir() if not p.name.startswith("torchinductor_")] == []


def through_spawn(dataset, **kwargs) -> list[dict]:
    loader = DataLoader(dataset, batch_size=2, num_workers=1, multiprocessing_context="spawn",
                        **kwargs)
    return list(loader)


@early()
def spawned():
    """A partial, and a class instance with worker_init_fn, each through a spawn worker."""
    partial = functools.partial(m.add_noise, std=0.1)
    return (submit(through_spawn, m.Points(4, 0, partial)),
            submit(through_spawn, m.Points(4, 0, m.RandomShift(1.0, seed=0)),
                   worker_init_fn=m.seed_worker))


@pytest.mark.skipif("spawn" not in multiprocessing.get_all_start_methods(), reason="no spawn")
def test_spawn_workers_receive_a_partial_and_a_class_instance(spawned):
    noisy, shifted = (future.result() for future in spawned)
    clean = m.Points(4, 0)
    for batches in (noisy, shifted):
        assert [i for batch in batches for i in batch["index"].tolist()] == [0, 1, 2, 3]
        x = torch.cat([batch["x"] for batch in batches])
        assert not torch.equal(x, clean.x) and (x - clean.x).abs().max() < 1.5
    shifts = [s for batch in shifted for s in batch["shift"].tolist()]
    assert len(set(shifts)) == 4


def test_without_workers_every_lesson_runs_in_the_main_process(tmp_path, monkeypatch, capsys):
    run_in_process("04_dataloader.py", ["--num-workers", "0"], monkeypatch, tmp_path)
    lines = capsys.readouterr().out.splitlines()
    for pattern in [r"^loading in the main process, 2 epochs: every sample once per epoch: True, "
                    r".*: True$", r"^with 0 worker\(s\) there are no copies to compare",
                    r"^Stream\(8, split=False\) in the main process: 8 items"] + [
                        pattern for pattern in KEY_LINES[1:] if "worker" not in pattern]:
        assert any(re.search(pattern, line) for line in lines), pattern
    assert list(tmp_path.iterdir()) == []


@needs_fork
def test_the_smallest_data_set_runs_every_lesson(tmp_path, monkeypatch, capsys):
    run_in_process("04_dataloader.py", ["--num-samples", "1", "--batch-size", "1", "--epochs", "1",
              "--multiprocessing-context", "fork"], monkeypatch, tmp_path)
    out = capsys.readouterr().out
    assert "one epoch: 1 batches, every sample once: True" in out
    assert "validation | loss" in out and "nan" not in out
    assert "every sample once per epoch: True" in out
    assert "DistributedSampler, 1 samples on 2 ranks: 1 + 1 | covering: True" in out


def test_a_notebook_where_workers_spawn_loads_in_the_main_process(monkeypatch, capsys):
    """A notebook's cells run in a __main__ that spawn workers cannot import, whether or not it
    has a __file__ (VS Code's window sets one); sys.argv is the kernel's, not this script's."""
    notebook = types.ModuleType("__main__")
    notebook.__file__ = str(ROOT / "04_dataloader.py")
    monkeypatch.setitem(sys.modules, "__main__", notebook)
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda *args, **kwargs: "spawn")
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    exec(compile((ROOT / "04_dataloader.py").read_text(), "notebook", "exec"), notebook.__dict__)
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("in a notebook, spawn workers cannot import the classes defined in its "
                        "cells: num_workers=0 here")
    assert lines[start + 1].startswith("loading in the main process, 2 epochs: every sample once")
    assert any(re.search(r"spawn workers: " + CLOSURE_FAILS, line) for line in lines)


def test_defaults_and_auto_device(monkeypatch):
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    args = m.parse_args([])
    assert (args.device, args.seed, args.num_samples, args.batch_size) == (
        torch.device("cpu"), 0, 62, 4)
    assert (args.epochs, args.num_workers, args.multiprocessing_context) == (
        3, 2, multiprocessing.get_start_method())


BAD_FLAGS = [  # argv, the start of the error message (test_scripts.py runs them)
    (["--num-workers", "-1"], "argument --num-workers: must be in 0..8, got -1"),
    (["--num-workers", "9"], "argument --num-workers: must be in 0..8, got 9"),
    (["--batch-size", "0"], "argument --batch-size: must be in 1..1024, got 0"),
    (["--batch-size", "1025"], "argument --batch-size: must be in 1..1024, got 1025"),
    (["--num-samples", "0"], "argument --num-samples: must be in 1..10000, got 0"),
    (["--num-samples", "1e9"], "argument --num-samples: invalid integer value: '1e9'"),
    (["--epochs", "0"], "argument --epochs: must be in 1..20, got 0"),
    (["--epochs", "21"], "argument --epochs: must be in 1..20, got 21"),
    (["--multiprocessing-context", "thread"], "argument --multiprocessing-context: invalid choice"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
]
