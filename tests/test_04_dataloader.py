"""04_dataloader.py: the loop's options, collation and pad_collate, a training epoch and an
evaluation over samples, and randomness in workers, against reference results; its flags' errors
are PyTorch's own."""
import multiprocessing
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import ROOT, Script

m = Script("04_dataloader.py")  # the guarded demos do not run
needs_fork = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                                reason="these tests start workers with fork")

BATCHES_OF_10 = r"\[\[\d, \d, \d, \d\], \[\d, \d, \d, \d\], \[\d, \d\]\]"
DRAW = r"(-?\d\.\d+)"
KEY_LINES = [
    rf"^epoch 1 with shuffle=True: {BATCHES_OF_10}, each number once$",
    rf"^epoch 2 with shuffle=True: {BATCHES_OF_10}, each number once$",
    r"^drop_last=True: \[\[0, 1, 2, 3\], \[4, 5, 6, 7\]\], without the short last batch$",
    rf"^generator seeded 0: ({BATCHES_OF_10}); reseeded after another draw, the same: \1$",
    r"^a batch of 4 samples: x torch.Size\(\[4, 2\]\) torch.float32, label torch.Size\(\[4\]\) "
    r"torch.int64$",
    r"^Python floats collate to torch.float64, and binary_cross_entropy raises: Found dtype "
    r"Double but expected Float$",
    r"^pad_collate: tokens \[\[1, 2, 3, 0, 0\], \[4, 5, 6, 7, 8\], \[9, 0, 0, 0, 0\]\], "
    r"lengths \[3, 5, 1\]$",
    r"^training on \w+, num_workers=2$",
    r"^epoch 1 \| validation loss 0\.\d{4}$",
    r"^epoch 3 \| validation loss 0\.\d{4}$",
    rf"^one Generator copied into 2 workers, each number twice: \[{DRAW}, \1, {DRAW}, \2, "
    rf"{DRAW}, \3\]$",
    r"^each worker's copy reseeded by reseed_rng, all different: \[",
]
# A notebook loads in the main process, and skips the comparison of workers' draws.
NOTEBOOK_KEY_LINES = KEY_LINES[:7] + [r"^training on \w+, num_workers=0$",
                                      r"^epoch 3 \| validation loss 0\.\d{4}$"]


def test_a_seeded_generator_gives_the_same_order_whatever_was_drawn_before():
    def first_epoch(seed):
        torch.randn(7)  # another draw from the global generator
        loader = DataLoader(range(10), batch_size=4, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
        return [batch.tolist() for batch in loader]
    assert first_epoch(0) == first_epoch(0) != first_epoch(1)
    assert sorted(sum(first_epoch(0), [])) == list(range(10))


def test_drop_last_drops_the_batch_of_one_that_batch_norm_refuses_in_training():
    kept = list(DataLoader(torch.randn(9, 2), batch_size=4))
    dropped = list(DataLoader(torch.randn(9, 2), batch_size=4, drop_last=True))
    assert [len(b) for b in kept] == [4, 4, 1] and [len(b) for b in dropped] == [4, 4]
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        nn.BatchNorm1d(2)(kept[-1])


def test_collation_stacks_each_part_of_the_tuples_and_makes_python_floats_float64():
    x, labels = torch.randn(6, 2), torch.tensor([0, 1, 1, 0, 1, 0])
    batch_x, batch_label = next(iter(DataLoader(TensorDataset(x, labels), batch_size=4)))
    assert torch.equal(batch_x, x[:4]) and torch.equal(batch_label, labels[:4])
    assert next(iter(DataLoader([1, 2], batch_size=2))).dtype == torch.int64
    floats = next(iter(DataLoader([0.0, 1.0], batch_size=2)))
    assert floats.dtype == torch.float64
    with pytest.raises(RuntimeError, match="Found dtype Double but expected Float"):
        F.binary_cross_entropy(torch.full((2,), 0.5), floats)
    assert F.binary_cross_entropy(torch.full((2,), 0.5), floats.float()).item() == pytest.approx(
        np.log(2))


def test_pad_collate_pads_with_0_to_the_longest_and_returns_the_lengths():
    sequences = [torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6, 7, 8]), torch.tensor([9])]
    tokens, lengths = next(iter(DataLoader(sequences, batch_size=3, collate_fn=m.pad_collate)))
    assert tokens.tolist() == [[1, 2, 3, 0, 0], [4, 5, 6, 7, 8], [9, 0, 0, 0, 0]]
    assert lengths.tolist() == [3, 5, 1]
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        next(iter(DataLoader(sequences, batch_size=3)))


def points(n: int, seed: int) -> TensorDataset:
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(x, (x.sum(dim=1) > 0).long())


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))


def test_train_epoch_takes_one_sgd_step_per_batch_on_the_batch_mean():
    model, reference, dataset = tiny(), tiny(), points(10, seed=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    m.train_epoch(model, DataLoader(dataset, batch_size=4), optimizer, "cpu")  # 4, 4 and 2
    for start in (0, 4, 8):  # plain SGD by hand on the same batches
        x, label = dataset[start:start + 4]
        reference.zero_grad()
        F.cross_entropy(reference(x), label).backward()
        with torch.no_grad():
            for p in reference.parameters():
                p -= 0.1 * p.grad
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q)
    assert model.training


def test_training_epochs_lower_the_validation_loss():
    model = tiny()
    train_loader = DataLoader(points(64, seed=1), batch_size=4, shuffle=True)
    val_loader = DataLoader(points(15, seed=2), batch_size=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    before = m.evaluate(model, val_loader, "cpu")
    for _ in range(3):
        m.train_epoch(model, train_loader, optimizer, "cpu")
    assert m.evaluate(model, val_loader, "cpu") < 0.5 * before


def test_evaluate_is_the_mean_over_the_samples_it_is_served():
    model, dataset = tiny(), points(10, seed=3)
    x, labels = dataset.tensors
    with torch.no_grad():
        logits = model(x)
    loss = m.evaluate(model, DataLoader(dataset, batch_size=4), "cpu")  # 4, 4 and 2
    assert loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    batch_means = [F.cross_entropy(logits[i:i + 4], labels[i:i + 4]).item() for i in (0, 4, 8)]
    assert loss != pytest.approx(sum(batch_means) / 3, rel=1e-3)  # not a mean of batch means
    loss = m.evaluate(model, DataLoader(dataset, batch_size=4, drop_last=True), "cpu")
    assert loss == pytest.approx(F.cross_entropy(logits[:8], labels[:8]).item(), rel=1e-6)
    assert not model.training and all(p.grad is None for p in model.parameters())


def draws(num_workers: int, init_fn=None, seed: int = 0, context: str | None = "fork"):
    loader = DataLoader(m.RandomDraws(), num_workers=num_workers, worker_init_fn=init_fn,
                        multiprocessing_context=context if num_workers else None,
                        generator=torch.Generator().manual_seed(seed))  # its base seed
    return [batch.item() for batch in loader]


@needs_fork
def test_a_numpy_generator_made_in_init_draws_the_same_in_every_worker():
    first = np.random.default_rng(m.SEED).uniform(-1, 1, size=6).tolist()  # one copy's draws
    assert draws(num_workers=0) == pytest.approx(first)
    copied = draws(num_workers=2)  # batches come from workers 0, 1, 0, 1, ...
    assert copied == pytest.approx([first[0], first[0], first[1], first[1], first[2], first[2]])


@needs_fork
def test_reseed_rng_gives_each_worker_its_own_draws_repeatable_by_the_loaders_seed():
    drawn = draws(2, m.reseed_rng)
    assert len(set(drawn)) == 6 and all(-1 <= d < 1 for d in drawn)
    assert draws(2, m.reseed_rng) == drawn and draws(2, m.reseed_rng, seed=1) != drawn


@pytest.mark.skipif("spawn" not in multiprocessing.get_all_start_methods(), reason="no spawn")
def test_a_spawn_worker_imports_the_file_without_its_demos_and_runs_reseed_rng():
    drawn = draws(1, m.reseed_rng, context="spawn")  # the worker imports 04_dataloader.py
    assert len(set(drawn)) == 6 and drawn != draws(0)


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


@pytest.mark.parametrize("argv", [
    ["04_dataloader.py", "--num-workers", "0"],
    ["/usr/lib/python3/site-packages/ipykernel_launcher.py", "-f", "kernel.json"],  # Jupyter's
    ["/usr/local/lib/python3/dist-packages/colab_kernel_launcher.py", "-f", "k.json"],  # Colab's
])
def test_without_workers_it_trains_in_the_main_process_and_skips_the_workers_draws(
        argv, monkeypatch, capsys, tmp_path):
    run_as_main(monkeypatch, tmp_path, *argv)
    out = capsys.readouterr().out
    assert f"training on {m.device}, num_workers=0\nepoch 1 | validation loss " in out
    assert "epoch 3 | validation loss " in out and "reseed_rng" not in out
    assert list(tmp_path.iterdir()) == []
