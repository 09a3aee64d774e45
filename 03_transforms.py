# %% [markdown]
# # 03 - Transforms: a function from a sample to a sample
# A transform takes a sample and returns a new one. Its parameters go in through a class, a
# closure or a partial, `v2.Compose` chains transforms, and only some transforms can be pickled for
# spawn and forkserver DataLoader workers. Run: `python 03_transforms.py`

# %%
import functools
import pickle

import torch
from torchvision.transforms import v2
from torchvision.utils import make_grid, save_image

SEED = 0
SAVE_GRID = None  # a file name such as "grid.png", to see the images before and after

# %% [markdown]
# ## A sample, and transforms with parameters
# A sample here is a dict, `{"image": (C, H, W) uint8 tensor, "label": int}`. Our transforms return
# a new dict and leave their input alone, because a Dataset may hand out the same tensor again.
#
# A Dataset calls `transform(sample)` with one argument, and `shift_scale` needs two more: a class
# keeps them as attributes, a closure captures them, and a partial fills them in. `v2.Normalize`
# is torchvision's own, with a mean and a std per channel (it refuses a uint8 image).

# %%
def squares(n, size=32):  # n (3, size, size) uint8 images: a coloured square on a grey ramp
    images = (40 + torch.arange(size) * 160 // size).to(torch.uint8).repeat(n, 3, size, 1)
    for i in range(n):
        images[i, i % 3, size // 8 : size // 2, size // 8 : size // 2] = 255
    return [{"image": image, "label": i % 3} for i, image in enumerate(images)]


def to_float(sample):  # uint8 0..255 -> float32 0..1
    return {**sample, "image": sample["image"].float() / 255}


def shift_scale(sample, mean, std):
    return {**sample, "image": (sample["image"] - mean) / std}


class ShiftScale:
    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def __call__(self, sample):
        return shift_scale(sample, self.mean, self.std)


def make_shift_scale(mean, std):
    def shift_scale_sample(sample):  # a closure: it remembers mean and std
        return shift_scale(sample, mean, std)
    return shift_scale_sample


sample = squares(4)[1]
image = to_float(sample)["image"]
print(f"a sample: image {tuple(sample['image'].shape)} {sample['image'].dtype}, label "
      f"{sample['label']}; to_float gives {image.dtype} in {image.min():.2f}..{image.max():.2f}")
ways = {"class": ShiftScale(0.5, 0.25), "closure": make_shift_scale(0.5, 0.25),
        "partial": functools.partial(shift_scale, mean=0.5, std=0.25)}
outputs = [transform(to_float(sample))["image"] for transform in ways.values()]
print(f"a class, a closure and a partial give the same output: "
      f"{all(torch.equal(outputs[0], out) for out in outputs)}")

# %% [markdown]
# ## Randomness, and `v2.Compose`
# v2's random transforms draw from torch's generator, so draw from it too (`torch.randn_like`):
# one `torch.manual_seed` then replays the whole pipeline. A DataLoader seeds torch, `random` and
# numpy's global generator differently in each worker, but a numpy `Generator` object kept in a
# transform is copied into every worker as it is, so they all draw the same numbers.
#
# `v2.Compose` calls each transform in turn, torchvision's and ours alike. Pitfalls of order: v2
# takes the first plain tensor in the dict as the image, so a tensor label put first is taken for
# it (and a 0-D one makes `ToImage` raise); `ShiftScale` before `ToDtype` shifts the uint8 values
# 0..255, not 0..1, and nothing raises.

# %%
class AddNoise:
    def __init__(self, std):
        self.std = std

    def __call__(self, sample):
        return {**sample, "image": sample["image"] + self.std * torch.randn_like(sample["image"])}


pipeline = v2.Compose([v2.ToImage(),  # ToImage, then ToDtype, replace the deprecated ToTensor
    v2.RandomResizedCrop(32, scale=(0.25, 1.0)),  # 25-100% of the area, resized to 32x32
    v2.RandomHorizontalFlip(),  # crop and flip while uint8: a quarter of float32's bytes
    v2.ToDtype(torch.float32, scale=True), ShiftScale(0.5, 0.25), AddNoise(0.05)])
torch.manual_seed(SEED)
out = pipeline(sample)["image"]
torch.manual_seed(SEED)
print(f"v2.Compose: image {tuple(out.shape)} {out.dtype}; the same seed gives the same crop, "
      f"flip and noise: {torch.equal(pipeline(sample)['image'], out)}")
wrong = ShiftScale(0.5, 0.25)(sample)["image"]  # before ToDtype
print(f"ShiftScale before ToDtype: {wrong.min():.0f}..{wrong.max():.0f}; on 0..1, within -2..2")
if SAVE_GRID:  # four images, and below them the same after the pipeline, each shown in 0..1
    images = [to_float(s)["image"] for s in squares(4)] + [pipeline(s)["image"] for s in squares(4)]
    save_image(make_grid(images, nrow=4, normalize=True, scale_each=True), SAVE_GRID)

# %% [markdown]
# ## Which transforms can go to spawn and forkserver workers
# Workers started with spawn (the default on macOS and Windows) or forkserver (on Linux from
# Python 3.14) receive the Dataset and its transform through `pickle`. Pickle saves a function or
# a class by its importable name, which a closure or a lambda does not have; so chain with
# `v2.Compose`, not a closure. A class or function defined in a notebook cell lives in the
# kernel's `__main__`, which a spawned worker cannot import, and a round trip within one process
# cannot show it: put them in a .py file and import them from there. Workers started with fork
# inherit the Dataset instead, and a closure works there.

# %%
print("a pickle round trip, as spawn and forkserver workers need it:")
for name, transform in [*ways.items(), ("v2.Compose", pipeline)]:
    try:
        pickle.loads(pickle.dumps(transform))
        print(f"  {name:10} pickles")
    except (AttributeError, pickle.PicklingError) as e:  # a closure: PicklingError on Python 3.14
        print(f"  {name:10} fails: {type(e).__name__}")
