"""03_transforms.py: one transform, three ways to give it parameters, a random one, composition,
the before/after picture and which transforms survive pickling."""
import functools
import pickle
import re

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from conftest import load_script, parse_error, run_in_process

m = load_script("03_transforms.py")

PICKLE_ERROR = r"fails: (AttributeError|PicklingError): Can't (pickle|get) "  # 3.10-3.14
KEY_LINES = [r"^sample: image \(3, 64, 64\) torch.uint8, label 1$",
             r"^to_float\(sample\): image torch.float32 in 0\.\d\d\.\.0\.\d\d; "
             r"the sample is unchanged: True$",
             r"^Shapes\(4, 64, transform=to_float\)\[1\]\['image'\] == that image: True$",
             r"^ShiftScale\(mean=0.5, std=0.25\), a closure and a partial: identical output: True",
             r"^AddNoise\(0.1\): same seed, same noise: True; the next draw differs: True$",
             r"^v2.Compose: image \(3, 64, 64\) torch.float32, label 1$",
             r"^compose\(\): identical to v2.Compose: True$",
             r"^grid \(3, 134, 266\): 4 images above, the same after v2.Compose below$",
             r"^  class instance +pickles, and the copy gives the same output: True$",
             r"^  partial +pickles, and the copy gives the same output: True$",
             r"^  v2.Compose +pickles, and the copy gives the same output: True$",
             r"^  closure +" + PICKLE_ERROR + r"local object",
             r"^  lambda +" + PICKLE_ERROR,
             r"^  compose\(\) +" + PICKLE_ERROR + r"local object",
             r"^closures in DataLoader\(num_workers=0\): work, batch image \(4, 3, 64, 64\)$"]
BAD_RUN = (["--save-grid", "grid.jpg"], "--save-grid grid.jpg: the file name must end in .png")
FLAG_RUN = (["--image-size", "40"], r"^grid \(3, 86, 170\): ")  # rows of 40 + 2 px padding


def sample():
    return {"image": torch.tensor([[[0.0, 0.25], [0.5, 1.0]]]), "label": 1}  # (1, 2, 2)


def three_ways():
    return [m.ShiftScale(0.5, 0.25), m.make_shift_scale(0.5, 0.25),
            functools.partial(m.shift_scale, mean=0.5, std=0.25)]


def test_shapes_are_uint8_squares_and_discs_on_a_gradient():
    dataset = m.Shapes(4, 16)  # shape centre c = 5, half-width r = 3
    square, disc = dataset[0], dataset[1]
    assert len(dataset) == 4 and len(list(dataset)) == 4  # IndexError ends iteration
    assert square["image"].shape == (3, 16, 16) and square["image"].dtype == torch.uint8
    assert (square["label"], disc["label"]) == (0, 1)
    assert square["image"][:, 2, 2].tolist() == [250, 60, 60]  # a square fills its corner
    assert disc["image"][:, 5, 5].tolist() == [60, 160, 250]  # a disc fills its centre...
    assert disc["image"][:, 2, 2].tolist() == [55] * 3  # ...not its corner: 40 + 2 * 120 // 16
    assert disc["image"][0, 15, 15] > disc["image"][0, 15, 0]  # brighter to the right


def test_to_float_maps_0_255_to_0_1_and_leaves_the_input_alone():
    raw = m.Shapes(2, 8)[0]
    before = raw["image"].clone()
    out = m.to_float(raw)
    assert out is not raw and out["label"] == raw["label"]
    torch.testing.assert_close(out["image"], before.float() / 255)
    assert torch.equal(raw["image"], before) and raw["image"].dtype == torch.uint8


def test_the_dataset_applies_its_transform():
    plain, transformed = m.Shapes(3, 8), m.Shapes(3, 8, transform=m.to_float)
    for i in range(3):
        assert torch.equal(transformed[i]["image"], m.to_float(plain[i])["image"])


def test_class_closure_and_partial_compute_the_same_hand_values():
    expected = torch.tensor([[[-2.0, -1.0], [0.0, 2.0]]])  # (x - 0.5) / 0.25
    for transform in three_ways():
        out = transform(sample())
        torch.testing.assert_close(out["image"], expected)
        assert out["label"] == 1
    assert repr(three_ways()[0]) == "ShiftScale(mean=0.5, std=0.25)"


def test_shift_scale_is_v2_normalize_only_with_one_mean_and_std_for_all_channels():
    image = torch.rand(3, 4, 4)
    ours = m.shift_scale({"image": image}, 0.5, 0.25)["image"]
    torch.testing.assert_close(v2.Normalize([0.5] * 3, [0.25] * 3)(image), ours)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # ImageNet's, one per channel
    by_hand = torch.stack([(image[c] - mean[c]) / std[c] for c in range(3)])
    torch.testing.assert_close(v2.Normalize(mean, std)(image), by_hand)


def test_noise_follows_the_seed_and_the_images_dtype():
    noise, image = m.AddNoise(0.1), {"image": torch.zeros(3, 64, 64, dtype=torch.float64)}
    torch.manual_seed(3)
    first = noise(image)["image"]
    torch.manual_seed(3)
    assert torch.equal(noise(image)["image"], first)
    assert not torch.equal(noise(image)["image"], first)
    assert first.dtype == torch.float64 and abs(first.std().item() - 0.1) < 0.01


def test_plain_compose_equals_v2_compose_including_random_steps():
    steps = m.augment(16)
    raw = m.Shapes(2, 16)[1]
    torch.manual_seed(7)
    expected = v2.Compose(steps)(raw)
    torch.manual_seed(7)
    got = m.compose(*steps)(raw)
    assert got["image"].shape == (3, 16, 16) and got["image"].dtype == torch.float32
    assert got["label"] == 1 and torch.equal(got["image"], expected["image"])
    torch.manual_seed(8)
    assert not torch.equal(m.compose(*steps)(raw)["image"], got["image"])  # it is random


def test_to_image_and_to_dtype_do_what_to_float_does():
    raw = m.Shapes(1, 8)[0]
    out = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])(raw)
    torch.testing.assert_close(out["image"].as_subclass(torch.Tensor), m.to_float(raw)["image"])


def test_grid_has_a_row_before_and_a_row_after_in_0_1():
    grid = m.before_after(m.Shapes(3, 16), m.to_float, n=3)
    assert grid.shape == (3, 2 * 18 + 2, 3 * 18 + 2)  # 2 px of padding around each image
    assert grid.min() >= 0 and grid.max() <= 1
    assert torch.equal(grid[:, 2:18], grid[:, 20:36])  # to_float changes nothing that is seen


def test_class_partial_and_v2_compose_pickle_closure_lambda_and_compose_do_not():
    shift, closure, partial = three_ways()
    for transform in (shift, partial, v2.Compose([shift, partial])):
        assert m.pickled_copy(transform, sample()) == (
            "pickles, and the copy gives the same output: True")
    for transform in (closure, lambda s: s, m.compose(shift)):
        with pytest.raises((AttributeError, pickle.PicklingError), match="Can't (pickle|get)"):
            pickle.dumps(transform)
        message = m.pickled_copy(transform, sample())
        assert re.match(PICKLE_ERROR, message) and " at 0x" not in message


def test_a_closure_works_where_nothing_is_pickled():
    dataset = m.Shapes(4, 8, transform=m.compose(m.to_float, m.make_shift_scale(0.5, 0.25)))
    batch = next(iter(DataLoader(dataset, batch_size=4)))  # num_workers=0
    assert batch["image"].shape == (4, 3, 8, 8) and batch["label"].tolist() == [0, 1, 0, 1]


def test_save_grid_writes_one_png_of_the_grids_size(tmp_path, monkeypatch, capsys):
    argv = ["--image-size", "16", "--save-grid", "grid.png"]
    run_in_process("03_transforms.py", argv, monkeypatch, tmp_path)
    assert "wrote grid.png" in capsys.readouterr().out.splitlines()
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]
    with Image.open(tmp_path / "grid.png") as picture:
        assert (picture.format, picture.mode, picture.size) == ("PNG", "RGB", (74, 38))


def test_without_save_grid_no_file_is_written(tmp_path, monkeypatch, capsys):
    run_in_process("03_transforms.py", [], monkeypatch, tmp_path)
    assert "wrote" not in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


BAD_FLAGS = [  # argv, the start of the error message (test_scripts.py runs them)
    (["--image-size", "7"], "argument --image-size: must be in 8..512, got 7"),
    (["--image-size", "513"], "argument --image-size: must be in 8..512, got 513"),
    (["--image-size", "1e2"], "argument --image-size: invalid integer value: '1e2'"),
    (["--save-grid", "grid.jpg"], "--save-grid grid.jpg: the file name must end in .png"),
    (["--save-grid", "grid"], "--save-grid grid: the file name must end in .png"),
    (["--save-grid", "no/such/g.png"], "--save-grid no/such/g.png: no folder no/such"),
    (["--crop", "3"], "unrecognized arguments: --crop 3"),
]

def test_save_grid_onto_a_folder_is_refused(tmp_path, capsys):
    (tmp_path / "x.png").mkdir()
    path = tmp_path / "x.png"
    assert parse_error(m, ["--save-grid", str(path)], capsys) == f"--save-grid {path}: is a folder"
