"""05_lstm.py's train() against a plain hand-written loop over the same model and windows, taken
in turns (the README's speed table): `python .ci/bench_lstm.py [--device cuda] [--batch-size 256
--hidden-size 256] [--repeats 5]`. Prints the median tokens/s of each."""
import argparse
import contextlib
import io
import runpy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--device", default="cpu")
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--seq-len", type=int, default=32)
parser.add_argument("--hidden-size", type=int, default=64)
parser.add_argument("--steps", type=int, default=300)
parser.add_argument("--repeats", type=int, default=5)
args = parser.parse_args()

# The lesson, run once with these sizes and one training step: its train(), its model class, its
# batches (N, B) on the device, and its choice of thread count.
sys.argv = ["05_lstm.py", "--steps", "1", "--device", args.device, "--seq-len", str(args.seq_len),
            "--batch-size", str(args.batch_size), "--hidden-size", str(args.hidden_size)]
with contextlib.redirect_stdout(io.StringIO()):
    lesson = runpy.run_path(str(Path(__file__).parents[1] / "05_lstm.py"), run_name="__main__")
data, vocab_size = lesson["data"], len(lesson["vocab"])


def hand_loop(model, optimizer, data, steps, seq_len):
    """The same steps as train(), written out with nothing else."""
    state, i = None, 0
    for _ in range(steps):
        if i + 2 > len(data):
            i, state = 0, None
        t = min(seq_len, len(data) - 1 - i)
        log_probs, state = model(data[i : i + t], state)
        state = (state[0].detach(), state[1].detach())
        loss = F.nll_loss(log_probs.flatten(0, 1), data[i + 1 : i + 1 + t].flatten())
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        i += t
    return loss.item()  # waits for the device, as train()'s last log line does


rates = {"train()": [], "hand loop": []}
for _ in range(args.repeats):
    for name in rates:
        torch.manual_seed(0)
        model = lesson["CharLSTM"](vocab_size, args.hidden_size, dropout=0.3).to(args.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
        start = time.perf_counter()
        if name == "train()":
            with contextlib.redirect_stdout(io.StringIO()):  # its one log line, unprinted
                tokens = lesson["train"](model, optimizer, data, args.steps, args.seq_len,
                                         args.steps)
        else:
            hand_loop(model, optimizer, data, args.steps, args.seq_len)
        rates[name].append(tokens / (time.perf_counter() - start))
print(f"threads: {torch.get_num_threads()}, batch size {args.batch_size}, hidden size "
      f"{args.hidden_size}")
for name, values in rates.items():
    print(f"{name:10} median {statistics.median(values):,.0f} tokens/s "
          f"({', '.join(f'{v:,.0f}' for v in values)})")
