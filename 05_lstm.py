# %% [markdown]
# # 05 - An LSTM that predicts the next character
# Three tokens and the two classic mistakes, then a rule learned from a text and scored on a part
# of it never trained on. Run: `python 05_lstm.py` (try `--temperature 1.5`, `--text-file FILE`)
# %%
import argparse
import math
import sys
import time
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

found = torch.accelerator.current_accelerator(check_available=True)  # None if there is none
parser = argparse.ArgumentParser(description="An LSTM that predicts the next character.")
parser.add_argument("--device", default=found.type if found else "cpu")
parser.add_argument("--text-file", help="a UTF-8 text to learn (default: lines that count on)")
parser.add_argument("--steps", type=int, default=300)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--seq-len", type=int, default=32)
parser.add_argument("--hidden-size", type=int, default=64)
parser.add_argument("--lr", type=float, default=0.04)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--temperature", type=float, default=0.8, help="for sampling; lower is safer")
# In a notebook, sys.argv is the kernel's own command line, so there the defaults apply.
args = parser.parse_args([] if sys.argv[0].endswith("kernel_launcher.py") else None)
torch.manual_seed(args.seed)
# Small matrices get one thread: a second gains little, and stalls whenever its core is busy.
torch.set_num_threads(1 if args.batch_size * args.hidden_size < 8192 else torch.get_num_threads())
# %% [markdown]
# ## The model, and the two classic mistakes on three tokens
# `nn.LSTM` reads vectors time first, (T, B, input size), here one-hot tokens. `log_softmax` gives
# the log-probabilities that `nll_loss` expects. One-hot times the input weights just picks one of
# their columns; an `nn.Embedding` layer picks by index instead, without the (T, B, V) tensor.
# Mistake 1: targets of shape (T, 1), not (T,). Mistake 2: `softmax` into `nll_loss`, which takes
# minus the input at the target: minus the probability, not its log, so the gradient is tiny when
# the model is sure and wrong. `cross_entropy` takes logits: `log_softmax` and `nll_loss` in one.
# %%
class CharLSTM(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int, dropout: float = 0.0):
        super().__init__()
        self.lstm = nn.LSTM(vocab_size, hidden_size)
        self.drop = nn.Dropout(dropout)  # active in train() mode only
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens: torch.Tensor, state=None):  # tokens (T, B) int64
        x = F.one_hot(tokens, self.lstm.input_size).float()  # (T, B, V)
        out, state = self.lstm(x, state)  # out (T, B, H); state (h, c), zeros if None given
        return F.log_softmax(self.head(self.drop(out)), dim=-1), state  # (T, B, V)

tiny = CharLSTM(vocab_size=4, hidden_size=2)  # nn.LSTM(4, 2) and nn.Linear(2, 4), on the CPU
tokens, targets = torch.tensor([[3], [1], [2]]), torch.tensor([1, 2, 3])  # (T, B=1), (T,)
optimizer = torch.optim.Adam(tiny.parameters(), lr=0.1)
for step in range(300):
    log_probs = tiny(tokens)[0][:, 0]  # the log-probabilities (T, B, V), batch row 0: (T, V)
    loss = F.nll_loss(log_probs, targets)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(f"input [3, 1, 2], targets [1, 2, 3], a vocabulary of 4: loss {loss.item():.4f} after 300 "
      f"steps, predicts {log_probs.argmax(-1).tolist()}")
try:
    F.nll_loss(log_probs, targets.view(3, 1))
except RuntimeError as e:
    print(f"mistake 1, targets of shape (3, 1): RuntimeError: {str(e).splitlines()[0]}")
for how, logits in [("sure", [10.0, 0.0, 0.0]), ("unsure", [0.5, 0.0, 0.0])]:
    z, target = torch.tensor([logits], requires_grad=True), torch.tensor([2])  # (B=1, V=3), (B,)
    (wrong,) = torch.autograd.grad(F.nll_loss(F.softmax(z, dim=-1), target), z)
    (right,) = torch.autograd.grad(F.cross_entropy(z, target), z)
    print(f"mistake 2, {how} and wrong (logits {logits}, target 2): gradient norm "
          f"{wrong.norm():.3g} from nll_loss(softmax), {right.norm():.3g} from cross_entropy")
# %% [markdown]
# ## A text, a part held out, and a baseline
# A model can learn its training text by heart, so the last 10-20% (from a line start) is held
# out and only scored. The default text counts on from a random start: `4825 4826 4827 4828`.
# Only the start is a guess, one of 8996, so the best loss is ln(8996) / 20 = 0.455 nats a char.
# The best accuracy is about (16 + 1/9 + 3/10) / 20 = 82%: a start's first digit is one of 9.
# %%
starts = torch.randint(1000, 9996, (8000,)).tolist()  # 8000 lines, each counting on from one
text = "".join(" ".join(str(s + i) for i in range(4)) + "\n" for s in starts)
if args.text_file:  # "utf-8-sig" drops a byte-order mark; text mode reads CRLF and CR as "\n"
    with open(args.text_file, encoding="utf-8-sig") as f:
        text = f.read()
cut = text.rfind("\n", len(text) * 8 // 10, len(text) * 9 // 10) + 1 or len(text) * 9 // 10
train_text, held_out_text = text[:cut], text[cut:]  # held out from a line start in 80-90%
vocab = sorted(set(text))  # token i is the character vocab[i]
if len(held_out_text) < 2 or len(train_text) < 2 * args.batch_size:  # else an empty window
    raise ValueError(f"{len(text):,} characters: too few to hold 2 out and give 2 to each row")
if len(vocab) > 1000:  # the one-hot input (T, B, V) and the input weights (4H, V) grow with V
    raise ValueError(f"{len(vocab):,} distinct characters: over 1,000, use nn.Embedding")
index = {ch: i for i, ch in enumerate(vocab)}
train_data, held_out = torch.tensor([index[ch] for ch in text]).split([cut, len(text) - cut])
# The bigram baseline: each held-out character given the one before, from the training text's
# pair counts plus one. A Counter holds only the pairs that occur; a (V, V) table grows with V^2.
pairs, firsts = Counter(zip(train_text, train_text[1:])), Counter(train_text[:-1])
held = list(zip(held_out_text, held_out_text[1:]))
baseline = -sum(math.log((pairs[p] + 1) / (firsts[p[0]] + len(vocab))) for p in held) / len(held)
# %% [markdown]
# ## Training that carries the state
# The text is cut into `batch_size` rows side by side, read `seq_len` characters at a time. Each
# window starts from the state the last one ended with, `detach()`ed (truncated backpropagation
# through time): without it, `backward()` reaches into the last window's graph, already freed.
# `retain_graph=True` is no fix: `backward()` would go back through every window, and after an
# `optimizer.step()` it fails anyway, on weights changed in place. Clipping guards against a
# recurrent net's rare exploding gradient; here it shortens the gradient in only a few steps.
# Each logged training loss is the mean over its steps, while the loss still falls and dropout is
# on, so it ends above the held-out loss, which the trained model scores with dropout off.
# %%
def train(model: nn.Module, optimizer: torch.optim.Optimizer, data: torch.Tensor, steps: int,
          seq_len: int, log_every: int = 100) -> int:  # data (N, B); returns the tokens used
    model.train()  # dropout on, also after evaluate() turned it off
    state, i, tokens, total = None, 0, 0, 0  # total: the loss summed since the last log line
    for step in range(1, steps + 1):
        if i + 2 > len(data):  # the end of the rows: back to their start, the state from zeros
            i, state = 0, None
        t = min(seq_len, len(data) - 1 - i)
        x, y = data[i : i + t], data[i + 1 : i + 1 + t]  # (t, B); y holds each next character
        log_probs, state = model(x, state)  # (t, B, V)
        state = tuple(s.detach() for s in state)  # (h, c); a GRU's state is one tensor: detach it
        loss = F.nll_loss(log_probs.flatten(0, 1), y.flatten())  # (t*B, V), (t*B,): the mean
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        i, tokens, total = i + t, tokens + y.numel(), total + loss.detach()  # no .item(), no wait
        if step % log_every == 0:  # .item() waits for the device, so only now and then
            print(f"step {step:5d} | mean training loss {total.item() / log_every:.4f}")
            total = 0
    return tokens

model = CharLSTM(len(vocab), args.hidden_size, dropout=0.3).to(args.device)
n = len(train_data) // args.batch_size  # characters a row; the rows side by side: (n, B)
data = train_data[: n * args.batch_size].view(args.batch_size, n).T.to(args.device)
log_probs, state = model(data[:1])  # the pitfall, happening: the state carried without detach()
log_probs.mean().backward()  # train()'s first zero_grad() clears these gradients
try:
    model(data[1:2], state)[0].mean().backward()
except RuntimeError as e:
    print(f"state carried without detach(): RuntimeError: {str(e).split(' (')[0]}")
optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
start = time.perf_counter()
tokens = train(model, optimizer, data, args.steps, args.seq_len, max(1, args.steps // 4))
seconds = time.perf_counter() - start
print(f"trained on {args.device} (CPU threads: {torch.get_num_threads()}): {tokens:,} tokens in "
      f"{seconds:.1f} s, {tokens / seconds:,.0f} tokens/s")
# %% [markdown]
# ## Evaluation and generation
# Evaluation scores the held-out part, as the baseline did. Generation feeds back each character it
# picks, sampled at a temperature or greedy; the greedy count shows how often a line goes wrong.
# %%
@torch.inference_mode()
def evaluate(model: nn.Module, data: torch.Tensor, chunk: int = 256):  # data (N,)
    model.eval()  # dropout off
    data, state, total, correct = data.view(-1, 1), None, 0.0, 0  # data (N, B=1)
    for x, y in zip(data[:-1].split(chunk), data[1:].split(chunk)):  # each (t, 1)
        log_probs, state = model(x, state)  # (t, 1, V)
        total += F.nll_loss(log_probs.flatten(0, 1), y.flatten(), reduction="sum").item()
        correct += (log_probs.argmax(-1) == y).sum().item()
    return total / (len(data) - 1), correct / (len(data) - 1)  # of predicting data[1:]

@torch.inference_mode()
def generate(model: nn.Module, prompts: list[str], length: int, vocab: list[str],
             temperature: float | None = None) -> list[str]:  # greedy if temperature is None
    model.eval()
    tokens = torch.tensor([[vocab.index(ch) for ch in p] for p in prompts]).T  # (P, B)
    log_probs, state = model(tokens.to(next(model.parameters()).device))  # (P, B, V)
    out = []
    for _ in range(length):
        scores = log_probs[-1]  # (B, V): the next characters' log-probabilities
        out.append(scores.argmax(-1) if temperature is None else  # (B,)
                   torch.multinomial(F.softmax(scores / temperature, dim=-1), 1)[:, 0])
        log_probs, state = model(out[-1].view(1, -1), state)  # (1, B, V)
    return ["".join(vocab[i] for i in row) for row in torch.stack(out, 1).tolist()]

prompt = held_out_text[:40]
(written,) = generate(model, [prompt], 100, vocab, args.temperature)
print(f"the first 40 held-out characters given, 100 written at temperature {args.temperature}:")
for label, part in [("given", prompt), ("written", written)]:
    print("\n".join(f"  {label:7} | {line}" for line in part.splitlines()))
if not args.text_file:  # each held-out line given the line before it and its first number
    lines = held_out_text.splitlines(keepends=True)[:101]
    written = generate(model, [a + b[:5] for a, b in zip(lines, lines[1:])], 15, vocab)
    right = sum(w == b[5:] for w, b in zip(written, lines[1:]))
    print(f"held-out lines continued exactly, greedy, from their first number: {right} of 100")
loss, accuracy = evaluate(model, held_out.to(args.device))
print(f"held out: the last {len(held_out):,} characters, never trained on")
print(f"held out | loss {loss:.4f} | bigram baseline {baseline:.4f} | accuracy {accuracy:.1%}"
      + ("" if args.text_file else " | the best possible: loss 0.455, accuracy 82%"))
