"""04_dataloader.py: collation, shuffling, padding, worker seeding, streams, sharding."""
import multiprocessing

import pytest
import torch
from torch.utils.data import DataLoader

from conftest import load_script, main_error, start_script

m = load_script("04_dataloader.py")
needs_fork = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                                reason="in-process worker tests use fork")


def test_default_collate_turns_dict_samples_into_a_dict_of_batches():
    batch = next(iter(DataLoader(m.Squares(10), batch_size=4)))
    assert batch["index"].tolist() == [0, 1, 2, 3]
    assert batch["x"].shape == (4, 2) and batch["x"][3].tolist() == [3.0, 9.0]
    assert batch["label"].tolist() == [0, 1, 2, 0]


def test_drop_last_drops_the_short_batch():
    assert len(DataLoader(m.Squares(10), batch_size=4)) == 3
    assert len(DataLoader(m.Squares(10), batch_size=4, drop_last=True)) == 2


@needs_fork
def test_shuffle_gives_every_sample_once_per_epoch_with_workers():
    loader = DataLoader(m.Squares(13), batch_size=4, shuffle=True, num_workers=2,
                        multiprocessing_context="fork", persistent_workers=True,
                        generator=torch.Generator().manual_seed(0))
    first, second = m.epoch_order(loader), m.epoch_order(loader)
    assert sorted(first) == sorted(second) == list(range(13))
    assert first != second  # a new shuffle each epoch


def test_same_seed_same_order_another_seed_another_order():
    dataset = m.Squares(20)
    assert m.shuffled_order(dataset, 4, seed=0) == m.shuffled_order(dataset, 4, seed=0)
    assert m.shuffled_order(dataset, 4, seed=0) != m.shuffled_order(dataset, 4, seed=1)
    assert m.shuffled_order(dataset, 4, seed=0) != list(range(20))


def test_pad_collate_pads_to_the_longest_and_keeps_lengths():
    batch = next(iter(DataLoader(m.Sequences([3, 5, 1]), batch_size=3, collate_fn=m.pad_collate)))
    assert batch["tokens"].shape == (5, 3)  # (T_max, B)
    assert batch["lengths"].tolist() == [3, 5, 1]
    assert batch["tokens"][:, 0].tolist() == [1, 2, 3, 0, 0]
    assert batch["tokens"][:, 2].tolist() == [1, 0, 0, 0, 0]
    assert batch["label"].tolist() == [0, 1, 0]


def draws(worker_init_fn, seed=0):
    loader = DataLoader(m.NoisyDataset(8, seed=1), batch_size=1, num_workers=2,
                        multiprocessing_context="fork", worker_init_fn=worker_init_fn,
                        generator=torch.Generator().manual_seed(seed))
    return m.draws_by_worker(loader)


@needs_fork
def test_a_generator_from_init_repeats_in_every_worker():
    before = draws(None)
    assert set(before) == {0, 1} and len(before[0]) == 4
    assert before[0] == before[1]


@needs_fork
def test_reseeding_in_worker_init_fn_gives_distinct_reproducible_draws():
    after = draws(m.seed_worker)
    assert after[0] != after[1]
    assert draws(m.seed_worker) == after  # a seeded loader repeats
    assert draws(m.seed_worker, seed=1) != after


def test_main_process_has_no_worker_info():
    assert m.NoisyDataset(1, seed=0)[0]["worker"] == -1


@needs_fork
@pytest.mark.parametrize("split, copies", [(True, 1), (False, 2)])
def test_range_stream_in_two_workers(split, copies):
    loader = DataLoader(m.RangeStream(0, 9, split=split), batch_size=None, num_workers=2,
                        multiprocessing_context="fork")
    assert sorted(int(i) for i in loader) == sorted(list(range(9)) * copies)


def test_range_stream_without_workers_yields_each_item_once():
    assert list(m.RangeStream(3, 7)) == [3, 4, 5, 6]


def test_distributed_shards_are_disjoint_and_cover_the_data():
    rank0, rank1 = m.shards(m.Squares(10), num_replicas=2, seed=0)
    assert len(rank0) == len(rank1) == 5
    assert not set(rank0) & set(rank1) and sorted(rank0 + rank1) == list(range(10))
    assert m.shards(m.Squares(10), 2, seed=0, epoch=1) != [rank0, rank1]  # set_epoch reshuffles


def test_distributed_shards_pad_an_uneven_length_by_repeating():
    shards = m.shards(m.Squares(11), num_replicas=2, seed=0)
    assert [len(s) for s in shards] == [6, 6]
    assert set(shards[0] + shards[1]) == set(range(11))


def test_spawn_forkserver_and_no_workers_all_run(tmp_path):
    # fork, Linux's default before Python 3.14, is the default run in test_scripts.py.
    methods = [c for c in multiprocessing.get_all_start_methods() if c != "fork"]
    runs = [["--num-workers", "2", "--multiprocessing-context", c] for c in methods]
    runs.append(["--num-workers", "0"])
    # Started together: spawn workers each import torch, which takes seconds.
    procs = [start_script("04_dataloader.py", *args, cwd=tmp_path) for args in runs]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for args, proc, (out, err) in zip(runs, procs, outputs):
        assert proc.returncode == 0, (args, err)
        assert err == ""
    with_workers = [out.splitlines()[1:] for out, _ in outputs[:-1]]  # line 0 names the method
    assert all(lines == with_workers[0] for lines in with_workers)
    assert "RangeStream(0, 8, split=True) in 2 workers: 8 items" in outputs[0][0]
    no_workers = outputs[-1][0]
    assert "no copies to compare" in no_workers
    # Order, padding and shards are decided in the main process: workers do not change them.
    same = ("epoch 1", "a new loader", "padded", "DistributedSampler")
    assert ([line for line in no_workers.splitlines() if line.startswith(same)]
            == [line for line in outputs[0][0].splitlines() if line.startswith(same)])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--num-workers", "-1"], "argument --num-workers: must be at least 0, got -1"),
    (["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    (["--num-samples", "0"], "argument --num-samples: must be at least 1, got 0"),
    (["--multiprocessing-context", "thread"], "argument --multiprocessing-context: invalid choice"),
])
def test_bad_flags_are_one_line_and_exit_2(argv, message, capsys):
    assert message in main_error(m, argv, capsys)


def test_missing_cuda_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "--device cuda: no CUDA GPU" in main_error(m, ["--device", "cuda"], capsys)
