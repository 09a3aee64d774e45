"""A model is an nn.Module: layers made in __init__, the computation in forward.
Autograd gives the gradients, an optimizer uses them, and a state_dict saves the weights.

Run:  python 01_model.py --device auto --seed 0
"""
# %%
import argparse
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# %% [markdown]
# ## The model
# `nn.Module` finds its parameters through the attributes you assign in `__init__`:
# an `nn.Linear` stored as `self.fc1` is registered, so `parameters()`, `.to(device)` and
# `state_dict()` all see it. `forward` says what happens to a batch; call the model as
# `model(x)`, not `model.forward(x)`, so that PyTorch's hooks run too.

# %%
class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: int, out_features: int, dropout: float = 0.2):
        super().__init__()  # first: it creates the registries the attributes below go into
        self.fc1 = nn.Linear(in_features, hidden)
        self.dropout = nn.Dropout(dropout)  # behaves differently in train() and eval()
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, in_features)
        h = F.relu(self.fc1(x))  # (B, hidden)
        return self.fc2(self.dropout(h))  # (B, out_features)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# %% [markdown]
# Pitfall: layers kept in a plain Python list are invisible to the module, so the optimizer
# never updates them and `.to(device)` never moves them. `nn.ModuleList` registers them.

# %%
class ListOfLayers(nn.Module):
    def __init__(self, sizes: list[int], registered: bool):
        super().__init__()
        layers = [nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])]
        self.layers = nn.ModuleList(layers) if registered else layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


# %% [markdown]
# ## Autograd
# Backpropagation comes free: `loss.backward()` fills `.grad` for every parameter.
# For one linear layer `y = x @ W.T + b` and the mean squared error
# `L = mean((y - t)**2)` over all N*O outputs, the chain rule by hand gives
# `dL/dy = 2 (y - t) / (N*O)`, `dL/dW = (dL/dy).T @ x` and `dL/db = (dL/dy).sum(0)`.

# %%
def hand_gradients(x, t, weight, bias):
    """Gradients of mean((x @ W.T + b - t)**2) with respect to W and b, by the chain rule."""
    y = x @ weight.T + bias  # (N, O)
    dy = 2 * (y - t) / y.numel()  # (N, O)
    return dy.T @ x, dy.sum(0)  # (O, I), (O,)


def autograd_gradients(layer: nn.Linear, x, t):
    """The same gradients, from loss.backward()."""
    layer.zero_grad()
    loss = F.mse_loss(layer(x), t)
    loss.backward()
    return layer.weight.grad, layer.bias.grad


# %% [markdown]
# ## One training step
# The order matters: clear the old gradients (they accumulate otherwise), compute the loss,
# backpropagate, then let the optimizer move the parameters.

# %%
def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x, target) -> float:
    model.train()  # dropout on
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), target)  # takes logits; it applies log_softmax itself
    loss.backward()
    optimizer.step()
    return loss.item()


@torch.inference_mode()  # no graph is recorded: faster, less memory, for evaluation only
def evaluate(model: nn.Module, x, target) -> float:
    model.eval()  # dropout off, so the result is repeatable
    return F.cross_entropy(model(x), target).item()


# %% [markdown]
# ## Saving and loading
# Save the `state_dict` (a dict of tensors), not the model object. Loading it back needs the
# class, which you have in your code; `weights_only=True` (the default since torch 2.6) only
# unpickles tensors and plain containers, so a downloaded file cannot run code.
# `map_location` puts the tensors on the device you are on, whatever device saved them.

# %%
def save_and_load(model: nn.Module, make_model, folder: Path) -> nn.Module:
    path = folder / "model.pt"
    torch.save(model.state_dict(), path)
    device = next(model.parameters()).device
    clone = make_model().to(device)
    clone.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    return clone


def load_whole_model_error(model: nn.Module, folder: Path) -> str:
    """Pitfall: torch.save(model) pickles the object; a safe load refuses it. Returns the error."""
    path = folder / "whole_model.pt"
    torch.save(model, path)
    try:
        torch.load(path, weights_only=True)
    except Exception as e:  # pickle.UnpicklingError, then a long explanation
        return f"{type(e).__name__}: {str(e).split('.')[0]}"
    return "no error"


# %% [markdown]
# ## The demo
# Settings live here and nowhere else. The device is passed to what needs it, never read
# from a global, so every function above still works when pasted into another file.

# %%
def pick_device(name: str) -> torch.device:
    """'auto' is the available accelerator (CUDA, MPS, ...), else the CPU."""
    if name == "auto":
        # current_accelerator() alone names cuda even where no GPU is usable: ask first
        if torch.accelerator.is_available():
            return torch.accelerator.current_accelerator()
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is available on this machine")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps: MPS (Apple GPU) is not available on this machine")
    return torch.device(name)


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


class Parser(argparse.ArgumentParser):
    def error(self, message):  # bad input: one line naming it, exit 2, no usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv=None):
    parser = Parser(description=__doc__.split("\n\n")[0],
                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="where the model runs; auto: the available accelerator, else cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and data")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="rows in the demo batch")
    parser.add_argument("--hidden", type=positive_int, default=16, help="hidden layer width")
    if argv is None and "ipykernel" in sys.modules:  # a Jupyter kernel's argv is its own
        argv = []
    args = parser.parse_args(argv)
    try:
        device = pick_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    print(f"device: {device}")
    torch.manual_seed(args.seed)

    # Model: 4 input features, 3 classes.
    def make_model():
        return MLP(4, args.hidden, 3)

    model = make_model().to(device)
    print(model)
    print(f"parameters: {count_parameters(model)}")
    # Drawn on the CPU and then moved: the same numbers on any device.
    x = torch.randn(args.batch_size, 4).to(device)  # (B, 4)
    target = torch.randint(0, 3, (args.batch_size,)).to(device)  # (B,)
    print(f"input  x [B, in]:  {tuple(x.shape)}")
    print(f"output   [B, out]: {tuple(model(x).shape)}")

    plain = ListOfLayers([4, 8, 3], registered=False)
    listed = ListOfLayers([4, 8, 3], registered=True)
    print(f"layers in a list: {count_parameters(plain)} parameters; "
          f"in nn.ModuleList: {count_parameters(listed)}")

    # Autograd against the chain rule, on the scalar case you can do in your head:
    # x=2, w=3, b=1, t=4 -> y=7, L=(7-4)^2=9, dL/dw=2*3*2=12, dL/db=2*3=6.
    layer = nn.Linear(1, 1).to(device)
    with torch.no_grad():
        layer.weight.fill_(3.0)
        layer.bias.fill_(1.0)
    x1, t1 = torch.tensor([[2.0]], device=device), torch.tensor([[4.0]], device=device)
    dw, db = autograd_gradients(layer, x1, t1)
    print(f"autograd: dL/dw={dw.item():g} dL/db={db.item():g} (by hand: 12 and 6)")
    F.mse_loss(layer(x1), t1).backward()  # again, without zero_grad(): .grad adds up
    print(f"backward() again without zero_grad(): dL/dw={layer.weight.grad.item():g} (12 + 12)")
    layer = nn.Linear(4, 3).to(device)
    t = torch.randn(args.batch_size, 3).to(device)
    auto = autograd_gradients(layer, x, t)
    hand = hand_gradients(x, t, layer.weight.detach(), layer.bias.detach())
    same = all(torch.allclose(a, h, atol=1e-6) for a, h in zip(auto, hand))
    print(f"autograd matches the chain rule on a (B, 4) -> (B, 3) layer: {same}")

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = evaluate(model, x, target)
    step_loss = train_step(model, optimizer, x, target)
    after = evaluate(model, x, target)
    print(f"one SGD step | loss {before:.4f} -> {after:.4f} (train-mode loss {step_loss:.4f})")

    model.train()
    differ = not torch.equal(model(x), model(x))
    model.eval()
    with torch.inference_mode():
        repeat = torch.equal(model(x), model(x))
        out = model(x)
    print(f"train(): two passes differ (dropout): {differ} | "
          f"eval(): two passes equal: {repeat} | inference_mode {out.requires_grad=}")

    with tempfile.TemporaryDirectory() as folder:  # removed on exit: the script leaves nothing
        clone = save_and_load(model, make_model, Path(folder))
        with torch.inference_mode():
            identical = torch.equal(model(x), clone.eval()(x))
        print(f"state_dict saved and loaded: outputs identical: {identical}")
        print(f"whole-model torch.load refused: {load_whole_model_error(model, Path(folder))}")


if __name__ == "__main__":
    main()
