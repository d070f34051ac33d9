"""What one trainer checkpoint costs as a run grows: milliseconds to save it and its size, after 100 and 400
epochs (digits MLP, 400 samples, r = 0.5, one thread; the median of 10 saves). A trial checkpoints at its
scheduler's rungs, on its interval and at its end, so this cost is paid again and again in long searches.

    python bench/checkpoint_cost.py              # about a minute on 2 cores
    PYTHONPATH=OTHER_CHECKOUT python bench/checkpoint_cost.py   # the same for another version, to compare
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from asp_tune import TrainConfig, Trainer, load_dataset


def main() -> None:
    torch.set_num_threads(1)
    data = load_dataset("digits", seed=0, subset=400)
    for epochs in (100, 400):
        trainer = Trainer(TrainConfig(epochs=epochs, ratio=0.5, metric="loss", subset=400), data=data)
        for _ in range(epochs):
            trainer.train_epoch()
        with tempfile.TemporaryDirectory() as folder:
            path, seconds = Path(folder) / "checkpoint.pt", []
            for _ in range(10):
                started = time.perf_counter()
                trainer.save_checkpoint(path)
                seconds.append(time.perf_counter() - started)
            size = path.stat().st_size
        print(f"{epochs} epochs: {statistics.median(seconds) * 1000:.1f} ms per checkpoint, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
