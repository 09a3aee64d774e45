# %% [markdown]
# # 01 - A model: `nn.Module`, autograd and one training step
# A model is a class: `__init__` makes the layers, `forward` uses them. Autograd computes the
# gradients, an optimizer applies them; `state_dict()` holds weights and persistent buffers by name.
# Run: `python 01_model.py` (try `--seed 1`, `--device cpu`; `--help` lists the flags)

# %%
import argparse
import pickle
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

if __name__ == "__main__":  # the demos run when this file is the program, never on import
    found = torch.accelerator.current_accelerator(check_available=True)  # None: no accelerator
    devices = ["cpu", found.type] if found else ["cpu"]
    parser = argparse.ArgumentParser(description="A model, autograd and one training step.")
    parser.add_argument("--device", choices=devices, default=devices[-1])
    parser.add_argument("--seed", type=int, default=0)
    # flags from `python` or `%run 01_model.py --seed 1`; a notebook kernel's argv is not ours
    args = parser.parse_args([] if sys.argv[0].endswith("kernel_launcher.py") else None)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    print(f"device: {device}")

# %% [markdown]
# ## A model is a class: layers in `__init__`, the computation in `forward`
# A layer assigned to `self` is registered: `parameters()`, `.to(device)` and `state_dict()` find
# it. Call `model(x)`, not `model.forward(x)`: the call also runs hooks. Pitfall: layers in a plain
# Python list are not registered, so `parameters()` and the optimizer miss them: `nn.ModuleList`.

# %%
class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: int, out_features: int, dropout: float = 0.2):
        super().__init__()  # first: it sets up the registry the layers below go into
        self.fc1 = nn.Linear(in_features, hidden)
        self.dropout = nn.Dropout(dropout)  # active in train() mode only
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, in_features)
        h = F.relu(self.fc1(x))  # (B, hidden)
        return self.fc2(self.dropout(h))  # (B, out_features): logits, one score per class


if __name__ == "__main__":
    model = MLP(4, 16, 3).to(device)  # in place for a module; a tensor's .to() returns the result
    x = torch.randn(8, 4).to(device)  # drawn on the CPU (not a GPU's generator): any device, same x
    print(f"x {tuple(x.shape)} -> model(x) {tuple(model(x).shape)}")
    for name, p in model.named_parameters():
        print(f"  {name:10} {tuple(p.shape)}")
    print(f"parameters: {sum(p.numel() for p in model.parameters())}")

# %%
if __name__ == "__main__":  # the pitfall, happening
    plain, registered = nn.Module(), nn.Module()
    plain.layers = [nn.Linear(4, 8), nn.Linear(8, 3)]  # as `self.layers = [...]` in __init__
    registered.layers = nn.ModuleList([nn.Linear(4, 8), nn.Linear(8, 3)])
    for name, module in [("a plain list", plain), ("nn.ModuleList", registered)]:
        print(f"layers in {name}: {sum(p.numel() for p in module.parameters())} parameters")
    try:
        torch.optim.SGD(plain.parameters(), lr=0.1)
    except ValueError as e:
        print(f"  an optimizer for the plain list: ValueError: {e}")

# %% [markdown]
# ## Initial weights: `nn.init` and `model.apply`
# `nn.Linear` starts uniform in +-1/sqrt(fan_in), fan_in its inputs. `model.apply(fn)` calls fn on
# every submodule, then on the model itself. Kaiming's normal init (std sqrt(2 / fan_in)) keeps the
# variance of each layer's outputs before the ReLU about the same from layer to layer.

# %%
def init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        if module.bias is not None:  # nn.Linear(..., bias=False) has none
            nn.init.zeros_(module.bias)


if __name__ == "__main__":
    model.apply(init_weights)  # in place, on whatever device the model is
    print(f"fc1.weight: std {model.fc1.weight.std():.3f} of 64 values, sqrt(2/4) = {0.5**0.5:.3f}; "
          f"biases zero: {not model.fc1.bias.any() and not model.fc2.bias.any()}")

# %% [markdown]
# ## Autograd, checked by hand
# `loss.backward()` fills `.grad` of each tensor made with `requires_grad=True` (a leaf, as a
# parameter is) that the loss depends on. For L = (w*x + b - t)^2 with x=2, w=3, b=1, t=4:
# dL/dw = 2(wx + b - t)x = 12, dL/db = 2(wx + b - t) = 6. A second `backward()` (of a new forward)
# adds to `.grad`: hence `optimizer.zero_grad()`.

# %%
if __name__ == "__main__":
    w, b = torch.tensor(3.0, requires_grad=True), torch.tensor(1.0, requires_grad=True)
    loss = (w * 2.0 + b - 4.0) ** 2  # x = 2, t = 4
    loss.backward()
    print(f"L={loss.item():g}: dL/dw={w.grad.item():g}, dL/db={b.grad.item():g} (by hand: 12, 6)")
    ((w * 2.0 + b - 4.0) ** 2).backward()  # a new graph (backward() freed the first), 12 again
    print(f"backward() again: dL/dw={w.grad.item():g} (12 + 12: gradients add up)")

# %% [markdown]
# ## One training step, and evaluation
# Clear the old gradients, compute the loss, backpropagate, step. `train()` turns dropout (and
# batch norm's batch statistics) on, `eval()` off. `eval()` does not turn autograd off;
# `torch.inference_mode()` does (no graph is recorded: less memory, less time).

# %%
def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               target: torch.Tensor) -> float:
    """One step on a batch x (B, in_features) with target classes (B,); returns the loss."""
    model.train()
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), target)  # takes logits: it applies log_softmax itself
    loss.backward()
    optimizer.step()
    return loss.item()


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> float:
    model.eval()
    return F.cross_entropy(model(x), target).item()


if __name__ == "__main__":
    target = torch.randint(0, 3, (8,)).to(device)  # (B,): one class per row
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    before = evaluate(model, x, target)
    train_step(model, optimizer, x, target)
    print(f"one SGD step | loss {before:.4f} -> {evaluate(model, x, target):.4f}")
    model.train()
    print(f"train(): two passes differ (dropout): {not torch.equal(model(x), model(x))}")
    model.eval()
    print(f"eval():  two passes equal: {torch.equal(model(x), model(x))}")

# %% [markdown]
# ## Saving and loading the weights
# Save the `state_dict`, a dict of tensors, and load it into a model built from your class.
# `weights_only=True` (the default since torch 2.6) unpickles only tensors, plain Python values, a
# few safe types (`OrderedDict`, `torch.Size`, dtypes, ...) and what `add_safe_globals` allows, so
# that no arbitrary code runs (2.10 fixed a hole: CVE-2026-24747). Pitfall: `torch.save(model)`
# pickles the object, naming its class by import path (`__main__.MLP`): a safe load refuses it.

# %%
if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:  # removed afterwards, also after a Ctrl-C
        path, whole = Path(folder) / "mlp.pt", Path(folder) / "whole.pt"
        torch.save(model.state_dict(), path)
        clone = MLP(4, 16, 3).to(device).eval()  # eval(): no dropout, as model
        clone.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        print(f"state_dict saved and loaded: same outputs: {torch.equal(clone(x), model(x))}")
        torch.save(model, whole)  # the pitfall
        try:
            torch.load(whole, weights_only=True)
        except pickle.UnpicklingError:
            needs = torch.serialization.get_unsafe_globals_in_checkpoint(whole)
            print(f"torch.load of a whole model: UnpicklingError, it needs {sorted(needs)}")
