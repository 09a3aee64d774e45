"""03_transforms.py: a transform as a function, a class, a closure and a partial; v2.Compose on
dict samples with torch's randomness and its two traps of order; what pickles."""
import functools
import pickle

import pytest
import torch
from torchvision.transforms import v2

from conftest import Script

m = Script("03_transforms.py")

KEY_LINES = [r"^a sample: image \(3, 32, 32\) torch.uint8, label 1$",
             r"^to_float\(sample\): image torch.float32, values 0\.39\.\.1\.00$",
             r"^the closure gives the class's image: True; the partial does: True$",
             r"^pipeline\(sample\): image torch.float32, label 1$",
             r"^the same seed again gives the same crop, flip and noise: True$",
             r"^ToImage with a tensor label first: ValueError: Tensor must be 2D or higher",
             r"^ShiftScale after to_float: -0\.43\.\.2\.00$",
             r"^ShiftScale on the uint8 values: 398\.\.1018, far outside -2\.\.2$",
             r"^a pickle round trip in this process:$",
             r"^  class +pickles$", r"^  closure +fails: (AttributeError|PicklingError)$",
             r"^  partial +pickles$", r"^  v2.Compose +pickles$"]


def test_the_class_closure_and_partial_compute_x_minus_mean_over_std_and_keep_their_input():
    image = torch.tensor([[[0.0, 0.5, 1.0]]])
    for transform in [m.ShiftScale(0.5, 0.25), m.make_shift_scale(0.5, 0.25),
                      functools.partial(m.shift_scale, mean=0.5, std=0.25)]:
        sample = {"image": image, "label": 2}
        out = transform(sample)
        assert torch.equal(out["image"], torch.tensor([[[-2.0, 0.0, 2.0]]]))
        assert out["label"] == 2 and sample["image"] is image and out is not sample


def test_to_float_scales_uint8_to_0_1():
    out = m.to_float({"image": torch.tensor([0, 51, 255], dtype=torch.uint8), "label": 0})
    torch.testing.assert_close(out["image"], torch.tensor([0.0, 0.2, 1.0]))


def test_add_noise_follows_torchs_seed_and_keeps_shape_and_dtype():
    image = torch.zeros(3, 8, 8)
    torch.manual_seed(1)
    a = m.add_noise({"image": image, "label": 2})
    torch.manual_seed(1)
    b = m.add_noise({"image": image, "label": 2})["image"]
    assert torch.equal(a["image"], b) and a["label"] == 2 and a["image"].dtype == torch.float32
    assert 0.025 < a["image"].std().item() < 0.075  # 192 draws of N(0, 0.05^2)


def test_the_pipeline_gives_normalised_float_images_and_passes_the_label_through():
    torch.manual_seed(0)
    for label in range(3):
        out = m.pipeline({"image": m.image, "label": label})
        assert out["image"].shape == (3, 32, 32) and out["image"].dtype == torch.float32
        assert out["label"] == label and -2.5 < out["image"].min() < out["image"].max() < 2.5
    assert m.sample["image"] is m.image and m.image.dtype == torch.uint8  # left as it was


def test_without_to_image_a_flip_acts_on_a_tensor_label_put_first():
    image = torch.arange(12, dtype=torch.uint8).reshape(1, 3, 4)
    out = v2.RandomHorizontalFlip(p=1)({"label": torch.tensor([1, 2]), "image": image})
    assert out["label"].tolist() == [2, 1] and torch.equal(out["image"], image)


def test_a_tensor_label_before_the_image_is_taken_for_the_image():
    with pytest.raises(ValueError, match="2D or higher"):
        v2.ToImage()({"label": torch.tensor(1), "image": m.image})


def test_the_classes_and_partials_round_trip_through_pickle_and_closures_do_not():
    for transform in [m.ShiftScale(0.5, 0.25), functools.partial(m.shift_scale, mean=0, std=1),
                      m.add_noise, m.pipeline]:
        assert type(pickle.loads(pickle.dumps(transform))) is type(transform)
    for closure in [m.make_shift_scale(0.5, 0.25), lambda sample: sample]:
        with pytest.raises((AttributeError, pickle.PicklingError)):
            pickle.dumps(closure)
