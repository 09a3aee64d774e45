"""The README's timing table: each command run N times in an empty folder, its median wall time.
`python .ci/time_scripts.py [--repeats 5]`, on a machine with nothing else running."""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "python -c 'import torch' and a first optimizer": [
        sys.executable, "-c", "import torch; torch.optim.SGD([torch.zeros(1)])"],
    "python -c 'import torchvision'": [sys.executable, "-c", "import torchvision"],
    "python 01_model.py": [sys.executable, ROOT / "01_model.py"],
    "python 02_dataset.py": [sys.executable, ROOT / "02_dataset.py"],
    "python 03_transforms.py": [sys.executable, ROOT / "03_transforms.py"],
    "python 04_dataloader.py": [sys.executable, ROOT / "04_dataloader.py"],
    "python 04_dataloader.py --num-workers 0": [sys.executable, ROOT / "04_dataloader.py",
                                                 "--num-workers", "0"],
    "python 04_dataloader.py --multiprocessing-context spawn": [
        sys.executable, ROOT / "04_dataloader.py", "--multiprocessing-context", "spawn"],
    "python 04_dataloader.py --multiprocessing-context forkserver": [
        sys.executable, ROOT / "04_dataloader.py", "--multiprocessing-context", "forkserver"],
    "python 05_lstm.py": [sys.executable, ROOT / "05_lstm.py"],
    "python 06_distributed.py": [sys.executable, ROOT / "06_distributed.py"],
    "torchrun --standalone --nproc-per-node 2 06_distributed.py": [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        ROOT / "06_distributed.py"],
}

parser = argparse.ArgumentParser()
parser.add_argument("--repeats", type=int, default=5)
parser.add_argument("--only", help="run the commands whose name contains this")
args = parser.parse_args()

for name, command in COMMANDS.items():
    if args.only and args.only not in name:
        continue
    seconds = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            subprocess.run(command, cwd=folder, check=True, capture_output=True,
                           env={**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning"})
            seconds.append(time.perf_counter() - start)
    print(f"{name:60} median {statistics.median(seconds):5.2f} s "
          f"({', '.join(f'{s:.2f}' for s in seconds)})", flush=True)
