"""05_lstm.py's train() against a plain hand-written loop over the same model and windows, taken
in turns (the README's speed table): `python .ci/bench_lstm.py [--device cuda] [--batch-size 256
--hidden-size 256] [--repeats 5]`. Prints the median tokens/s of each."""
import argparse
import contextlib
import importlib.util
import io
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

spec = importlib.util.spec_from_file_location("lstm", Path(__file__).parents[1] / "05_lstm.py")
lstm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lstm)


def hand_loop(model, optimizer, data, steps, seq_len):
    """The same steps as train(), written out with nothing else."""
    state, i = None, 0
    for _ in range(steps):
        if i + 2 > len(data):
            i, state = 0, None
        t = min(seq_len, len(data) - 1 - i)
        log_probs, state = model(data[i : i + t], state)
        state = tuple(s.detach() for s in state)
        loss = F.nll_loss(log_probs.flatten(0, 1), data[i + 1 : i + 1 + t].flatten())
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        i += t
    return loss.item()  # waits for the device, as train()'s last log line does


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    text = lstm.counting_text(8000, 0)
    vocab = sorted(set(text))
    data = torch.tensor([vocab.index(ch) for ch in text])
    n = len(data) // args.batch_size
    data = data[: n * args.batch_size].view(args.batch_size, n).T.contiguous().to(args.device)
    tokens = args.steps * args.batch_size * args.seq_len
    rates = {"train()": [], "hand loop": []}
    for _ in range(args.repeats):
        for name in rates:
            torch.manual_seed(0)
            model = lstm.CharLSTM(len(vocab), args.hidden_size).to(args.device)
            optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
            start = time.perf_counter()
            if name == "train()":
                with contextlib.redirect_stdout(io.StringIO()):  # its one log line, unprinted
                    lstm.train(model, optimizer, data, args.steps, args.seq_len, args.steps)
            else:
                hand_loop(model, optimizer, data, args.steps, args.seq_len)
            rates[name].append(tokens / (time.perf_counter() - start))
    for name, values in rates.items():
        print(f"{name:10} median {statistics.median(values):,.0f} tokens/s "
              f"({', '.join(f'{v:,.0f}' for v in values)})")


if __name__ == "__main__":
    main()
