"""04_dataloader.py: the basic loop and collation, training with workers and evaluation, the
options, and randomness in workers."""
import multiprocessing
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from conftest import ROOT, ctrl_c_at_step, load_script, run_in_process

m = load_script("04_dataloader.py")
needs_fork = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                                reason="these tests start workers with fork")

KEY_LINES = [r"^device: (cpu|cuda|mps)$",
             r"^train_set\[0\]: \{'index': 0, 'x': tensor\(\[.+\]\), 'label': [01]\}$",
             r"^one epoch: 16 batches, every sample once: True, in a shuffled order: \[",
             r"^a batch: index \(4,\) torch.int64, x \(4, 2\) torch.float32, label \(4,\) ",
             r"^training, loading in 2 \w+ workers$",
             r"^epoch 1 \| train loss 0\.\d{4}$", r"^epoch 3 \| train loss 0\.\d{4}$",
             r"^validation, 15 new points \| loss 0\.\d{4} \| accuracy \d+\.\d%$",
             r"^62 samples in batches of 4: 16 batches, with drop_last=True 15$",
             r"^two loaders, generators seeded 0: the same order: True$",
             r"^pad_collate: tokens \(B, T_max\) \(3, 5\), lengths \[3, 5, 1\], "
             r"row 0 \[1, 2, 3, 0, 0\]$",
             r"^RandomShift\(per_process=False\), 2 workers: shifts \[(\S+), \1, (\S+), \2, "
             r"(\S+), \3\]$",  # the two workers draw the same numbers
             r"^RandomShift\(per_process=True\), 2 workers: shifts \["]
if multiprocessing.get_start_method() != "fork":  # Python 3.14 on Linux: forkserver
    NOTEBOOK_KEY_LINES = [r"^device: ", r"^in a notebook, \w+ workers cannot import classes",
                          r"^training, loading in this process$",
                          r"^RandomShift\(per_process=True\), 0 workers: "]
BAD_RUN = (["--batch-size", "0"],
           "--batch-size 0: batch_size should be a positive integer value, but got batch_size=0")
FLAG_RUN = (["--batch-size", "8"], r"^one epoch: 8 batches, every sample once: True")


def test_default_collate_turns_dict_samples_into_a_dict_of_batches():
    dataset = m.Points(10, seed=0)
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch["index"].tolist() == [0, 1, 2, 3]
    assert batch["x"].shape == (4, 2) and torch.equal(batch["x"], dataset.x[:4])
    assert batch["label"].tolist() == [int(dataset.x[i].sum() > 0) for i in range(4)]


def test_points_depend_on_the_seed_alone_and_apply_their_transform():
    torch.manual_seed(5)  # the global generator does not matter
    assert torch.equal(m.Points(5, seed=1).x, m.Points(5, seed=1).x)
    assert not torch.equal(m.Points(5, seed=1).x, m.Points(5, seed=2).x)
    doubled = m.Points(5, seed=1, transform=lambda s: {**s, "x": 2 * s["x"]})
    assert torch.equal(doubled[3]["x"], 2 * m.Points(5, seed=1)[3]["x"])


def test_shuffle_gives_every_sample_once_per_epoch_in_a_new_order():
    loader = DataLoader(m.Points(13, seed=0), batch_size=4, shuffle=True)
    first, second = m.epoch_order(loader), m.epoch_order(loader)
    assert sorted(first) == sorted(second) == list(range(13))
    assert first != second and first != list(range(13))


def test_a_seeded_generator_gives_the_same_order_whatever_was_drawn_before():
    def order(seed):
        torch.randn(7)  # another draw from the global generator
        loader = DataLoader(m.Points(20), 4, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
        return m.epoch_order(loader)
    assert order(0) == order(0) != order(1)


def test_drop_last_drops_the_short_batch():
    assert len(DataLoader(m.Points(10), batch_size=4)) == 3
    assert len(DataLoader(m.Points(10), batch_size=4, drop_last=True)) == 2


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))


def test_training_epochs_lower_the_loss():
    model, loader = tiny(), DataLoader(m.Points(64), batch_size=4, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    losses = [m.train_epoch(model, loader, optimizer) for _ in range(3)]
    assert losses[0] > losses[1] > losses[2] and losses[2] < 0.7 * losses[0]


def test_evaluation_is_the_mean_over_the_samples_seen():
    model, dataset = tiny(), m.Points(10, seed=3)
    logits, labels = model(dataset.x), torch.tensor(dataset.labels)
    loss, accuracy = m.evaluate(model, DataLoader(dataset, batch_size=4))  # 4, 4 and 2
    assert loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    assert accuracy == (logits.argmax(1) == labels).sum().item() / 10
    loss, accuracy = m.evaluate(model, DataLoader(dataset, batch_size=4, drop_last=True))
    assert loss == pytest.approx(F.cross_entropy(logits[:8], labels[:8]).item(), rel=1e-6)
    assert not model.training and all(p.grad is None for p in model.parameters())


@needs_fork
def test_fit_trains_with_persistent_workers_and_leaves_none_running(capsys):
    model = tiny()
    m.fit(model, torch.optim.SGD(model.parameters(), lr=0.2), m.Points(64), 2, 8, 2, "fork")
    assert capsys.readouterr().out.startswith("epoch 1 | train loss ")
    assert multiprocessing.active_children() == []  # the loader, and its workers, went with fit
    assert m.evaluate(model, DataLoader(m.Points(64), 64))[1] > 0.9


def test_ctrl_c_in_fit_stops_the_training_and_returns(capsys):
    class Interrupting(m.Points):
        def __getitem__(self, i):  # Ctrl-C lands while the 30th sample loads: in epoch 2
            self.loaded = getattr(self, "loaded", 0) + 1
            if self.loaded == 30:
                raise KeyboardInterrupt
            return super().__getitem__(i)
    model = tiny()
    before = [p.clone() for p in model.parameters()]
    m.fit(model, torch.optim.SGD(model.parameters(), lr=0.2), Interrupting(16), 5, 4, 0)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1 | train loss ")
    assert lines[1] == "Ctrl-C in epoch 2: training stopped, the model kept as it is"
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_pad_collate_pads_to_the_longest_and_keeps_lengths():
    sequences = [{"tokens": torch.arange(1, n + 1)} for n in (3, 5, 1)]
    batch = next(iter(DataLoader(sequences, batch_size=3, collate_fn=m.pad_collate)))
    assert batch["tokens"].tolist() == [[1, 2, 3, 0, 0], [1, 2, 3, 4, 5], [1, 0, 0, 0, 0]]
    assert batch["lengths"].tolist() == [3, 5, 1]
    with pytest.raises(RuntimeError, match="equal size"):
        next(iter(DataLoader(sequences, batch_size=3)))


def shifts(per_process: bool, num_workers: int, seed: int = 0, context: str = "fork"):
    dataset = m.Points(8, transform=m.RandomShift(1.0, per_process))
    loader = DataLoader(dataset, batch_size=1, num_workers=num_workers,
                        multiprocessing_context=context if num_workers else None,
                        generator=torch.Generator().manual_seed(seed))  # its base_seed
    return [round((b["x"] - dataset.x[b["index"]]).mean().item(), 6) for b in loader]


@needs_fork
def test_a_generator_made_in_init_repeats_in_every_worker():
    copied = shifts(per_process=False, num_workers=2)  # batches alternate: workers 0, 1, 0, ...
    assert copied[0::2] == copied[1::2] and len(set(copied)) == 4


@needs_fork
def test_a_generator_per_process_gives_distinct_draws_repeatable_by_the_loaders_seed():
    drawn = shifts(per_process=True, num_workers=2)
    assert len(set(drawn)) == 8 and all(-1 <= s <= 1 for s in drawn)
    assert shifts(True, 2) == drawn and shifts(True, 2, seed=1) != drawn


@pytest.mark.skipif("spawn" not in multiprocessing.get_all_start_methods(), reason="no spawn")
def test_a_spawn_worker_receives_the_class_instance_and_draws_its_own_numbers():
    drawn = shifts(per_process=True, num_workers=1, context="spawn")
    assert len(set(drawn)) == 8 and shifts(True, 0) != drawn


def test_a_notebook_where_workers_would_spawn_loads_in_this_process(monkeypatch, capsys,
                                                                     tmp_path):
    """A notebook's classes live in its kernel, where spawn workers cannot import them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda: "spawn")
    monkeypatch.setattr(sys, "argv", ["/usr/lib/colab_kernel_launcher.py", "-f", "kernel.json"])
    script = ROOT / "04_dataloader.py"  # run as a kernel runs cells: runpy would set argv[0]
    exec(compile(script.read_text(), script, "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert ("in a notebook, spawn workers cannot import classes made in its cells: no workers "
            "here (`%run 04_dataloader.py` can have them)") in out
    assert "training, loading in this process" in out and "0 workers: shifts" in out


def test_the_lesson_goes_on_after_a_ctrl_c_in_training(tmp_path, monkeypatch, capsys):
    ctrl_c_at_step(monkeypatch, torch.optim.SGD, 20)  # in epoch 2 (16 batches an epoch)
    run_in_process("04_dataloader.py", ["--num-workers", "0"], monkeypatch, tmp_path)
    out = capsys.readouterr().out
    assert "training, loading in this process\nepoch 1 | train loss " in out
    assert ("\nCtrl-C in epoch 2: training stopped, the model kept as it is\n"
            "validation, 15 new points | ") in out
    assert "epoch 3 |" not in out and "RandomShift(per_process=True), 0 workers" in out
