"""03_transforms.py: one transform three ways, composition, seeding, and pickling for workers."""
import functools
import multiprocessing
import pickle

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from conftest import load_script, main_error, run_script

m = load_script("03_transforms.py")


@pytest.fixture
def sample():
    return {"image": torch.tensor([[[0.0, 0.25], [0.5, 1.0]]]), "label": 1}  # (1, 2, 2)


def three_ways():
    return [m.Normalize(0.5, 0.25), m.make_normalize(0.5, 0.25),
            functools.partial(m.normalize, mean=0.5, std=0.25)]


def test_class_closure_and_partial_compute_the_same_hand_values(sample):
    expected = torch.tensor([[[-2.0, -1.0], [0.0, 2.0]]])  # (x - 0.5) / 0.25
    for transform in three_ways():
        out = transform(sample)
        torch.testing.assert_close(out["image"], expected)
        assert out["label"] == 1


def test_transforms_return_a_new_sample_and_leave_the_input_alone(sample):
    before = sample["image"].clone()
    out = m.Normalize(0.5, 0.25)(sample)
    assert out is not sample and torch.equal(sample["image"], before)


def test_callable_classes_have_a_readable_repr():
    assert repr(m.Normalize(0.5, 0.25)) == "Normalize(mean=0.5, std=0.25)"
    assert repr(m.AddNoise(0.1)) == "AddNoise(std=0.1)"


def test_class_instance_and_partial_pickle_but_closure_lambda_and_compose_do_not(sample):
    for transform in three_ways()[::2]:  # the class instance and the partial
        copy = pickle.loads(pickle.dumps(transform))
        assert torch.equal(copy(sample)["image"], transform(sample)["image"])
    for transform in [m.make_normalize(0.5, 0.25), lambda s: s, m.compose(m.Normalize(0, 1))]:
        with pytest.raises((AttributeError, pickle.PicklingError)):
            pickle.dumps(transform)


@pytest.mark.parametrize("context", [c for c in ("spawn", "forkserver")
                                     if c in multiprocessing.get_all_start_methods()])
def test_a_closure_stops_a_spawn_or_forkserver_dataloader(context):
    result = m.run_in_worker(m.make_image(4), m.make_normalize(0.5, 0.25), context)
    assert result.startswith("fails: AttributeError: ") and "local object" in result
    assert " at 0x" not in result


def test_class_instance_and_partial_really_run_in_a_spawn_worker(tmp_path):
    result = run_script("03_transforms.py", "--check-workers", "--start-method", "spawn",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "both, in a worker works: batch image (2, 3, 32, 32)" in result.stdout


def test_pickle_round_trip_reports_an_equal_copy():
    result = m.pickle_round_trip(m.make_image(4), m.Normalize(0.5, 0.25))
    assert result.endswith("same output: True")


def test_plain_compose_equals_v2_compose_including_random_steps():
    steps = [v2.ToImage(), v2.RandomCrop(5), v2.ToDtype(torch.float32, scale=True),
             m.Normalize(0.5, 0.25), m.AddNoise(0.1)]
    sample = {"image": m.make_image(8), "label": 3}
    torch.manual_seed(7)
    expected = v2.Compose(steps)(sample)
    torch.manual_seed(7)
    got = m.compose(*steps)(sample)
    assert got["image"].shape == (3, 5, 5) and got["label"] == 3
    assert torch.equal(got["image"], expected["image"])


def test_to_image_and_to_dtype_scale_uint8_to_unit_floats():
    image = m.make_image(6)
    to_float = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    out = to_float({"image": image, "label": 0})
    assert out["image"].dtype == torch.float32 and out["label"] == 0
    torch.testing.assert_close(out["image"].as_subclass(torch.Tensor), image.float() / 255)


def test_make_image_is_uint8_with_a_bright_top_left_square():
    image = m.make_image(8)
    assert image.shape == (3, 8, 8) and image.dtype == torch.uint8
    assert (image[:, :4, :4] == 255).all() and (image[:, 4:, :] <= 120).all()


def test_noise_follows_torch_manual_seed(sample):
    noise = m.AddNoise(0.1)
    torch.manual_seed(3)
    first = noise(sample)["image"]
    torch.manual_seed(3)
    assert torch.equal(noise(sample)["image"], first)
    assert not torch.equal(noise(sample)["image"], first)
    torch.testing.assert_close(first, sample["image"], atol=0.6, rtol=0)  # small noise


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_noise_differs_between_dataloader_workers():
    dataset = m.Images(torch.zeros(1, 4, 4), m.AddNoise(1.0), length=2)
    loader = DataLoader(dataset, batch_size=1, num_workers=2, multiprocessing_context="fork")
    first, second = [batch["image"] for batch in loader]  # one sample from each worker
    assert not torch.equal(first, second)


def test_images_dataset_ends_iteration_with_index_error():
    assert len(list(m.Images(m.make_image(4), m.Normalize(0, 1), length=3))) == 3


def test_crop_larger_than_image_is_rejected(capsys):
    line = main_error(m, ["--image-size", "16", "--crop", "20"], capsys)
    assert "--crop 20 is larger than --image-size 16" in line


@pytest.mark.parametrize("flag", ["--image-size", "--crop"])
def test_sizes_must_be_positive(flag, capsys):
    line = main_error(m, [flag, "0"], capsys)
    assert f"argument {flag}: must be a positive integer, got 0" in line
