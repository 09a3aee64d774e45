# %% [markdown]
# # 03 - Transforms: functions from a sample to a sample
# A transform takes a sample and returns a new one. It can be a function, a class, a closure or a
# partial, and `v2.Compose` chains them. Run: `python 03_transforms.py`
# %%
import functools
import pickle

import torch
from torchvision.transforms import v2

# %% [markdown]
# ## A sample, and a transform as a function
# A sample here is a dict: `{"image": (C, H, W) uint8 tensor, "label": int}`. A transform returns
# a new dict and leaves its input alone: a Dataset that keeps its samples in memory hands out the
# same tensors every epoch, and a change made in place would pile up.
# %%
image = torch.full((3, 32, 32), 100, dtype=torch.uint8)  # grey (100 of 255) in 3 channels: C, H, W
image[1, 4:16, 4:16] = 255  # a green square at the top left
sample = {"image": image, "label": 1}

def to_float(sample):  # uint8 0..255 -> float32 0..1
    return {**sample, "image": sample["image"].float() / 255}  # a new dict, with a new "image"

floats = to_float(sample)["image"]
print(f"a sample: image {tuple(image.shape)} {image.dtype}, label {sample['label']}")
print(f"to_float(sample): image {floats.dtype}, values {floats.min():.2f}..{floats.max():.2f}")

# %% [markdown]
# ## A transform with parameters: a class, a closure or a partial
# Our Datasets call `transform(sample)` with the sample alone, but `shift_scale` also needs a mean
# and a std. A class keeps them as attributes. A closure remembers them from the function that
# made it. `functools.partial` fills them in. (`v2.Normalize` takes a mean and std per channel.)
# %%
def shift_scale(sample, mean, std):
    return {**sample, "image": (sample["image"] - mean) / std}

class ShiftScale:
    def __init__(self, mean, std):
        self.mean = mean
        self.std = std

    def __call__(self, sample):
        return shift_scale(sample, self.mean, self.std)

def make_shift_scale(mean, std):
    def shift_scale_sample(sample):  # a closure: it remembers mean and std
        return shift_scale(sample, mean, std)
    return shift_scale_sample

by_class = ShiftScale(0.5, 0.25)
by_closure = make_shift_scale(0.5, 0.25)
by_partial = functools.partial(shift_scale, mean=0.5, std=0.25)
expected = by_class(to_float(sample))["image"]
same_closure = torch.equal(by_closure(to_float(sample))["image"], expected)
same_partial = torch.equal(by_partial(to_float(sample))["image"], expected)
print(f"the closure gives the class's image: {same_closure}; the partial does: {same_partial}")

# %% [markdown]
# ## A pipeline: `v2.Compose`, and randomness drawn from torch
# `v2.Compose` calls each transform in turn, torchvision's and ours alike. v2's transforms take
# the whole dict, change the image and pass the label through.
#
# v2's random transforms draw from torch's generator, so `add_noise` does too: one
# `torch.manual_seed` then replays the whole pipeline. A DataLoader reseeds torch in each worker,
# but a numpy `Generator` kept in a transform is copied into every worker as it is (04 shows it).
# %%
def add_noise(sample):
    return {**sample, "image": sample["image"] + 0.05 * torch.randn_like(sample["image"])}

pipeline = v2.Compose([
    v2.ToImage(),  # wraps the image as a tv_tensors.Image
    v2.RandomResizedCrop(32, scale=(0.25, 1.0)),  # 25-100% of the area, 3:4 to 4:3, to 32x32
    v2.RandomHorizontalFlip(),  # crop and flip on uint8: a quarter of float32's bytes to move
    v2.ToDtype(torch.float32, scale=True),  # uint8 0..255 -> float32 0..1
    ShiftScale(0.5, 0.25),
    add_noise,
])
torch.manual_seed(0)
out = pipeline(sample)
torch.manual_seed(0)
same = torch.equal(pipeline(sample)["image"], out["image"])
print(f"pipeline(sample): image {out['image'].dtype}, label {out['label']}")
print(f"the same seed again gives the same crop, flip and noise: {same}")

# %% [markdown]
# ## Two traps of order
# - Before `ToImage`, v2 takes the first plain tensor in the dict (a `torch.Tensor`, not yet a
#   `tv_tensors.Image`) for the image. A tensor label put first is taken for it: `ToImage` raises,
#   and without `ToImage` a flip would act on the label and leave the image as it was, silently.
# - `ShiftScale` before `ToDtype` shifts the values 0..255, not 0..1, and raises nothing.
#   On 0..1, (0 - 0.5) / 0.25 = -2 and (1 - 0.5) / 0.25 = 2 bound the result.
# %%
try:
    v2.ToImage()({"label": torch.tensor(1), "image": image})
except ValueError as e:
    print(f"ToImage with a tensor label first: ValueError: {e}")
right = ShiftScale(0.5, 0.25)(to_float(sample))["image"]
wrong = ShiftScale(0.5, 0.25)(sample)["image"]
print(f"ShiftScale after to_float: {right.min():.2f}..{right.max():.2f}")
print(f"ShiftScale on the uint8 values: {wrong.min():.0f}..{wrong.max():.0f}, far outside -2..2")

# %% [markdown]
# ## Which transforms can go to spawn and forkserver workers
# DataLoader workers started with spawn (the default on macOS and Windows) or forkserver (on Linux
# from Python 3.14) receive the Dataset and its transform through `pickle`. Pickle saves a
# function or class by its importable name and an object's attributes by value. A closure or a
# lambda has no such name, so chain steps with `v2.Compose`, not in a closure. Workers started
# with fork copy the Dataset instead, and a closure works there. A spawned worker must also import
# each name, which fails for anything defined in a notebook cell, even where the round trip below
# succeeds: put such code in a .py file, and its DataLoader under the `__main__` guard (04).
# %%
print("a pickle round trip in this process:")
for name, transform in [("class", by_class), ("closure", by_closure), ("partial", by_partial),
                        ("v2.Compose", pipeline)]:
    try:
        pickle.loads(pickle.dumps(transform))
        print(f"  {name:10} pickles")
    except (AttributeError, pickle.PicklingError) as e:  # which: by the object and the Python
        print(f"  {name:10} fails: {type(e).__name__}")
