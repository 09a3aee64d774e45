"""03_transforms.py: one transform, three ways to give it parameters, a random one, composition,
the before/after picture, and which transforms pickle."""
import functools
import os
import pickle
import threading

import pytest
import torch

from conftest import error_line, load_script, run_in_process

# torchvision takes a second to import: only the test process that runs these tests imports it,
# the one that runs the notebooks (test_scripts.py), which imports it anyway.
pytestmark = pytest.mark.xdist_group("kernel")

KEY_LINES = [r"^sample: image \(3, 32, 32\) torch.uint8, label 1 -> to_float: torch.float32 in "
             r"0\.\d\d\.\.1\.00$",
             r"^a class, a closure and a partial: the same output: True$",
             r"^v2.Compose: image \(3, 32, 32\) torch.float32; compose\(\) with the same seed "
             r"gives the same: True$",
             r"^grid \(3, 70, 138\): 4 images above, the same after v2.Compose below$",
             r"^  class +pickles$", r"^  closure +fails: (AttributeError|PicklingError)$",
             r"^  partial +pickles$", r"^  v2.Compose +pickles$",
             r"^  compose\(\) +fails: (AttributeError|PicklingError)$",
             r"^  lambda +fails: (AttributeError|PicklingError)$"]  # 3.10-3.13 | 3.14
BAD_RUN = (["--save-grid", "no/such/grid.png"],
           "--save-grid no/such/grid.png: [Errno 2] No such file or directory: 'no/such/grid.png'")
FLAG_RUN = (["--save-grid", "grid.png"], r"^wrote grid.png$")


@pytest.fixture(scope="module")
def m():
    return load_script("03_transforms.py")


@pytest.fixture(scope="module")
def v2():
    from torchvision.transforms import v2
    return v2


def sample():
    return {"image": torch.tensor([[[0.0, 0.25], [0.5, 1.0]]]), "label": 1}  # (1, 2, 2)


def test_squares_are_uint8_images_with_a_square_of_the_labels_colour(m):
    samples = m.squares(4, size=16)  # the square: rows and columns 2..7
    assert len(samples) == 4 and [s["label"] for s in samples] == [0, 1, 2, 0]
    green = samples[1]["image"]
    assert green.shape == (3, 16, 16) and green.dtype == torch.uint8
    assert green[:, 2, 2].tolist() == [60, 255, 60]  # 40 + 2 * 160 // 16 in the other channels
    assert green[:, 8, 8].tolist() == [120] * 3  # outside the square: the grey, 40 + 8 * 10
    assert green[0, 15, 15] > green[0, 15, 0]  # brighter to the right


def test_to_float_maps_0_255_to_0_1_and_leaves_the_input_alone(m):
    raw = m.squares(1, size=8)[0]
    before = raw["image"].clone()
    out = m.to_float(raw)
    assert out is not raw and out["label"] == raw["label"]
    torch.testing.assert_close(out["image"], before.float() / 255)
    assert torch.equal(raw["image"], before) and raw["image"].dtype == torch.uint8


def test_class_closure_and_partial_compute_the_hand_values(m):
    ways = [m.ShiftScale(0.5, 0.25), m.make_shift_scale(0.5, 0.25),
            functools.partial(m.shift_scale, mean=0.5, std=0.25)]
    for transform in ways:
        out = transform(sample())
        torch.testing.assert_close(out["image"], torch.tensor([[[-2.0, -1.0], [0.0, 2.0]]]))
        assert out["label"] == 1


def test_shift_scale_is_v2_normalize_with_one_mean_and_std_for_every_channel(m, v2):
    image = torch.rand(3, 4, 4)
    ours = m.shift_scale({"image": image}, 0.5, 0.25)["image"]
    torch.testing.assert_close(v2.Normalize([0.5] * 3, [0.25] * 3)(image), ours)


def test_noise_follows_the_seed_and_the_images_dtype(m):
    noise, image = m.AddNoise(0.1), {"image": torch.zeros(3, 64, 64, dtype=torch.float64)}
    torch.manual_seed(3)
    first = noise(image)["image"]
    torch.manual_seed(3)
    assert torch.equal(noise(image)["image"], first)
    assert not torch.equal(noise(image)["image"], first)
    assert first.dtype == torch.float64 and abs(first.std().item() - 0.1) < 0.01


def test_plain_compose_calls_each_transform_in_turn_like_v2_compose(m, v2):
    steps = [v2.ToImage(), v2.RandomHorizontalFlip(p=1.0), v2.ToDtype(torch.float32, scale=True),
             m.ShiftScale(0.5, 0.25)]
    raw = m.squares(2, size=8)[1]
    expected = (raw["image"].flip(-1).float() / 255 - 0.5) / 0.25
    for composed in (m.compose(*steps), v2.Compose(steps)):
        out = composed(raw)
        assert out["label"] == 1 and out["image"].dtype == torch.float32
        torch.testing.assert_close(out["image"].as_subclass(torch.Tensor), expected)


def test_class_partial_and_v2_compose_pickle_closure_lambda_and_compose_do_not(m, v2):
    shift, partial = m.ShiftScale(0.5, 0.25), functools.partial(m.shift_scale, mean=0.5, std=0.25)
    for transform in (shift, partial, v2.Compose([shift, partial])):
        assert m.pickles(transform) == "pickles"
        copy = pickle.loads(pickle.dumps(transform))
        assert torch.equal(copy(sample())["image"], transform(sample())["image"])
    for transform in (m.make_shift_scale(0.5, 0.25), lambda s: s, m.compose(shift)):
        assert m.pickles(transform) in ("fails: AttributeError", "fails: PicklingError")
    assert m.pickles(m.ShiftScale(threading.Lock(), 1.0)) == "fails: TypeError"  # a lock inside


def test_save_grid_writes_the_picture(tmp_path, monkeypatch, capsys):
    run_in_process("03_transforms.py", ["--save-grid", "grid.png"], monkeypatch, tmp_path)
    assert "wrote grid.png" in capsys.readouterr().out.splitlines()
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]
    from PIL import Image
    with Image.open(tmp_path / "grid.png") as picture:
        assert (picture.format, picture.mode, picture.size) == ("PNG", "RGB", (138, 70))
        # the row above: the squares as made, each one's colour at its brightest (2 px padding)
        for i in range(3):
            assert picture.getpixel((2 + 34 * i + 8, 2 + 8))[i] == 255


@pytest.mark.parametrize("name, message", [
    ("grid", "unknown file extension: "),
    ("grid.xyz", "unknown file extension: .xyz"),
    ("folder.png", "[Errno 21] Is a directory: 'folder.png'"),
    ("full.png", "[Errno 28] No space left on device"),  # a link to /dev/full: a full disk
    ("grid.psd", "no writer for PSD files"),  # a format PIL reads and cannot write
])
def test_a_grid_that_cannot_be_written_is_one_error_line(name, message, tmp_path, monkeypatch,
                                                          capsys):
    (tmp_path / "folder.png").mkdir()
    os.symlink("/dev/full", tmp_path / "full.png")
    line = error_line("03_transforms.py", ["--save-grid", name], monkeypatch, capsys, tmp_path)
    assert line == f"--save-grid {name}: {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.png", "full.png"]


def test_a_grid_onto_an_immutable_file_is_one_error_line(tmp_path, monkeypatch, capsys):
    """A file no one may write, root included (chattr +i, where the file system has it)."""
    import shutil
    import subprocess
    (tmp_path / "grid.png").touch()
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(tmp_path / "grid.png")],
                                                    capture_output=True).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        line = error_line("03_transforms.py", ["--save-grid", "grid.png"], monkeypatch, capsys,
                          tmp_path)
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "grid.png")])
    assert line == "--save-grid grid.png: [Errno 1] Operation not permitted: 'grid.png'"
