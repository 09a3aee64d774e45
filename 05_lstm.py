# %% [markdown]
# # 05 - An LSTM that predicts the next character
# It learns lines that count on, like `4825 4826 4827 4828`. Run: `python 05_lstm.py` (`--help`)
# %%
import argparse
import math
import sys
import time
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

accelerator = torch.accelerator.current_accelerator(check_available=True)  # None if none
parser = argparse.ArgumentParser(description="An LSTM that predicts the next character.")
parser.add_argument("--device", default=accelerator.type if accelerator else "cpu")
parser.add_argument("--text-file", help="a UTF-8 text to learn (default: lines that count on)")
parser.add_argument("--steps", type=int, default=300)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--seq-len", type=int, default=32)
parser.add_argument("--hidden-size", type=int, default=64)
parser.add_argument("--lr", type=float, default=0.04)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--temperature", type=float, default=0.8, help="for sampling; lower is safer")
# In a notebook, sys.argv is the kernel's own command line: there the defaults apply.
args = parser.parse_args([] if sys.argv[0].endswith("kernel_launcher.py") else None)
torch.manual_seed(args.seed)
# One thread for small matrices: with a laptop's other core busy, a second can stall every step.
if args.batch_size * args.hidden_size < 8192:
    torch.set_num_threads(1)
# %% [markdown]
# ## The model, three tokens learned, and two classic mistakes
# `nn.LSTM` reads a sequence time first: (T, B, input size), here each token one-hot: V numbers,
# all 0 but a 1 at its index. The head gives V scores for the next token, and `log_softmax` turns
# them into the log-probabilities that `nll_loss` expects. (`nn.Embedding(V, E)`, the usual first
# layer, learns E-wide vectors instead, and never makes the (T, B, V) one-hot tensor.)
# Mistake 1: targets of shape (T, 1), where `nll_loss` wants one class index per row: (T,).
# Mistake 2: `softmax` into `nll_loss`. The loss is then minus a probability, not its log, and its
# gradient is tiny when the model is sure and wrong, so it barely learns. `cross_entropy` takes the
# scores and does both steps, `log_softmax` and `nll_loss`.
# %%
class CharLSTM(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int, dropout: float = 0.0):
        super().__init__()
        self.lstm = nn.LSTM(vocab_size, hidden_size)
        self.drop = nn.Dropout(dropout)  # active in train() mode only
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens: torch.Tensor, state=None):  # tokens (T, B) int64
        x = F.one_hot(tokens, self.lstm.input_size).float()  # (T, B, V)
        out, state = self.lstm(x, state)  # out (T, B, H); state (h, c), zeros if None
        return F.log_softmax(self.head(self.drop(out)), dim=-1), state  # (T, B, V)

tiny = CharLSTM(vocab_size=4, hidden_size=2)  # nn.LSTM(4, 2) and nn.Linear(2, 4)
tokens = torch.tensor([[3], [1], [2]])  # (T=3, B=1): the sequence 3 1 2 3, a vocabulary of 4
targets = torch.tensor([1, 2, 3])  # (T,): each token's target is the token after it
optimizer = torch.optim.Adam(tiny.parameters(), lr=0.1)
for step in range(300):
    log_probs, state = tiny(tokens)  # (T, B, V)
    loss = F.nll_loss(log_probs[:, 0], targets)  # batch row 0: (T, V) and (T,)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(f"input [3, 1, 2], targets [1, 2, 3] (the next tokens): loss {loss.item():.4f} after 300 "
      f"steps, predicts {log_probs[:, 0].argmax(dim=-1).tolist()}")
try:
    F.nll_loss(log_probs[:, 0], targets.view(3, 1))
except RuntimeError as error:
    print(f"mistake 1, targets of shape (3, 1): RuntimeError: {error}")
for how, logits in [("sure", [10.0, 0.0, 0.0]), ("unsure", [0.5, 0.0, 0.0])]:  # target 2: wrong
    z = torch.tensor([logits], requires_grad=True)  # (B=1, V=3)
    wrong = torch.autograd.grad(F.nll_loss(F.softmax(z, dim=-1), torch.tensor([2])), z)[0]
    right = torch.autograd.grad(F.cross_entropy(z, torch.tensor([2])), z)[0]
    print(f"mistake 2, {how} and wrong (logits {logits}, target 2): gradient norm "
          f"{wrong.norm():.3g} from nll_loss(softmax), {right.norm():.3g} from cross_entropy")
# %% [markdown]
# ## The text, the part held out, and a baseline
# A model can learn its training text by heart, so the last tenth is held out: never trained on,
# only scored. In a line of 20 characters only the start is a guess, one of 8996: the best loss is
# ln(8996) / 20 = 0.455, and the best accuracy about 82% (the start's digits: 1 in 9, 1 in 10).
# The bigram baseline scores each held-out character by how often it follows the one before in the
# training text, plus one; a `Counter` keeps only the pairs that occur, not a (V, V) table.
# %%
starts = torch.randint(1000, 9996, (8000,)).tolist()
text = "".join(f"{s} {s + 1} {s + 2} {s + 3}\n" for s in starts)  # 8000 lines
if args.text_file:  # "utf-8-sig" drops a byte-order mark; text mode reads CRLF and CR as "\n"
    with open(args.text_file, encoding="utf-8-sig") as f:
        text = f.read()
cut = len(text) * 9 // 10
train_text, held_out_text = text[:cut], text[cut:]
if len(held_out_text) < 2 or len(train_text) < 2 * args.batch_size:
    raise ValueError(f"{len(text):,} characters: too short to hold out 2 and train each of the "
                     f"{args.batch_size} batch rows on 2 (try a smaller --batch-size)")
vocab = sorted(set(text))  # token i is the character vocab[i]
if len(vocab) > 1000:  # the one-hot input (T, B, V) and the LSTM's input weights grow with V
    raise ValueError(f"{len(vocab):,} distinct characters: over 1,000; use nn.Embedding")
index = {ch: i for i, ch in enumerate(vocab)}
pair_counts = Counter(zip(train_text, train_text[1:]))  # ("1", "2"): how often "2" follows "1"
first_counts = Counter(train_text[:-1])
pairs = zip(held_out_text, held_out_text[1:])
logs = [math.log((pair_counts[a, b] + 1) / (first_counts[a] + len(vocab))) for a, b in pairs]
baseline = -sum(logs) / len(logs)
print(f"text: {len(text):,} characters, {len(vocab)} distinct; bigram baseline {baseline:.4f}")
# %% [markdown]
# ## Training that carries the state, generation and evaluation
# The training text is cut into `batch_size` stretches, the columns of `data` (N, B): `abcdefgh`
# in 2 gives the rows `a e`, `b f`, `c g`, `d h`. A window of 2 is the input `[a e; b f]`, and its
# targets are `[b f; c g]`. The next window goes on down the columns, from the state this one left.
# - That state is `detach()`ed: its values go on, but `backward()` stops at the window's start
#   (truncated backpropagation through time). Without it, `backward()` reaches into the last
#   window's graph, already freed, and raises. `retain_graph=True`, which the error suggests, is no
#   fix: it would go back through every window, and fails once `optimizer.step()` changed weights.
# - Clipping guards against a recurrent net's rare exploding gradient; here it rarely acts.
# - The loss logged, a mean since the last log line with dropout on, ends above the held-out loss.
# Then the model writes, drawing each character at a temperature: a line it writes should count on
# by one from its start. Evaluation reads the held-out part a chunk at a time, in bounded memory.
# %%
def train(model, optimizer, data, steps, seq_len, log_every=100):  # data (N, B); -> tokens used
    model.train()  # dropout on
    state, i = None, 0  # the state starts from zeros; i: the row where the next window starts
    tokens, total = 0, 0  # total: the loss summed since the last log line
    for step in range(1, steps + 1):
        if i + 2 > len(data):  # the end of the rows: back to their start, the state from zeros
            state, i = None, 0
        t = min(seq_len, len(data) - 1 - i)
        x, y = data[i : i + t], data[i + 1 : i + 1 + t]  # (t, B) each; y: x one character on
        log_probs, state = model(x, state)  # (t, B, V)
        state = (state[0].detach(), state[1].detach())  # (h, c); a GRU's is one tensor
        loss = F.nll_loss(log_probs.flatten(0, 1), y.flatten())  # (t*B, V) and (t*B,)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        i += t
        tokens += y.numel()
        total += loss.detach()  # not .item(), which would wait for a GPU at every step
        if step % log_every == 0:
            print(f"step {step:5d} | mean training loss {total.item() / log_every:.4f}")
            total = 0
    return tokens

train_data = torch.tensor([index[ch] for ch in train_text])
n = len(train_data) // args.batch_size  # characters in a row; the few left over are dropped
data = train_data[: n * args.batch_size].view(args.batch_size, n).T.to(args.device)  # (n, B)
model = CharLSTM(len(vocab), args.hidden_size, dropout=0.3).to(args.device)
optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
start = time.perf_counter()
tokens_used = train(model, optimizer, data, args.steps, args.seq_len, max(1, args.steps // 4))
if args.device != "cpu":
    torch.accelerator.synchronize()  # a GPU runs behind Python: wait for it before the clock
seconds = time.perf_counter() - start
print(f"trained on {args.device}: {tokens_used:,} tokens in {seconds:.1f} s, "
      f"{tokens_used / seconds:,.0f} tokens/s")

@torch.inference_mode()
def generate(model, prompt, length, temperature):
    model.eval()  # dropout off
    tokens = torch.tensor([index[ch] for ch in prompt], device=args.device).view(-1, 1)  # (P, 1)
    log_probs, state = model(tokens)  # (P, 1, V)
    written = ""
    for _ in range(length):
        probs = F.softmax(log_probs[-1, 0] / temperature, dim=-1)  # (V,), as from scores / T
        token = torch.multinomial(probs, num_samples=1)  # (1,): drawn
        written += vocab[token.item()]
        log_probs, state = model(token.view(1, 1), state)  # (1, B=1, V)
    return written

prompt = held_out_text[:40]
written = generate(model, prompt, 100, args.temperature)
print(f"the first 40 held-out characters given, 100 written at temperature {args.temperature}:")
for label, part in [("given", prompt), ("written", written)]:
    for line in part.splitlines():
        print(f"  {label:7} | {line}")
if not args.text_file:  # each held-out line given the line before it and its first number
    lines = held_out_text.splitlines(keepends=True)[:101]  # at 1e-6, the likeliest: greedy
    right = sum(generate(model, a + b[:5], 14, 1e-6) == b[5:19] for a, b in zip(lines, lines[1:]))
    print(f"held-out lines continued exactly, greedy, from their first number: {right} of 100")
held_out = torch.tensor([index[ch] for ch in held_out_text], device=args.device)
model.eval()  # dropout off
state, total, correct = None, 0.0, 0
with torch.inference_mode():
    for x, y in zip(held_out[:-1].split(1000), held_out[1:].split(1000)):  # y: x one on, (t,)
        log_probs, state = model(x.view(-1, 1), state)  # (t, B=1, V)
        total += F.nll_loss(log_probs[:, 0], y, reduction="sum").item()
        correct += (log_probs[:, 0].argmax(dim=-1) == y).sum().item()
loss, accuracy = total / (len(held_out) - 1), correct / (len(held_out) - 1)
print(f"held out: the last {len(held_out):,} characters, never trained on")
top = "" if args.text_file else " | the best possible: loss 0.455, accuracy 82%"
print(f"held out | loss {loss:.4f} | bigram baseline {baseline:.4f} | accuracy {accuracy:.1%}{top}")
