"""An LSTM that reads one-hot characters and learns to predict the next one, trained with the
negative log-likelihood loss, on the CPU or a GPU. It starts with the smallest case, three
tokens, then learns a text and writes from a prompt.

Run:  python 05_lstm.py --device auto --steps 300
      python 05_lstm.py --text-file my.txt --steps 2000 --temperature 0.8
"""
# %%
import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# %% [markdown]
# ## The smallest case
# The sequence [3, 1, 2] over a vocabulary of 4 tokens, one-hot encoded and shaped
# (seq_len, batch, vocab) = (3, 1, 4): `nn.LSTM` takes the time axis first unless you pass
# `batch_first=True`. The target is the next token at each step, [1, 2, 3]: one class index
# per row, shape (3,).
#
# Two mistakes are common here, and the demo shows both happening:
# - `nll_loss` expects log-probabilities. Fed `softmax` output it returns minus the mean
#   probability, a number that can be negative and whose gradient is wrong. Use
#   `log_softmax`, or `cross_entropy` on the raw logits, which is the same thing.
# - A target of shape (3, 1) raises "multi-target not supported": it must be (3,).

# %%
def tiny_logits(lstm: nn.LSTM, linear: nn.Linear, tokens: torch.Tensor) -> torch.Tensor:
    x = F.one_hot(tokens, linear.out_features).float().unsqueeze(1)  # (T, B=1, V)
    out, (h, c) = lstm(x)  # out: (T, 1, H), the hidden state at every step; no state given: zeros
    return linear(out.squeeze(1))  # (T, V)


def train_tiny(seed: int, max_steps: int = 500, lr: float = 0.1):
    """Train nn.LSTM(4, 2) + nn.Linear(2, 4) until it maps [3, 1, 2] to [1, 2, 3]."""
    torch.manual_seed(seed)
    lstm, linear = nn.LSTM(4, 2), nn.Linear(2, 4)
    tokens, target = torch.tensor([3, 1, 2]), torch.tensor([1, 2, 3])  # target: (3,)
    optimizer = torch.optim.Adam([*lstm.parameters(), *linear.parameters()], lr=lr)
    for step in range(1, max_steps + 1):
        loss = F.nll_loss(F.log_softmax(tiny_logits(lstm, linear, tokens), dim=-1), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            if torch.equal(tiny_logits(lstm, linear, tokens).argmax(-1), target):
                break
    return lstm, linear, step


# %% [markdown]
# ## The real model
# Characters become indices into a vocabulary, indices become one-hot vectors, the LSTM
# reads them, a linear layer scores every character, and `log_softmax` turns the scores into
# log-probabilities for `nll_loss`.
#
# The initial hidden state is made from the model's own parameters (`new_zeros`), so it is
# on whatever device the model was moved to: a `torch.zeros(..., device=device)` that reads
# a global `device` breaks when the function is copied elsewhere.

# %%
class CharLSTM(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int = 1):
        super().__init__()
        self.vocab_size = vocab_size
        # Input (T, B, V), time first; with batch_first=True it would be (B, T, V).
        self.lstm = nn.LSTM(vocab_size, hidden_size, num_layers)
        self.head = nn.Linear(hidden_size, vocab_size)

    def init_state(self, batch_size: int):
        shape = (self.lstm.num_layers, batch_size, self.lstm.hidden_size)
        weight = self.head.weight  # same device and dtype as the model
        return weight.new_zeros(shape), weight.new_zeros(shape)  # (h, c)

    def forward(self, tokens: torch.Tensor, state=None):  # tokens: (T, B) int64
        x = F.one_hot(tokens, self.vocab_size).float()  # (T, B, V)
        if state is None:
            state = self.init_state(tokens.shape[1])
        out, state = self.lstm(x, state)  # (T, B, H)
        return F.log_softmax(self.head(out), dim=-1), state  # (T, B, V) log-probabilities


def build_vocab(text: str) -> list[str]:
    return sorted(set(text))


def encode(text: str, vocab: list[str]) -> torch.Tensor:
    index = {ch: i for i, ch in enumerate(vocab)}
    return torch.tensor([index[ch] for ch in text])  # (N,) int64


def decode(ids, vocab: list[str]) -> str:
    return "".join(vocab[i] for i in ids)


def get_batch(data: torch.Tensor, seq_len: int, batch_size: int, generator: torch.Generator):
    """batch_size random windows of the text and the same windows shifted by one: (T, B) each."""
    starts = torch.randint(0, len(data) - seq_len, (batch_size,), generator=generator)  # (B,)
    idx = starts + torch.arange(seq_len).unsqueeze(1)  # (T, B)
    return data[idx], data[idx + 1]


def train(model: CharLSTM, data: torch.Tensor, steps: int, batch_size: int, seq_len: int,
          lr: float, generator: torch.Generator, log_every: int) -> float:
    device = model.head.weight.device
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(1, steps + 1):
        x, y = get_batch(data, seq_len, batch_size, generator)  # on the CPU: same on any device
        log_probs, _ = model(x.to(device))  # (T, B, V)
        loss = F.nll_loss(log_probs.reshape(-1, model.vocab_size), y.to(device).reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % log_every == 0 or step == steps:
            print(f"step {step:4d} | loss {loss.item():.4f}")  # .item() waits for the GPU
    return loss.item()


@torch.inference_mode()
def evaluate(model: CharLSTM, data: torch.Tensor) -> tuple[float, float]:
    """Read the whole text once, from a zero state: (loss, accuracy) of predicting each next
    character from all the characters before it, as generation does."""
    model.eval()
    device = model.head.weight.device
    log_probs, _ = model(data[:-1].unsqueeze(1).to(device))  # (N-1, 1, V)
    log_probs, target = log_probs.squeeze(1), data[1:].to(device)
    loss = F.nll_loss(log_probs, target).item()
    return loss, (log_probs.argmax(-1) == target).float().mean().item()


@torch.inference_mode()
def generate(model: CharLSTM, prompt: torch.Tensor, length: int, temperature: float | None = None,
             generator: torch.Generator | None = None) -> list[int]:
    """Feed the prompt, then one character at a time, carrying the hidden state along.
    temperature None: the most likely character (greedy); else sample, sharper below 1."""
    model.eval()
    device = model.head.weight.device
    log_probs, state = model(prompt.unsqueeze(1).to(device))  # (P, 1, V)
    out = []
    for _ in range(length):
        last = log_probs[-1, 0]  # (V,)
        if temperature is None:
            next_id = int(last.argmax())
        else:  # sampled on the CPU with a CPU generator: the same draws on any device
            probs = torch.softmax(last.float().cpu() / temperature, dim=-1)
            next_id = int(torch.multinomial(probs, 1, generator=generator))
        out.append(next_id)
        log_probs, state = model(torch.tensor([[next_id]], device=device), state)
    return out


# %% [markdown]
# ## The demo
# The default text is short enough to learn completely in about a second on a laptop CPU.
# Every setting is a flag; the seed fixes the weights, the batches and the samples.

# %%
TEXT = """Twinkle, twinkle, little star,
how I wonder what you are!
Up above the world so high,
like a diamond in the sky.
"""


EVAL_CHARS = 10_000


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


def read_text(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"--text-file {path}: no such file") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"--text-file {path}: not UTF-8 text (byte {e.object[e.start]:#04x} "
                         f"at offset {e.start})") from None
    except OSError as e:
        raise ValueError(f"--text-file {path}: {e.strerror}") from None
    if not text:
        raise ValueError(f"--text-file {path}: the file is empty")
    return text


def positive(kind):
    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {value}")
        return value
    parse.__name__ = kind.__name__  # argparse's message for a non-number: "invalid int value"
    return parse


class Parser(argparse.ArgumentParser):
    def error(self, message):  # bad input: one line naming it, exit 2, no usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv=None):
    parser = Parser(description=__doc__.split("\n\n")[0],
                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="where to train; auto: the available accelerator, else cpu")
    parser.add_argument("--text-file", type=Path, default=None,
                        help="UTF-8 text to learn; none: a built-in rhyme")
    parser.add_argument("--steps", type=positive(int), default=300, help="training steps")
    parser.add_argument("--hidden-size", type=positive(int), default=64, help="LSTM state size")
    parser.add_argument("--batch-size", type=positive(int), default=32, help="windows per step")
    parser.add_argument("--seq-len", type=positive(int), default=32, help="characters per window")
    parser.add_argument("--lr", type=positive(float), default=0.01, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights, batches, sampling")
    parser.add_argument("--prompt", default=None,
                        help="text to continue; none: the first character")
    parser.add_argument("--sample-len", type=positive(int), default=120,
                        help="characters to generate")
    parser.add_argument("--temperature", type=positive(float), default=None,
                        help="sample at this temperature; none: greedy, the likeliest character")
    if argv is None and "ipykernel" in sys.modules:  # a Jupyter kernel's argv is its own
        argv = []
    args = parser.parse_args(argv)
    try:
        device = pick_device(args.device)
        text = TEXT if args.text_file is None else read_text(args.text_file)
    except ValueError as e:
        parser.error(str(e))
    if len(text) < args.seq_len + 1:
        parser.error(f"the text has {len(text)} characters; --seq-len {args.seq_len} "
                     f"needs at least {args.seq_len + 1}")
    vocab = build_vocab(text)
    prompt = text[0] if args.prompt is None else args.prompt
    if not prompt:
        parser.error("--prompt must not be empty")
    if set(prompt) - set(vocab):
        parser.error(f"--prompt {prompt!r}: characters not in the text: "
                     f"{''.join(sorted(set(prompt) - set(vocab)))!r}")
    print(f"device: {device}")

    # The smallest case, and the two mistakes.
    lstm, linear, steps = train_tiny(args.seed)
    tokens, target = torch.tensor([3, 1, 2]), torch.tensor([1, 2, 3])
    with torch.no_grad():
        logits = tiny_logits(lstm, linear, tokens)  # (3, 4)
    right = F.nll_loss(F.log_softmax(logits, dim=-1), target)
    wrong = F.nll_loss(F.softmax(logits, dim=-1), target)
    print(f"tiny LSTM: [3, 1, 2] -> {logits.argmax(-1).tolist()} after {steps} steps")
    print(f"nll_loss(log_softmax) {right:.4f} = cross_entropy {F.cross_entropy(logits, target):.4f}"
          f" | nll_loss(softmax) {wrong:.4f} (wrong)")
    try:
        F.nll_loss(F.log_softmax(logits, dim=-1), target.view(3, 1))
    except RuntimeError as e:
        print(f"target of shape (3, 1): RuntimeError: {str(e).splitlines()[0]}")

    # The real model.
    torch.manual_seed(args.seed)
    data = encode(text, vocab)  # (N,)
    model = CharLSTM(len(vocab), args.hidden_size).to(device)  # made on the CPU: same anywhere
    print(f"text: {len(text)} characters, vocabulary {len(vocab)} | "
          f"batch (seq_len, batch, vocab) = ({args.seq_len}, {args.batch_size}, {len(vocab)})")
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    train(model, data, args.steps, args.batch_size, args.seq_len, args.lr, generator,
          log_every=max(1, args.steps // 5))
    seconds = time.perf_counter() - start
    print(f"speed: {args.steps * args.batch_size * args.seq_len / seconds:,.0f} tokens/s "
          f"({seconds:.2f} s on {device})")
    # One pass over a long text is one long sequential loop: measure on its start.
    scored = data[: EVAL_CHARS + 1]
    loss, accuracy = evaluate(model, scored)
    where = "the text" if len(scored) == len(data) else f"the first {EVAL_CHARS:,} characters"
    print(f"next-character accuracy on {where}: {accuracy:.1%}")

    sample = generate(model, encode(prompt, vocab), args.sample_len, args.temperature, generator)
    print(f"generated from {prompt!r}:\n{prompt}{decode(sample, vocab)}")
    print(f"loss={loss:.4f} accuracy={100 * accuracy:.1f}%")


if __name__ == "__main__":
    main()
