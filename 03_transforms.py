# %% [markdown]
# # 03 - Transforms: functions from a sample to a sample
# A transform takes a sample and returns a new one: a function, a class, a closure or a partial,
# chained with `v2.Compose`. Some can go to DataLoader workers. Run: `python 03_transforms.py`
# %%
import functools
import pickle

import torch
from torchvision.transforms import v2

SEED = 0

# %% [markdown]
# ## A sample, and a transform as a function
# A sample is a dict, `{"image": (C, H, W) uint8 tensor, "label": int}`. A transform returns a new
# dict and leaves its input alone, because a Dataset may hand out the same tensor again.
# %%
def squares(n, size=32):  # n samples: a bright square on grey, in channel i % 3, labelled i % 3
    images = torch.full((n, 3, size, size), 100, dtype=torch.uint8)
    for i in range(n):
        images[i, i % 3, size // 8 : size // 2, size // 8 : size // 2] = 255
    return [{"image": image, "label": i % 3} for i, image in enumerate(images)]

def to_float(sample):  # uint8 0..255 -> float32 0..1
    return {**sample, "image": sample["image"].float() / 255}

sample = squares(4)[1]
image = to_float(sample)["image"]
print(f"a sample: image {tuple(sample['image'].shape)} {sample['image'].dtype}, label "
      f"{sample['label']}; to_float gives {image.dtype} in {image.min():.2f}..{image.max():.2f}")

# %% [markdown]
# ## A transform with parameters: a class, a closure or a partial
# A Dataset calls `transform(sample)` with the sample alone, but `shift_scale` also needs a mean
# and a std. A class keeps them as attributes, a closure remembers them from the function that
# made it, and `functools.partial` fills them in. All three compute the same thing.
# (`v2.Normalize` is torchvision's version, with a mean and a std for each channel.)
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
# ## A pipeline: `v2.Compose` on a dict, with randomness
# `v2.Compose` calls each transform in turn, torchvision's and ours alike. v2's transforms take the
# whole dict, change the image and pass the label through. Their random ones draw from torch's
# generator, so `add_noise` does too: then one `torch.manual_seed` replays the whole pipeline.
# A numpy `Generator` kept in a transform would be copied into every DataLoader worker as it is,
# so all the workers would draw the same numbers (04 shows it).
#
# Two traps of order:
# - v2 takes the first plain tensor in the dict for the image, so a tensor label put before the
#   image is taken for it, and `ToImage` raises because the label is not 2-D.
# - `ShiftScale` before `ToDtype` shifts the values 0..255, not 0..1: they come out wrong, and
#   nothing raises.
# %%
def add_noise(sample):
    return {**sample, "image": sample["image"] + 0.05 * torch.randn_like(sample["image"])}

pipeline = v2.Compose([
    v2.ToImage(),  # ToImage and then ToDtype replace the deprecated ToTensor
    v2.RandomResizedCrop(32, scale=(0.25, 1.0)),  # 25-100% of the area, resized to 32x32
    v2.RandomHorizontalFlip(),  # crop and flip while uint8: 1 byte a value, float32 takes 4
    v2.ToDtype(torch.float32, scale=True),  # uint8 0..255 -> float32 0..1
    ShiftScale(0.5, 0.25),
    add_noise,
])
torch.manual_seed(SEED)
out = pipeline(sample)
torch.manual_seed(SEED)
same = torch.equal(pipeline(sample)["image"], out["image"])
print(f"pipeline(sample): image {out['image'].dtype}, label {out['label']}; the same seed gives "
      f"the same crop, flip and noise: {same}")
try:  # trap 1: the label first, as a tensor
    v2.ToImage()({"label": torch.tensor(1), "image": sample["image"]})
except ValueError as e:
    print(f"ToImage with a tensor label first: ValueError: {e}")
right = ShiftScale(0.5, 0.25)(to_float(sample))["image"]
wrong = ShiftScale(0.5, 0.25)(sample)["image"]  # trap 2: before ToDtype
print(f"ShiftScale after ToDtype gives {right.min():.2f}..{right.max():.2f}; before it, "
      f"{wrong.min():.0f}..{wrong.max():.0f}, and no error")

# %% [markdown]
# ## Which transforms can go to spawn and forkserver workers
# DataLoader workers started with spawn (the default on macOS and Windows) or forkserver (on Linux
# from Python 3.14) receive the Dataset and its transform through `pickle`, which saves a class or
# a function by its importable name. A closure or a lambda has none: chain steps with `v2.Compose`
# rather than in a closure. Workers started with fork copy the Dataset instead, and a closure works
# there. The worker must also import each name, so a class or function defined in a notebook cell
# fails there even where the round trip below succeeds: put it in a .py file and import it.
# %%
print("a pickle round trip in this process, which spawn and forkserver workers need:")
for name, transform in [("class", by_class), ("closure", by_closure), ("partial", by_partial),
                        ("v2.Compose", pipeline)]:
    try:
        pickle.loads(pickle.dumps(transform))
        print(f"  {name:10} pickles")
    except (AttributeError, pickle.PicklingError) as e:  # which of the two: by Python version
        print(f"  {name:10} fails: {type(e).__name__}")
