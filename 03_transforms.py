# %% [markdown]
# # 03 - Transforms: a function from a sample to a sample
# A transform takes a sample and returns a new one: parameters through a class, a closure or a
# partial, chains through `v2.Compose`, and which of them can be pickled for DataLoader workers.
# Run: `python 03_transforms.py` (try `--save-grid grid.png` to see the images)

# %%
import argparse
import functools
import pickle
import sys
from pathlib import Path

import torch
from torchvision.transforms import v2
from torchvision.utils import make_grid, save_image

if __name__ == "__main__":  # the demos run when this file is the program, never on import
    parser = argparse.ArgumentParser(description="Transforms: from a sample to a sample.")
    parser.add_argument("--save-grid", type=Path, help="write the images to it, e.g. grid.png")
    parser.add_argument("--seed", type=int, default=0)
    # flags: `python 03_transforms.py --seed 1` or `%run 03_transforms.py --seed 1`; notebook: none
    args = parser.parse_args([] if sys.argv[0].endswith("kernel_launcher.py") else None)

# %% [markdown]
# ## A sample, and one transform
# A sample is a dict, `{"image": (C, H, W) uint8 tensor, "label": int}`, and a transform returns a
# new dict, leaving its input alone: a Dataset may hand out the same tensor again. (torchvision's
# datasets pass their `transform=` the image alone: the dict transforms here do not fit them.)

# %%
def squares(n: int, size: int = 32) -> list[dict]:
    """n uint8 images (3, size, size), as `decode_image` gives: a coloured square on a grey ramp."""
    x = torch.arange(size).expand(size, size)  # (H, W): each pixel's column
    images = (40 + x * 160 // size).to(torch.uint8).repeat(n, 3, 1, 1)  # (n, 3, H, W)
    for i in range(n):
        images[i, i % 3, size // 8 : size // 2, size // 8 : size // 2] = 255
    return [{"image": image, "label": i % 3} for i, image in enumerate(images)]


def to_float(sample: dict) -> dict:
    return {**sample, "image": sample["image"].float() / 255}  # uint8 0..255 -> float32 0..1


if __name__ == "__main__":
    sample = squares(4)[1]
    image = to_float(sample)["image"]
    print(f"sample: image {tuple(sample['image'].shape)} {sample['image'].dtype}, label "
          f"{sample['label']} -> to_float: {image.dtype} in {image.min():.2f}..{image.max():.2f}")

# %% [markdown]
# ## Parameters: a class, a closure or `functools.partial`
# A Dataset like 02's calls `transform(sample)` with one argument; `shift_scale` needs two
# more. A class keeps them as attributes, a closure captures them, a partial fills them in.
# (`v2.Normalize` does this with a mean and a std per channel.)

# %%
def shift_scale(sample: dict, mean: float, std: float) -> dict:
    return {**sample, "image": (sample["image"] - mean) / std}


class ShiftScale:
    def __init__(self, mean: float, std: float):
        self.mean, self.std = mean, std

    def __call__(self, sample: dict) -> dict:
        return shift_scale(sample, self.mean, self.std)


def make_shift_scale(mean: float, std: float):
    def shift_scale_sample(sample: dict) -> dict:  # it remembers mean and std: a closure
        return shift_scale(sample, mean, std)
    return shift_scale_sample


if __name__ == "__main__":
    ways = {"class": ShiftScale(0.5, 0.25), "closure": make_shift_scale(0.5, 0.25),
            "partial": functools.partial(shift_scale, mean=0.5, std=0.25)}
    outputs = [transform(to_float(sample))["image"] for transform in ways.values()]
    print(f"a class, a closure and a partial: the same output: "
          f"{all(torch.equal(outputs[0], out) for out in outputs)}")

# %% [markdown]
# ## A random transform, composing, and a look at them
# Draw with torch: `torch.randn_like(image)` follows the image's device and dtype (it needs a
# float image). `torch.manual_seed` seeds it; DataLoader seeds each worker's torch differently.
# `v2.Compose` calls each transform in turn, torchvision's and ours. v2 transforms take the dict:
# with no `tv_tensors.Image`, `Video` or PIL image in it, the first plain tensor is the image; an
# int label passes through. `ToImage` then `ToDtype(float32, scale=True)` replace `ToTensor`
# (deprecated in v2); crop and flip before `ToDtype`, on uint8: 4x fewer bytes to move.
# `make_grid(..., normalize=True, scale_each=True)` stretches each image to 0..1, to show shapes.

# %%
class AddNoise:
    def __init__(self, std: float):
        self.std = std

    def __call__(self, sample: dict) -> dict:
        image = sample["image"]
        return {**sample, "image": image + self.std * torch.randn_like(image)}


def compose(*transforms):  # what v2.Compose does with one sample, in three lines
    def composed(sample: dict) -> dict:
        for transform in transforms:
            sample = transform(sample)
        return sample
    return composed


if __name__ == "__main__":
    steps = [v2.ToImage(), v2.RandomResizedCrop(32, scale=(0.25, 1.0)),  # 25-100% of the area
             v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True),
             ShiftScale(0.5, 0.25), AddNoise(0.05)]
    pipeline = v2.Compose(steps)
    torch.manual_seed(args.seed)
    out = pipeline(sample)["image"]  # resized back to (3, 32, 32)
    torch.manual_seed(args.seed)  # the same seed: the same crop, flip and noise
    again = compose(*steps)(sample)["image"]
    print(f"v2.Compose: image {tuple(out.shape)} {out.dtype}; compose() with the same "
          f"seed gives the same: {torch.equal(again, out)}")
    before = [to_float(s)["image"] for s in squares(4)]
    after = [pipeline(s)["image"] for s in squares(4)]
    grid = make_grid(torch.stack(before + after), nrow=4, normalize=True, scale_each=True)
    print(f"grid {tuple(grid.shape)}: 4 images above, the same after v2.Compose below")
    if args.save_grid:
        try:
            save_image(grid, args.save_grid)  # the format follows the name: .png, .jpg, ...
        except (OSError, ValueError) as e:  # no such folder, a full disk, no known suffix
            parser.error(f"--save-grid {args.save_grid}: {e}")
        except KeyError as e:  # a format PIL reads but cannot write, such as .psd
            parser.error(f"--save-grid {args.save_grid}: no writer for {e.args[0]} files")
        print(f"wrote {args.save_grid}")

# %% [markdown]
# ## Why a class, when a closure is shorter?
# Workers started (by default) with spawn (macOS, Windows) or forkserver (Linux, Python 3.14+) get
# the Dataset and its transform through multiprocessing's pickler: tensors by shared memory,
# functions and classes as `pickle.dumps` does, by importable name, which a closure or lambda lacks.
# So chain with `v2.Compose`, not `compose()`; from a notebook, import classes from a .py module
# whose name is an identifier (`import 03_transforms` is a SyntaxError). With fork the Dataset is
# inherited, not pickled: a closure works there.

# %%
def pickles(transform) -> str:
    try:
        pickle.loads(pickle.dumps(transform))  # necessary, not sufficient: a worker must import it
    except (AttributeError, TypeError, pickle.PicklingError) as e:  # TypeError: a lock, a file
        # a lambda: PicklingError; a closure: AttributeError (PicklingError from Python 3.14)
        return f"fails: {type(e).__name__}"
    return "pickles"


if __name__ == "__main__":
    print("a pickle round trip, as spawn and forkserver workers need:")
    for name, transform in [*ways.items(), ("v2.Compose", pipeline), ("compose()", compose(*steps)),
                            ("lambda", lambda sample: shift_scale(sample, 0.5, 0.25))]:
        print(f"  {name:10} {pickles(transform)}")
