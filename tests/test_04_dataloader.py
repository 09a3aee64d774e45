"""04_dataloader.py: collation, shuffling, training and evaluation over samples, the options, and
randomness in workers; its pieces against hand-computed results, its flags' errors PyTorch's."""
import multiprocessing
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from conftest import ROOT, Script

m = Script("04_dataloader.py")  # the guarded demos do not run
needs_fork = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                                reason="these tests start workers with fork")

KEY_LINES = [r"^train_set\[0\], one sample: \{'index': 0, 'x': tensor\(\[.+\]\), 'label': [01]\}$",
             r"^one epoch: 16 batches, each of the 61 samples once: True, in a shuffled order \[",
             r"^a batch, collated into a dict: index \(4,\) torch.int64, x \(4, 2\) torch.float32, "
             r"label \(4,\) torch.int64$",
             r"^float targets collate to torch.float64, and binary_cross_entropy raises: Found "
             r"dtype Double but expected Float$",
             r"^training on (cpu|cuda:?\d*|mps|xpu:?\d*), loading in 2 \w+ workers$",
             r"^epoch 1 \| train loss 0\.\d{4}$", r"^epoch 3 \| train loss 0\.\d{4}$",
             r"^validation on 15 new points \| loss 0\.\d{4} \| accuracy \d+\.\d%$",
             r"^61 samples in batches of 4: 16 batches, with drop_last=True 15$",
             r"^two loaders one after the other serve the same order: False from the global "
             r"generator, True from generators seeded 0$",
             r"^pad_collate: tokens \(B, T_max\) \(3, 5\), lengths \[3, 5, 1\], row 0 "
             r"\[1, 2, 3, 0, 0\] padded with 0$",
             r"^RandomShift in 2 \w+ workers, worker_init_fn=None: every worker draws the same "
             r"\[(\S+), \1, (\S+), \2, (\S+), \3\]$",  # each number twice: once per worker
             r"^RandomShift in 2 \w+ workers, worker_init_fn=reseed_rng: all different \["]
NOTEBOOK_KEY_LINES = [r"^training on \S+, loading in the main process$",
                      r"^RandomShift in the main process, worker_init_fn=None: all different"]


def test_collation_stacks_tensors_and_makes_ints_int64_and_floats_float64():
    dataset = m.Points(10)
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch["index"].tolist() == [0, 1, 2, 3] and batch["index"].dtype == torch.int64
    assert batch["x"].shape == (4, 2) and torch.equal(batch["x"], dataset.x[:4])
    assert batch["label"].tolist() == [int(dataset.x[i].sum() > 0) for i in range(4)]
    floats = next(iter(DataLoader([0.5, 1.0], batch_size=2)))
    assert floats.dtype == torch.float64
    with pytest.raises(RuntimeError, match="Found dtype Double but expected Float"):
        F.binary_cross_entropy(torch.full((2,), 0.5), floats / 2)


def test_points_depend_on_their_seed_alone_and_apply_their_transform():
    torch.manual_seed(5)  # the global generator does not matter
    assert torch.equal(m.Points(5, seed=1).x, m.Points(5, seed=1).x)
    assert not torch.equal(m.Points(5, seed=1).x, m.Points(5, seed=2).x)
    doubled = m.Points(5, seed=1, transform=lambda s: {**s, "x": 2 * s["x"]})
    assert torch.equal(doubled[3]["x"], 2 * m.Points(5, seed=1)[3]["x"])


def test_shuffle_serves_every_sample_once_an_epoch_in_a_new_order():
    loader = DataLoader(m.Points(13), batch_size=4, shuffle=True)
    first, second = m.epoch_order(loader), m.epoch_order(loader)
    assert sorted(first) == sorted(second) == list(range(13))
    assert first != second and first != list(range(13))


def test_a_seeded_generator_gives_the_same_order_whatever_was_drawn_before():
    def order(seed):
        torch.randn(7)  # another draw from the global generator
        return m.epoch_order(DataLoader(m.Points(20), batch_size=4, shuffle=True,
                                        generator=torch.Generator().manual_seed(seed)))
    assert order(0) == order(0) != order(1)


def test_drop_last_drops_the_batch_of_one_that_batch_norm_refuses_in_training():
    assert len(DataLoader(m.Points(9), batch_size=4)) == 3
    assert len(DataLoader(m.Points(9), batch_size=4, drop_last=True)) == 2
    last = list(DataLoader(m.Points(9), batch_size=4))[-1]["x"]
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        nn.BatchNorm1d(2)(last)


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))


def test_train_epoch_returns_the_mean_loss_over_samples_not_over_batches():
    model, dataset = tiny(), m.Points(10, seed=3)  # batches of 4, 4 and 2
    with torch.no_grad():
        expected = F.cross_entropy(model(dataset.x), torch.tensor(dataset.labels)).item()
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay as they are
    assert m.train_epoch(model, DataLoader(dataset, batch_size=4), frozen) == pytest.approx(
        expected, rel=1e-6)
    assert model.training


def test_training_epochs_lower_the_loss():
    model, loader = tiny(), DataLoader(m.Points(64), batch_size=4, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    losses = [m.train_epoch(model, loader, optimizer) for _ in range(3)]
    assert losses[0] > losses[1] > losses[2] and losses[2] < 0.7 * losses[0]


def test_evaluate_is_the_mean_over_the_samples_it_is_served():
    model, dataset = tiny(), m.Points(10, seed=3)
    with torch.no_grad():
        logits, labels = model(dataset.x), torch.tensor(dataset.labels)
    loss, accuracy = m.evaluate(model, DataLoader(dataset, batch_size=4))  # 4, 4 and 2
    assert loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    assert accuracy == (logits.argmax(1) == labels).sum().item() / 10
    loss, _ = m.evaluate(model, DataLoader(dataset, batch_size=4, drop_last=True))
    assert loss == pytest.approx(F.cross_entropy(logits[:8], labels[:8]).item(), rel=1e-6)
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_pad_collate_pads_with_0_to_the_longest_and_keeps_the_lengths():
    sequences = [{"tokens": torch.arange(1, n + 1)} for n in (3, 5, 1)]
    batch = next(iter(DataLoader(sequences, batch_size=3, collate_fn=m.pad_collate)))
    assert batch["tokens"].tolist() == [[1, 2, 3, 0, 0], [1, 2, 3, 4, 5], [1, 0, 0, 0, 0]]
    assert batch["lengths"].tolist() == [3, 5, 1]
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        next(iter(DataLoader(sequences, batch_size=3)))


def shifts(num_workers: int, init_fn=None, seed: int = 0, context: str | None = "fork"):
    dataset = m.Points(8, transform=m.RandomShift())
    loader = DataLoader(dataset, num_workers=num_workers, worker_init_fn=init_fn,
                        multiprocessing_context=context if num_workers else None,
                        generator=torch.Generator().manual_seed(seed))  # its base_seed
    return [round((b["x"] - dataset.x[b["index"]])[0, 0].item(), 4) for b in loader]


@needs_fork
def test_a_numpy_generator_made_in_init_draws_the_same_in_every_worker():
    copied = shifts(num_workers=2)  # batches come from workers 0, 1, 0, 1, ...
    assert copied[0::2] == copied[1::2] and len(set(copied)) == 4
    assert shifts(num_workers=0) == shifts(num_workers=1)  # one copy draws as the original


@needs_fork
def test_reseed_rng_gives_each_worker_its_own_draws_repeatable_by_the_loaders_seed():
    drawn = shifts(2, m.reseed_rng)
    assert len(set(drawn)) == 8 and all(-1 <= s <= 1 for s in drawn)
    assert shifts(2, m.reseed_rng) == drawn and shifts(2, m.reseed_rng, seed=1) != drawn


@pytest.mark.skipif("spawn" not in multiprocessing.get_all_start_methods(), reason="no spawn")
def test_a_spawn_worker_imports_the_file_without_its_demos_and_runs_reseed_rng():
    drawn = shifts(1, m.reseed_rng, context="spawn")  # the worker imports 04_dataloader.py
    assert len(set(drawn)) == 8 and drawn != shifts(0)


def run_as_main(monkeypatch, tmp_path, argv0: str, *args: str) -> None:
    """The script's top level as the program, with `sys.argv` = [argv0, *args], in tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [argv0, *args])
    script = ROOT / "04_dataloader.py"  # not runpy.run_path, which would set argv[0] itself
    exec(compile(script.read_text(), script, "exec"), {"__name__": "__main__"})


@pytest.mark.parametrize("args, message", [
    (["--num-workers", "-1"], "num_workers option should be non-negative"),
    (["--num-workers", "0", "--multiprocessing-context", "spawn"],
     "multiprocessing_context can only be used with multi-process loading"),
])
def test_flags_dataloader_refuses_raise_its_own_value_error(args, message, monkeypatch,
                                                            tmp_path, capsys):
    with pytest.raises(ValueError, match=message):
        run_as_main(monkeypatch, tmp_path, "04_dataloader.py", *args)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_a_notebook_loads_in_the_main_process(start_method, monkeypatch, capsys, tmp_path):
    """Spawn and forkserver workers cannot import classes made in a notebook's cells, and fork
    from a kernel's threads can deadlock."""
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda: start_method)
    run_as_main(monkeypatch, tmp_path, "/usr/lib/kernel_launcher.py", "-f", "kernel.json")
    out = capsys.readouterr().out
    assert "training on cpu, loading in the main process\nepoch 1 | train loss " in out
    assert "RandomShift in the main process, worker_init_fn=None: all different [" in out
    assert list(tmp_path.iterdir()) == []

