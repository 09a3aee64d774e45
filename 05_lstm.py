# %% [markdown]
# # 05 - An LSTM that predicts the next character
# `nn.LSTM` reads one-hot characters and learns which comes next: first three tokens, then a text
# with its tail held out (did it learn, or memorise?), then it writes from a prompt.
# Run: `python 05_lstm.py` (try `--text-file my.txt --steps 2000`, `--temperature 0.8`; `--help`)

# %%
import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

TEXT = """Twinkle, twinkle, little star,
how I wonder what you are!
Up above the world so high,
like a diamond in the sky.
"""


def number_in(kind: type, lo, hi):
    """An argparse type: an int or float from lo to hi (nan and inf are outside)."""
    def number(text: str):
        value = kind(text)  # not a number: argparse says "invalid integer/number value"
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in {lo}..{hi}, got {text}")
        return value
    number.__name__ = "integer" if kind is int else "number"
    return number


def read_text(path: Path, max_bytes: int = 10_000_000) -> str:
    if not path.is_file():  # checked before opening: opening a FIFO would wait forever
        raise ValueError("not a regular file" if path.exists() else "no such file")
    with path.open("rb") as f:
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ValueError(f"larger than {max_bytes:,} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 (byte {raw[e.start]:#04x} at offset {e.start})") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="An LSTM that predicts the next character.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="auto: the available accelerator, else the CPU")
    parser.add_argument("--text-file", type=Path, help="UTF-8, up to 10 MB; default: a rhyme")
    parser.add_argument("--steps", type=number_in(int, 1, 20_000), default=120,
                        help="training steps, 1..20000")
    parser.add_argument("--hidden-size", type=number_in(int, 1, 512), default=64,
                        help="LSTM state size, 1..512")
    parser.add_argument("--batch-size", type=number_in(int, 1, 256), default=32,
                        help="windows per step, 1..256")
    parser.add_argument("--seq-len", type=number_in(int, 1, 256), default=64,
                        help="characters per window, 1..256")
    parser.add_argument("--lr", type=number_in(float, 1e-5, 1), default=0.02,
                        help="Adam's learning rate, 1e-05..1")
    parser.add_argument("--seed", type=number_in(int, 0, 2**32 - 1), default=0, help="0..2**32-1")
    parser.add_argument("--prompt", help="1..1000 characters of the text; default: its first")
    parser.add_argument("--sample-len", type=number_in(int, 1, 10_000), default=120,
                        help="characters to generate, 1..10000")
    parser.add_argument("--temperature", type=number_in(float, 0.01, 10),
                        help="sample at 0.01..10; default: greedy, the likeliest character")
    args = parser.parse_args(argv)
    # None where no accelerator is usable (without the check it can name cuda on a CPU machine)
    found = torch.accelerator.current_accelerator(check_available=True)
    if args.device == "auto":
        args.device = found or torch.device("cpu")
    elif args.device != "cpu" and (found is None or found.type != args.device):
        parser.error(f"--device {args.device}: not available on this machine")
    args.device = torch.device(args.device)
    args.text, name = TEXT, f"--text-file {args.text_file}"
    if args.text_file is not None:
        try:
            args.text = read_text(args.text_file)
        except (OSError, ValueError) as e:
            parser.error(f"{name}: {e.strerror if isinstance(e, OSError) else e}")
        if len(args.text) < 64:
            parser.error(f"{name}: {len(args.text)} characters, fewer than 64")
        if len(set(args.text)) > 1000:  # one-hot rows of 1,000 floats are already wasteful
            parser.error(f"{name}: {len(set(args.text)):,} distinct characters, more than "
                         "one-hot input serves (1,000): use nn.Embedding for more")
    if len(args.text) <= args.seq_len:
        parser.error(f"the text has {len(args.text)} characters; --seq-len {args.seq_len} "
                     f"needs at least {args.seq_len + 1}")
    args.prompt = args.text[0] if args.prompt is None else args.prompt
    if not 1 <= len(args.prompt) <= 1000:
        parser.error(f"--prompt: 1..1000 characters, got {len(args.prompt)}")
    if unknown := "".join(sorted(set(args.prompt) - set(args.text))):
        parser.error(f"--prompt: characters not in the text: {unknown!r}")
    return args


if __name__ == "__main__":  # demo code runs only when this file is run, never on import
    # Flags come from `python 05_lstm.py --x` or `%run 05_lstm.py --x`; in a notebook, the
    # kernel's argv is not ours, so the defaults apply.
    ours = Path(sys.argv[0]).name == Path(globals().get("__file__", "")).name
    args = parse_args(None if ours else [])
    sys.excepthook = lambda kind, *info: (  # Ctrl-C: one line, not a traceback
        print("interrupted", file=sys.stderr) if issubclass(kind, KeyboardInterrupt)
        else sys.__excepthook__(kind, *info))
    device = args.device
    torch.manual_seed(args.seed)
    print(f"device: {device}")

# %% [markdown]
# ## The smallest case: three tokens
# The sequence [3, 1, 2] over a vocabulary of 4 tokens, one-hot, shaped (T, B, V) = (3, 1, 4):
# `nn.LSTM` takes time first unless built with `batch_first=True`. The target is the next token
# at each step, [1, 2, 3]: one class index per step, shape (3,). One-hot times the input weights
# picks one column of them, a table lookup: `nn.Embedding` does that without the one-hot, which
# is why real models use it.

# %%
def tiny_logits(lstm: nn.LSTM, linear: nn.Linear, tokens: torch.Tensor) -> torch.Tensor:
    x = F.one_hot(tokens, linear.out_features).float().unsqueeze(1)  # (T, B=1, V)
    out, (h_n, c_n) = lstm(x)  # out (T, 1, H): the hidden state after each step; no state: zeros
    return linear(out.squeeze(1))  # (T, V): logits


def train_tiny(seed: int, max_steps: int = 500, lr: float = 0.1):
    """Train nn.LSTM(4, 2) + nn.Linear(2, 4) until it maps [3, 1, 2] to [1, 2, 3]."""
    torch.manual_seed(seed)
    lstm, linear = nn.LSTM(4, 2), nn.Linear(2, 4)
    tokens, target = torch.tensor([3, 1, 2]), torch.tensor([1, 2, 3])
    optimizer = torch.optim.Adam([*lstm.parameters(), *linear.parameters()], lr=lr)
    for step in range(1, max_steps + 1):
        loss = F.nll_loss(F.log_softmax(tiny_logits(lstm, linear, tokens), dim=-1), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            if torch.equal(tiny_logits(lstm, linear, tokens).argmax(-1), target):
                return lstm, linear, step
    return lstm, linear, max_steps


if __name__ == "__main__":  # on the CPU: a GPU only slows a model this small
    lstm, linear, steps = train_tiny(args.seed)
    tokens, target = torch.tensor([3, 1, 2]), torch.tensor([1, 2, 3])
    with torch.no_grad():
        logits = tiny_logits(lstm, linear, tokens)  # (3, 4)
        w_ih = lstm.weight_ih_l0  # (4 gates * H, V)
        lookup = torch.allclose(F.one_hot(tokens, 4).float() @ w_ih.T, w_ih.T[tokens])
    print(f"tiny LSTM: [3, 1, 2] -> {logits.argmax(-1).tolist()} after {steps} Adam steps")
    print(f"nll_loss(log_softmax(logits)) {F.nll_loss(F.log_softmax(logits, -1), target):.4f} "
          f"== cross_entropy(logits) {F.cross_entropy(logits, target):.4f}")
    print(f"one_hot @ W_ih.T == rows of W_ih.T (an embedding lookup): {lookup}")

# %% [markdown]
# Two mistakes, shown happening. A target of shape (3, 1) is refused. And `nll_loss` only picks
# `-input[target]` and averages: fed probabilities (`softmax`, not `log_softmax`) it returns minus
# the mean probability of the targets, a number in [-1, 0], never positive, that looks like a fine
# loss. Worse, its gradient vanishes when the model is confidently wrong, exactly when it should
# be large: `cross_entropy`'s gradient is probabilities minus one-hot, of norm about 1.4 there.

# %%
def input_grad_norm(loss_fn, logits: torch.Tensor, target: torch.Tensor) -> float:
    logits = logits.detach().clone().requires_grad_()
    loss_fn(logits, target).backward()
    return logits.grad.norm().item()


def nll_of_softmax(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.nll_loss(F.softmax(logits, dim=-1), target)  # the mistake


if __name__ == "__main__":
    try:
        F.nll_loss(F.log_softmax(logits, dim=-1), target.view(3, 1))
    except RuntimeError as e:
        print(f"target of shape (3, 1): RuntimeError: {str(e).splitlines()[0]}")
    p_target = F.softmax(logits, dim=-1)[torch.arange(3), target]  # (3,)
    print(f"nll_loss(softmax(logits)) {nll_of_softmax(logits, target):.4f} "
          f"== minus the mean target probability {-p_target.mean():.4f}")
    wrong, two = torch.tensor([[10.0, 0.0, 0.0]]), torch.tensor([2])  # sure of 0, target 2
    print(f"logits [10, 0, 0], target 2: gradient norm "
          f"{input_grad_norm(nll_of_softmax, wrong, two):.1e} by nll_loss(softmax), "
          f"{input_grad_norm(F.cross_entropy, wrong, two):.2f} by cross_entropy")

# %% [markdown]
# ## The character model
# Characters become indices, indices one-hot vectors (T, B, V); the LSTM reads them, a linear
# layer scores every character, `log_softmax` makes the scores log-probabilities for `nll_loss`.
# Given no state, `nn.LSTM` starts from zeros on the input's device and dtype: nothing to set up.
# It returns `out`, the last layer's hidden state at every step, and `(h_n, c_n)`, every layer's
# state after the last step: `out[-1]` is `h_n[-1]`, the state that the next step starts from.
# Feeding that state back in, a text read one character at a time gives what reading it whole
# gives: each step depends only on the input and the state before it. Generation works so.

# %%
class CharLSTM(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int = 1):
        super().__init__()
        self.lstm = nn.LSTM(vocab_size, hidden_size, num_layers)  # input (T, B, V): time first
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens: torch.Tensor, state=None):  # tokens (T, B) int64; state (h, c)
        x = F.one_hot(tokens, self.head.out_features).float()  # (T, B, V)
        out, state = self.lstm(x, state)  # out (T, B, H); h and c (num_layers, B, H)
        return F.log_softmax(self.head(out), dim=-1), state  # (T, B, V) log-probabilities


def encode(text: str, vocab: list[str]) -> torch.Tensor:
    index = {ch: i for i, ch in enumerate(vocab)}
    return torch.tensor([index[ch] for ch in text])  # (N,) int64


def decode(ids, vocab: list[str]) -> str:
    return "".join(vocab[i] for i in ids)


if __name__ == "__main__":
    vocab = sorted(set(args.text))
    data = encode(args.text, vocab)  # (N,)
    model = CharLSTM(len(vocab), args.hidden_size).to(device)  # initial weights from the CPU
    print(f"text: {len(data):,} characters, vocabulary {len(vocab)}")
    x = data[:8].unsqueeze(1).to(device)  # (T=8, B=1)
    with torch.no_grad():  # no graph: like inference_mode, but its tensors can enter autograd
        log_probs, (h_n, c_n) = model(x)
        out, _ = model.lstm(F.one_hot(x, len(vocab)).float())  # forward() returns no `out`
        state = None
        for t in range(len(x)):  # one character at a time, the state carried
            last, state = model(x[t : t + 1], state)
    print(f"tokens {tuple(x.shape)} -> log-probabilities {tuple(log_probs.shape)}, "
          f"h_n and c_n {tuple(h_n.shape)}")
    print(f"out[-1] == h_n[-1]: {torch.equal(out[-1], h_n[-1])} | one at a time == whole: "
          f"{torch.allclose(last[-1], log_probs[-1], atol=1e-5)}")

# %% [markdown]
# ## Holding out the tail
# A score on the text the model trained on shows memorising, not learning. A text of 2,000
# characters or more gives up its last tenth for validation; a shorter one is learned by heart.

# %%
def split_tail(data: torch.Tensor, fraction: float = 0.1, min_len: int = 2000):
    """(training part, held-out tail), or (data, None) for a text too short to spare a tail."""
    if len(data) < min_len:
        return data, None
    cut = len(data) - int(len(data) * fraction)
    return data[:cut], data[cut:]


if __name__ == "__main__":
    train_data, val_data = split_tail(data)
    if val_data is None:
        print(f"nothing held out: {len(data)} characters (< 2,000) are learned by heart, and "
              "scored on themselves")
    else:
        print(f"held out: the last {len(val_data):,} characters; training on the first "
              f"{len(train_data):,}")

# %% [markdown]
# ## Training on random windows, with clipped gradients
# Each step takes `batch_size` windows of `seq_len` characters at random places, each from a zero
# state. This is the script's way by default: the batches are independent samples, and any text
# one window long will do (the next section's way cuts the text into `batch_size` pieces, more
# than the rhyme can give). The price: the model learns no context longer than `seq_len`, while
# evaluation and generation below carry the state much further than that.
#
# Backpropagating through T steps multiplies by the recurrent weights T times, so one batch can
# give a gradient orders of magnitude too large. `clip_grad_norm_` scales the whole gradient down
# to norm 1 when it is longer, keeping its direction: one bad batch cannot throw the weights away.
# Ctrl-C stops the training early; the script goes on with the model as it is.

# %%
def random_windows(data: torch.Tensor, seq_len: int, batch_size: int, generator: torch.Generator):
    starts = torch.randint(0, len(data) - seq_len, (batch_size,), generator=generator)  # (B,)
    idx = starts + torch.arange(seq_len).unsqueeze(1)  # (T, B)
    return data[idx], data[idx + 1]  # the windows and their next characters: (T, B) each


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x, y, state=None,
               max_norm: float = 1.0):
    log_probs, state = model(x, state)  # (T, B, V)
    loss = F.nll_loss(log_probs.flatten(0, 1), y.flatten())  # the mean over T * B predictions
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    return loss.detach(), state


def train(model: nn.Module, data: torch.Tensor, steps: int, batch_size: int, seq_len: int,
          lr: float, generator: torch.Generator, log_every: int) -> int:
    """Adam on random windows; returns the steps done (fewer if Ctrl-C stopped it)."""
    device, done = next(model.parameters()).device, 0
    try:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        while done < steps:
            x, y = random_windows(data, seq_len, batch_size, generator)  # drawn on the CPU:
            loss, _ = train_step(model, optimizer, x.to(device), y.to(device))  # same windows
            done += 1
            if done % log_every == 0 or done == steps:  # .item() waits for the GPU
                print(f"step {done:5d} | loss {loss.item():.4f}", flush=True)
    except KeyboardInterrupt:
        print(f"Ctrl-C: training stopped after {done} steps; going on with the model as it is")
    return done


if __name__ == "__main__":
    generator = torch.Generator().manual_seed(args.seed)  # windows and samples
    print(f"training on random windows: (seq_len, batch) = ({args.seq_len}, {args.batch_size})")
    start = time.perf_counter()
    done = train(model, train_data, args.steps, args.batch_size, args.seq_len, args.lr,
                 generator, log_every=max(1, args.steps // 5))
    seconds = time.perf_counter() - start
    print(f"speed: {done * args.batch_size * args.seq_len / seconds:,.0f} tokens/s "
          f"({seconds:.2f} s on {device})")

# %% [markdown]
# ## Carrying the state from one batch to the next
# Cut the text into `batch_size` pieces side by side and read them `seq_len` characters at a
# time: each window continues the one before, so the state it ended with is the right start for
# the next (truncated backpropagation through time). The model can then use more context than
# one window, at the same cost per step. Pitfall: that state still holds the graph of the batch
# before, whose buffers `backward()` has freed, so the next `backward()` fails. `retain_graph=True`,
# the usual wrong fix, trades that for another error (the optimizer has changed the weights the old
# graph saved) and would backpropagate through every batch so far. `detach()` keeps the values and
# cuts the history. Below, a fresh model each time: 2 pieces, 8 characters at a time.

# %%
def consecutive_windows(data: torch.Tensor, seq_len: int, batch_size: int):
    n = (len(data) - 1) // batch_size  # characters each piece predicts
    x = data[: n * batch_size].view(batch_size, n).T  # (n, B): column b is the b-th piece
    y = data[1 : n * batch_size + 1].view(batch_size, n).T  # the next characters
    for i in range(0, n, seq_len):
        yield x[i : i + seq_len], y[i : i + seq_len]  # (T, B) each; the last may be shorter


def train_carried(model: nn.Module, optimizer: torch.optim.Optimizer, data: torch.Tensor,
                  seq_len: int, batch_size: int, steps: int, detach: bool = True) -> list[float]:
    device = next(model.parameters()).device
    state, losses = None, []
    for _, (x, y) in zip(range(steps), consecutive_windows(data, seq_len, batch_size)):
        if detach and state is not None:
            state = tuple(s.detach() for s in state)  # the same values, without their history
        loss, state = train_step(model, optimizer, x.to(device), y.to(device), state)
        losses.append(loss.item())
    return losses


if __name__ == "__main__":
    for detach in (False, True):
        fresh = CharLSTM(len(vocab), args.hidden_size).to(device)
        optimizer = torch.optim.Adam(fresh.parameters(), lr=args.lr)
        try:
            losses = train_carried(fresh, optimizer, train_data, 8, 2, steps=3, detach=detach)
            print(f"with detach(): {len(losses)} steps run, losses "
                  f"{', '.join(f'{loss:.2f}' for loss in losses)}")
        except RuntimeError as e:
            print(f"state carried without detach(): RuntimeError: {str(e).split(' (')[0]}")

# %% [markdown]
# ## Evaluation, in chunks, against a baseline
# Scoring reads the text as up to 64 pieces side by side (of 1,000 characters or more), each from
# a zero state, 256 characters at a time with the state carried: memory depends on those numbers,
# not on the text's length. The baseline is a model with no context at all: it always predicts
# the training text's character frequencies. A model that learned something beats it on the
# held-out tail.

# %%
@torch.inference_mode()
def evaluate(model: nn.Module, data: torch.Tensor, streams: int = 64, chunk: int = 256):
    """(loss, accuracy) of predicting each character of data from the ones before it."""
    model.eval()
    device = next(model.parameters()).device
    streams = max(1, min(streams, (len(data) - 1) // 1000))  # pieces of 1,000 or more
    total, correct, count, state = 0.0, 0, 0, None
    for x, y in consecutive_windows(data, chunk, streams):
        log_probs, state = model(x.to(device), state)  # (T, B, V)
        y = y.to(device)
        total += F.nll_loss(log_probs.flatten(0, 1), y.flatten(), reduction="sum").item()
        correct += (log_probs.argmax(-1) == y).sum().item()
        count += y.numel()
    return total / count, correct / count


def unigram_loss(train_data: torch.Tensor, data: torch.Tensor, vocab_size: int) -> float:
    """The loss of always predicting the training characters' frequencies (plus one each, so a
    character unseen in training costs a finite amount)."""
    counts = torch.bincount(train_data, minlength=vocab_size).double() + 1
    return -(counts / counts.sum()).log()[data[1:]].mean().item()


if __name__ == "__main__":
    scored = {"training text": train_data} if val_data is None else {
        "training part": train_data, "held-out tail": val_data}
    for name, part in scored.items():
        loss, accuracy = evaluate(model, part)
        baseline = unigram_loss(train_data, part, len(vocab))
        print(f"{name}: loss {loss:.4f} (unigram baseline {baseline:.4f}), "
              f"accuracy {accuracy:.1%}")

# %% [markdown]
# ## Writing
# The prompt is read first, then one character at a time is chosen and fed back, the state
# carried. Greedy takes the likeliest; a temperature samples, sharper below 1, wilder above.

# %%
@torch.inference_mode()
def generate(model: nn.Module, prompt: torch.Tensor, length: int,
             temperature: float | None = None, generator: torch.Generator | None = None):
    model.eval()
    device = next(model.parameters()).device
    log_probs, state = model(prompt.unsqueeze(1).to(device))  # (P, 1, V)
    out = []
    for _ in range(length):
        last = log_probs[-1, 0]  # (V,)
        if temperature is None:
            next_id = int(last.argmax())
        else:  # drawn with a CPU generator: the same random numbers on any device (the text
            # can still differ, as the probabilities come from the model on that device)
            probs = torch.softmax(last.double().cpu() / temperature, dim=-1)
            next_id = int(torch.multinomial(probs, 1, generator=generator))
        out.append(next_id)
        log_probs, state = model(torch.tensor([[next_id]], device=device), state)
    return out  # length indices


if __name__ == "__main__":
    sample = generate(model, encode(args.prompt, vocab), args.sample_len, args.temperature,
                      generator)
    print(f"generated from {args.prompt!r}:\n{args.prompt}{decode(sample, vocab)}")
    print(f"in short, on the {name}:")
    print(f"loss={loss:.4f} accuracy={100 * accuracy:.1f}%")
