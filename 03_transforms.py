# %% [markdown]
# # 03 - Transforms: a function from a sample to a sample
# A transform takes a sample and returns a new one. Give it parameters with a class, a closure or
# `functools.partial`, chain transforms with `v2.Compose`, and see which kinds can be pickled.
# Run: `python 03_transforms.py` (try `--save-grid grid.png`, `--seed 1`; `--help` lists all)

# %%
import argparse
import functools
import pickle
import re
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2
from torchvision.utils import make_grid, save_image


def int_in(lo: int, hi: int):
    """An argparse type: an integer from lo to hi."""
    def integer(text: str) -> int:
        value = int(text)  # not a number: argparse says "invalid integer value"
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in {lo}..{hi}, got {value}")
        return value
    return integer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Transforms: from a sample to a sample.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--seed", type=int_in(0, 2**32 - 1), default=0, help="0..2**32-1")
    parser.add_argument("--image-size", type=int_in(8, 512), default=64, help="8..512")
    parser.add_argument("--save-grid", type=Path, metavar="PATH",
                        help="write the images before and after the transforms as one PNG")
    args = parser.parse_args(argv)
    path = args.save_grid
    if path and path.suffix.lower() != ".png":
        parser.error(f"--save-grid {path}: the file name must end in .png")
    if path and not path.parent.is_dir():
        parser.error(f"--save-grid {path}: no folder {path.parent}")
    if path and path.is_dir():
        parser.error(f"--save-grid {path}: is a folder")
    return args


if __name__ == "__main__":  # demo code runs only when this file is run, never on import
    # Flags come from `python 03_transforms.py --x` or `%run 03_transforms.py --x`; in a notebook,
    # the kernel's argv is not ours, so the defaults apply.
    ours = Path(sys.argv[0]).name == Path(globals().get("__file__", "")).name
    args = parse_args(None if ours else [])
    sys.excepthook = lambda kind, *info: (  # Ctrl-C: one line, not a traceback
        print("interrupted", file=sys.stderr) if issubclass(kind, KeyboardInterrupt)
        else sys.__excepthook__(kind, *info))
    torch.manual_seed(args.seed)

# %% [markdown]
# ## A sample, and one transform
# A sample is a dict: `{"image": (C, H, W) tensor, "label": int}`. A transform returns a new
# dict and leaves its input alone: the Dataset may hand out the same tensor again. A Dataset
# takes `transform=` and applies it in `__getitem__` (torchvision's datasets pass their
# `transform=` the image alone; ours gets the whole sample).

# %%
class Shapes(Dataset):
    """n uint8 images (3, size, size), as torchvision.io.decode_image gives: a square (label 0)
    or a disc (label 1) top left, on a gradient brightening to the right: crops and flips show."""

    def __init__(self, n: int, size: int, transform=None):
        y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")  # (H, W)
        c, r = size // 3, max(size // 5, 1)  # centre and half-width of the shape
        masks = [((y - c).abs() <= r) & ((x - c).abs() <= r), (y - c) ** 2 + (x - c) ** 2 < r * r]
        colours = torch.tensor([[250, 60, 60], [60, 160, 250], [250, 210, 40], [70, 220, 110]],
                               dtype=torch.uint8)
        self.images = (40 + x * 120 // size).to(torch.uint8).repeat(n, 3, 1, 1)  # (n, 3, H, W)
        for i in range(n):
            self.images[i][:, masks[i % 2]] = colours[i % 4, :, None]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        sample = {"image": self.images[i], "label": i % 2}
        return self.transform(sample) if self.transform is not None else sample


def to_float(sample: dict) -> dict:
    return {**sample, "image": sample["image"].float() / 255}  # uint8 0..255 -> float32 0..1


if __name__ == "__main__":
    sample = Shapes(4, args.image_size)[1]
    original = sample["image"].clone()
    image = to_float(sample)["image"]
    print(f"sample: image {tuple(sample['image'].shape)} {sample['image'].dtype}, "
          f"label {sample['label']}")
    print(f"to_float(sample): image {image.dtype} in {image.min():.2f}..{image.max():.2f}; "
          f"the sample is unchanged: {torch.equal(sample['image'], original)}")
    dataset = Shapes(4, args.image_size, transform=to_float)
    print(f"Shapes(4, {args.image_size}, transform=to_float)[1]['image'] == that image: "
          f"{torch.equal(dataset[1]['image'], image)}")

# %% [markdown]
# ## Parameters: a class, a closure or `functools.partial`
# A Dataset calls `transform(sample)` with one argument; `shift_scale` needs two more. A class
# stores them in `__init__`, a closure captures them, a partial fills them in. `shift_scale`
# uses one mean and one std for every pixel; `v2.Normalize(mean, std)` takes one per channel.

# %%
def shift_scale(sample: dict, mean: float, std: float) -> dict:
    return {**sample, "image": (sample["image"] - mean) / std}


class ShiftScale:
    def __init__(self, mean: float, std: float):
        self.mean, self.std = mean, std

    def __call__(self, sample: dict) -> dict:
        return shift_scale(sample, self.mean, self.std)

    def __repr__(self) -> str:  # what print() and v2.Compose's repr show
        return f"ShiftScale(mean={self.mean}, std={self.std})"


def make_shift_scale(mean: float, std: float):
    def shift_scale_sample(sample: dict) -> dict:  # remembers mean and std: a closure
        return shift_scale(sample, mean, std)
    return shift_scale_sample


if __name__ == "__main__":
    ways = {"class": ShiftScale(0.5, 0.25), "closure": make_shift_scale(0.5, 0.25),
            "partial": functools.partial(shift_scale, mean=0.5, std=0.25)}
    float_sample = to_float(sample)
    outputs = [transform(float_sample)["image"] for transform in ways.values()]
    print(f"{ways['class']}, a closure and a partial: identical output: "
          f"{all(torch.equal(outputs[0], out) for out in outputs)}, "
          f"in {outputs[0].min():.2f}..{outputs[0].max():.2f}")

# %% [markdown]
# ## A random transform
# Draw with `torch.randn_like(image)` (a float image: it refuses uint8): the noise follows the
# image's device and dtype, and comes from torch's generator, which `torch.manual_seed` sets and
# DataLoader seeds differently in each worker. A transform that keeps its own `random.Random(...)`
# or `np.random.default_rng(...)` object gets neither (see 04).

# %%
class AddNoise:
    def __init__(self, std: float):
        self.std = std

    def __call__(self, sample: dict) -> dict:
        image = sample["image"]
        return {**sample, "image": image + self.std * torch.randn_like(image)}


if __name__ == "__main__":
    noise = AddNoise(0.1)
    torch.manual_seed(args.seed)
    first = noise(float_sample)["image"]
    torch.manual_seed(args.seed)
    again = noise(float_sample)["image"]
    print(f"AddNoise(0.1): same seed, same noise: {torch.equal(first, again)}; "
          f"the next draw differs: {not torch.equal(again, noise(float_sample)['image'])}")

# %% [markdown]
# ## Composing: `v2.Compose`, or three lines of Python
# `v2.Compose` calls each transform in turn, torchvision's and ours alike. v2 transforms take a
# dict: they change the image in it and pass the label through. `ToImage` marks the tensor as the
# image (a `tv_tensors.Image`, no copy), so v2 need not guess; `ToDtype(float32, scale=True)`
# then does what `to_float` does (up to float rounding). The two replace `ToTensor`, deprecated
# in v2. Crop, resize and flip come before `ToDtype`: uint8 has fast paths and is 4x smaller.

# %%
def compose(*transforms):
    def composed(sample: dict) -> dict:
        for transform in transforms:
            sample = transform(sample)
        return sample
    return composed


def augment(size: int) -> list:
    return [v2.ToImage(), v2.RandomResizedCrop(size, scale=(0.25, 1.0)), v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True), ShiftScale(0.5, 0.25), AddNoise(0.05)]


if __name__ == "__main__":
    steps = augment(args.image_size)
    pipeline = v2.Compose(steps)
    torch.manual_seed(args.seed)
    composed = pipeline(sample)
    torch.manual_seed(args.seed)
    plain = compose(*steps)(sample)
    print(f"v2.Compose: image {tuple(composed['image'].shape)} {composed['image'].dtype}, "
          f"label {composed['label']}")
    print(f"compose(): identical to v2.Compose: {torch.equal(composed['image'], plain['image'])}")

# %% [markdown]
# ## Look at them
# `make_grid` lays images out in rows; `normalize=True, scale_each=True` stretches each one to
# 0..1, so that the shifted and scaled images can be seen. `--save-grid grid.png` writes the
# picture; in a notebook it appears under this cell.

# %%
def before_after(dataset: Dataset, transform, n: int) -> torch.Tensor:
    """n images above, the same n after `transform` below: one (3, H, W) picture."""
    before = [to_float(dataset[i])["image"] for i in range(n)]
    after = [transform(dataset[i])["image"] for i in range(n)]
    return make_grid(torch.stack(before + after), nrow=n, normalize=True, scale_each=True)


if __name__ == "__main__":
    torch.manual_seed(args.seed)
    grid = before_after(Shapes(4, args.image_size), pipeline, n=4)
    print(f"grid {tuple(grid.shape)}: 4 images above, the same after v2.Compose below")
    if args.save_grid:
        save_image(grid, args.save_grid)
        print(f"wrote {args.save_grid}")
    elif not ours:  # a notebook: show the picture under this cell
        try:
            from IPython.display import display
            display(v2.functional.to_pil_image(grid))
        except ImportError:
            pass

# %% [markdown]
# ## Why a class, when a closure is shorter?
# DataLoader workers started with spawn or forkserver (macOS, Windows, and Linux from Python
# 3.14) receive the Dataset, its transform included, pickled. pickle stores a function by its
# importable name: a closure (`make_shift_scale.<locals>...`) or a lambda has none. A class
# instance pickles as its class name and attributes, a partial as the function's name and its
# arguments. The three-line `compose()` above returns a closure too: for such workers, chain with
# `v2.Compose`, a class. A worker finds a class by its module and name, so the class must live
# in a .py file (this one, or one a notebook imports), not in a notebook cell. Where nothing is
# pickled (`num_workers=0`, or fork, which copies the memory), a closure is fine.

# %%
def pickled_copy(transform, sample: dict) -> str:
    """pickle.dumps, as DataLoader does for a spawn or forkserver worker, then pickle.loads (here,
    where every name of this file is at hand)."""
    try:
        copy = pickle.loads(pickle.dumps(transform))
    except (AttributeError, pickle.PicklingError) as e:  # a closure: PicklingError from 3.14
        return re.sub(r" at 0x\w+", "", f"fails: {type(e).__name__}: {e}")  # address varies
    same = torch.equal(copy(sample)["image"], transform(sample)["image"])
    return f"pickles, and the copy gives the same output: {same}"


if __name__ == "__main__":
    print("pickled, as a DataLoader worker started with spawn or forkserver would receive it:")
    for name, transform in [("class instance", ways["class"]), ("partial", ways["partial"]),
                            ("v2.Compose", v2.Compose([ways["class"], ways["partial"]])),
                            ("closure", ways["closure"]),
                            ("lambda", lambda sample: shift_scale(sample, 0.5, 0.25)),
                            ("compose()", compose(ways["class"], ways["partial"]))]:
        print(f"  {name:15} {pickled_copy(transform, float_sample)}")
    closures = Shapes(4, args.image_size, transform=compose(to_float, ways["closure"]))
    batch = next(iter(DataLoader(closures, batch_size=4)))  # num_workers=0: nothing pickled
    print(f"closures in DataLoader(num_workers=0): work, batch image {tuple(batch['image'].shape)}")
