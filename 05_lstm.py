# %% [markdown]
# # 05 - An LSTM that predicts the next character
# `nn.LSTM` learns which character comes next: three tokens, two classic mistakes, then a rule
# learned, scored on a part never trained on. Run: `python 05_lstm.py` (or `--text-file notes.txt`)

# %%
import argparse
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

if __name__ == "__main__":  # the demos run when this file is the program, never on import
    def number_in(kind: type, lo, hi):  # an argparse type: a number in lo..hi, else one error
        def number(text: str):
            if not lo <= (value := kind(text)) <= hi:  # nan is in no range
                raise argparse.ArgumentTypeError(f"must be in {lo}..{hi}, got {text}")
            return value
        return number
    found = torch.accelerator.current_accelerator(check_available=True)  # None: no accelerator
    devices = ["cpu", found.type] if found else ["cpu"]
    parser = argparse.ArgumentParser(description="An LSTM that predicts the next character.")
    parser.add_argument("--device", choices=devices, default=devices[-1])
    parser.add_argument("--text-file", help="UTF-8 text to learn; default: lines that count")
    parser.add_argument("--steps", type=number_in(int, 1, 10**6), default=300)
    parser.add_argument("--batch-size", type=number_in(int, 1, 1024), default=32)
    parser.add_argument("--seq-len", type=number_in(int, 1, 1024), default=64)
    parser.add_argument("--hidden-size", type=number_in(int, 1, 4096), default=64)
    parser.add_argument("--lr", type=number_in(float, 1e-6, 1.0), default=0.02)
    parser.add_argument("--temperature", type=number_in(float, 0.01, 100), help="default: greedy")
    parser.add_argument("--seed", type=number_in(int, 0, 2**32 - 1), default=0)
    # flags: `python 05_lstm.py --steps 100` or `%run 05_lstm.py --steps 100`; a notebook: none
    args = parser.parse_args([] if sys.argv[0].endswith("kernel_launcher.py") else None)

# %% [markdown]
# ## The model: one-hot characters in, log-probabilities out
# One-hot characters (T, B, V) in (time first, unless `batch_first=True`), log-probabilities out,
# for `nll_loss`. First three tokens of 4, [3, 1, 2], each step's target the next one: [1, 2, 3].
# Mistake 1: a target of shape (3, 1), refused. Mistake 2: `softmax` into `nll_loss`, which only
# averages `-input[target]` (no `weight=`): minus the mean probability, tiny gradients when wrong.

# %%
class CharLSTM(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int, dropout: float = 0.0):
        super().__init__()
        self.lstm = nn.LSTM(vocab_size, hidden_size)  # input (T, B, V): time first
        self.drop = nn.Dropout(dropout)  # in train() mode only
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens: torch.Tensor, state=None):  # tokens (T, B) int64; state (h, c)
        x = F.one_hot(tokens, self.lstm.input_size).float()  # (T, B, V)
        out, state = self.lstm(x, state)  # out (T, B, H): h after each step; no state: zeros
        return F.log_softmax(self.head(self.drop(out)), dim=-1), state  # (T, B, V) log-probs


if __name__ == "__main__":  # `tiny` stays on the CPU; the model below goes to --device
    torch.manual_seed(args.seed)
    tiny = CharLSTM(vocab_size=4, hidden_size=2)  # nn.LSTM(4, 2) and nn.Linear(2, 4)
    tokens, target = torch.tensor([[3], [1], [2]]), torch.tensor([1, 2, 3])  # (T, B=1), (T,)
    optimizer = torch.optim.Adam(tiny.parameters(), lr=0.1)
    for step in range(300):
        log_probs = tiny(tokens)[0].squeeze(1)  # (T, V)
        loss = F.nll_loss(log_probs, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"3 tokens, 300 steps: loss {loss.item():.4f}, predicts {log_probs.argmax(-1).tolist()}")
    try:
        F.nll_loss(log_probs, target.view(3, 1))
    except RuntimeError as e:
        print(f"target of shape (3, 1): RuntimeError: {str(e).splitlines()[0]}")
    wrong = torch.tensor([[10.0, 0.0, 0.0]], requires_grad=True)  # sure of 0; the target: 2
    for name, loss in [("nll_loss(softmax)", F.nll_loss(F.softmax(wrong, -1), torch.tensor([2]))),
                       ("cross_entropy", F.cross_entropy(wrong, torch.tensor([2])))]:
        (grad,) = torch.autograd.grad(loss, wrong)
        print(f"logits [10, 0, 0], target 2: {name} {loss:.5f}, gradient norm {grad.norm():.2g}")

# %% [markdown]
# ## A text, and a part held out
# A model can look good on its training text by memorising, so a tenth or more at the end is held
# out. The default text counts on from a random four-digit number a line, `4825 4826 4827 4828`:
# only the start (1 of 8996) is a guess: the best loss to expect, ln(8996)/20 = 0.455 nats a char.

# %%
def counting_text(lines: int, seed: int) -> str:  # four numbers a line, from 1000..9995 on
    starts = torch.randint(1000, 9996, (lines,), generator=torch.Generator().manual_seed(seed))
    return "".join(" ".join(str(s + i) for i in range(4)) + "\n" for s in starts.tolist())


def read_text(path: str, max_bytes: int = 10_000_000) -> str:
    """A UTF-8 file's text, a BOM dropped, CRLF and CR read as LF; raises OSError or ValueError."""
    with open(path, "rb") as f:
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ValueError(f"over {max_bytes:,} bytes")
    return raw.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")


def bigram_loss(train: torch.Tensor, held_out: torch.Tensor, vocab_size: int) -> float:
    """The bigram baseline: mean loss on held_out of each character given the one before."""
    counts = torch.ones(vocab_size, vocab_size)  # one each: an unseen pair costs a finite amount
    counts.index_put_((train[:-1], train[1:]), torch.ones(len(train) - 1), accumulate=True)
    probs = counts / counts.sum(1, keepdim=True)  # (V, V): row a, the next character after a
    return -probs[held_out[:-1], held_out[1:]].log().mean().item()


if __name__ == "__main__":
    try:  # your --text-file: what cannot be used is one error line
        text = read_text(args.text_file) if args.text_file else counting_text(8000, args.seed)
        cut = text.rfind("\n", len(text) * 8 // 10, len(text) * 9 // 10) + 1 or len(text) * 9 // 10
        train_text, held_out_text = text[:cut], text[cut:]  # from a line start in 80-90%, if any
        if len(held_out_text) < 2 or len(train_text) < 17 * args.batch_size:
            raise ValueError(f"{len(text):,} characters: too few to hold a tenth out, 17 a piece")
    except (OSError, ValueError) as e:
        parser.error(f"--text-file {args.text_file}: {e}")
    vocab = sorted(set(text))
    index = {ch: i for i, ch in enumerate(vocab)}  # token i is the character vocab[i]
    train_data, held_out = torch.tensor([index[ch] for ch in text]).split([cut, len(text) - cut])
    baseline = bigram_loss(train_data, held_out, len(vocab))

# %% [markdown]
# ## Training that carries the state
# The text is cut into `batch_size` pieces side by side, read `seq_len` characters at a time: each
# window starts from the state the last one ended with (truncated backpropagation through time),
# `detach()`ed, or `backward()` fails. Clipping the gradients' total length to 1 at most limits
# what one bad batch puts into Adam's averages. Dropout makes a short text harder to learn by heart.

# %%
def train(model: nn.Module, optimizer: torch.optim.Optimizer, data: torch.Tensor, steps: int,
          seq_len: int, log_every: int = 100) -> int:
    """Steps over data (T, B), seq_len a step, the state carried; returns the tokens used."""
    model.train()
    data, state, i, done, tokens = data.to(next(model.parameters()).device), None, 0, 0, 0
    try:
        while done < steps:
            if i + 2 > len(data):  # the end of the pieces: back to their start, from zero
                i, state = 0, None
            t = min(seq_len, len(data) - 1 - i)
            x, y = data[i : i + t], data[i + 1 : i + 1 + t]  # y: x's next characters, (t, B)
            log_probs, state = model(x, state)
            state = tuple(s.detach() for s in state)  # for the next window: values, no graph
            loss = F.nll_loss(log_probs.flatten(0, 1), y.flatten())  # (t*B, V), (t*B,): the mean
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            optimizer.step()
            i, done, tokens = i + t, done + 1, tokens + y.numel()
            if done % log_every == 0 or done == steps:  # now and then: .item() waits for the GPU
                print(f"step {done:5d} | loss {loss.item():.4f}")
    except KeyboardInterrupt:
        print(f"Ctrl-C: training stopped after {done} steps; going on with the model as it is")
    return tokens


if __name__ == "__main__":
    model = CharLSTM(len(vocab), args.hidden_size, dropout=0.3).to(args.device)
    n = len(train_data) // args.batch_size  # characters a piece
    data = train_data[: n * args.batch_size].view(args.batch_size, n).T.contiguous()  # (n, B)
    log_probs, state = model(data[:8].to(args.device))  # the pitfall: state kept, not detached
    log_probs.mean().backward()
    try:
        model(data[8:16].to(args.device), state)[0].mean().backward()
    except RuntimeError as e:
        print(f"state carried without detach(): RuntimeError: {str(e).split(' (')[0]}")
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    start = time.perf_counter()
    tokens = train(model, optimizer, data, args.steps, args.seq_len, max(1, args.steps // 4))
    rate = tokens / (time.perf_counter() - start)
    print(f"trained on {args.device}: {tokens:,} tokens (characters), {rate:,.0f} tokens/s")

# %% [markdown]
# ## Evaluation and generation
# Evaluation scores what the baseline scored, the state carried through; generation feeds back each
# character it picks (greedy, the likeliest each time, soon repeats a line: try `--temperature`).

# %%
@torch.inference_mode()
def evaluate(model: nn.Module, data: torch.Tensor, chunk: int = 256) -> tuple[float, float]:
    """(mean loss, accuracy) of predicting data[1:] from the characters before; data (N,)."""
    model.eval()
    data, state = data.to(next(model.parameters()).device).view(-1, 1), None  # (N, B=1)
    total, correct = 0.0, 0
    for i in range(0, len(data) - 1, chunk):
        x, y = data[i : i + chunk], data[i + 1 : i + 1 + chunk]
        log_probs, state = model(x[: len(y)], state)  # (t, 1, V)
        total += F.nll_loss(log_probs.flatten(0, 1), y.flatten(), reduction="sum").item()
        correct += (log_probs.argmax(-1) == y).sum().item()
    return total / (len(data) - 1), correct / (len(data) - 1)


@torch.inference_mode()
def generate(model: nn.Module, prompt: str, length: int, vocab: list[str],
             temperature: float | None = None) -> str:
    """`length` characters to follow prompt: greedy, or sampled at temperature."""
    model.eval()
    device = next(model.parameters()).device  # the prompt goes in as (P, B=1): (P, 1, V) out
    log_probs, state = model(torch.tensor([[vocab.index(c)] for c in prompt], device=device))
    out = []
    for _ in range(length):
        scores = log_probs[-1, 0]  # (V,): log-probabilities; a temperature scales them
        out.append(int(scores.argmax() if temperature is None else
                       torch.multinomial(F.softmax(scores / temperature, dim=-1), 1)))
        log_probs, state = model(torch.tensor([[out[-1]]], device=device), state)
    return "".join(vocab[i] for i in out)


if __name__ == "__main__":
    prompt = held_out_text[: held_out_text.find("\n") + 6]  # a held-out line, 5 of the next
    print(f"after held-out text:\n{prompt}{generate(model, prompt, 150, vocab, args.temperature)}")
    if not args.text_file:  # each held-out line from its first number, after the line before
        lines = held_out_text.splitlines(keepends=True)
        right = sum(generate(model, a + b[:5], len(b) - 5, vocab, args.temperature) == b[5:]
                    for a, b in zip(lines[:100], lines[1:101]))
        print(f"held-out lines it counts on from their first number: {right} of 100")
    loss, accuracy = evaluate(model, held_out)
    best = "" if args.text_file else "; the best expected loss: about 0.455"
    print(f"held out: the last {len(held_out):,} characters, never trained on{best}")
    print(f"loss={loss:.4f} baseline={baseline:.4f} accuracy={accuracy:.1%}")
