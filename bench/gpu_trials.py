"""A small search's trials through the trainable function, called directly, on the device Ray would give.

For machines where Ray itself cannot run (a GPU box that cannot receive Ray's wheel): each trial
runs ``proxy_trial`` with ``CUDA_VISIBLE_DEVICES`` set to the GPU id Ray would assign and
``device=auto``, reporting to a list and checkpointing to a folder. Then one trial is stopped
half-way and resumed from its checkpoint, as Ray would after a lost node, and compared with its
uninterrupted run.

    python bench/gpu_trials.py --data-dir ../shared/data/cifar10-jpg.tar.gz      # on a GPU machine
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_cifar10, machine, write_results  # noqa: E402


class FolderCheckpoint:
    """What a trial reports and is restored from: a folder (Ray's Checkpoint, without Ray)."""

    def __init__(self, path: str):
        self.path = path

    def as_directory(self):
        return contextlib.nullcontext(self.path)


def run_trial(config: dict, space, run: dict, keep: Path, stop_after: int | None = None,
              resume_from: Path | None = None) -> list[dict]:
    from asp_tune.tune.trainable import proxy_trial

    reports: list[dict] = []

    class Stop(Exception):
        pass

    def report(metrics: dict, checkpoint=None) -> None:
        reports.append(metrics)
        if checkpoint is not None:
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(checkpoint.path, keep)
        if stop_after is not None and metrics["epoch"] >= stop_after:
            raise Stop

    with contextlib.suppress(Stop):
        proxy_trial(config, space=space, run=run, threads=4, report=report,
                    get_checkpoint=lambda: FolderCheckpoint(str(resume_from)) if resume_from else None,
                    make_checkpoint=FolderCheckpoint)
    return reports


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=default_cifar10())
    p.add_argument("--gpu", default="0", help="the GPU id Ray would assign (CUDA_VISIBLE_DEVICES)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--subset", type=int, default=10000)
    p.add_argument("--out-dir", default=None)
    args = p.parse_args()
    os.environ["CUDA_VISIBLE_DEVICES"] = args.gpu  # before torch initialises CUDA, as in a Ray worker
    import torch

    from asp_tune.tune.space import parse_space

    space = parse_space({"name": "gpu", "fixed": {"dataset": "cifar10", "data_dir": args.data_dir, "model": "resnet8",
                                                  "epochs": args.epochs, "subset": args.subset, "test_subset": 1000},
                         "params": {"lr": {"type": "choice", "values": [0.05, 0.1, 0.2, 0.4]}}})
    run = {"ratio": 0.3, "metric": "loss", "ratio_schedule": "dynamic", "seed": 0, "device": "auto"}
    results = {"machine": machine(), "cuda_visible_devices": args.gpu, "trials": []}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for i, lr in enumerate((0.05, 0.1, 0.2, 0.4)):
            start = time.perf_counter()
            reports = run_trial({"lr": lr}, space, run, root / f"t{i}")
            last = reports[-1]
            row = {"lr": lr, "device": last["device"], "epochs": last["epoch"], "val_accuracy": last["val_accuracy"],
                   "data_passes": last["data_passes"], "wall_s": time.perf_counter() - start,
                   "startup_s": last["startup_seconds"], "train_s": last["train_seconds_total"]}
            results["trials"].append(row)
            print(f"lr {lr}: {row['device']}, {row['epochs']} epochs, val {row['val_accuracy']:.4f}, "
                  f"{row['data_passes']:.2f} passes, wall {row['wall_s']:.1f} s (start-up {row['startup_s']:.1f} s)")
        half = args.epochs // 2
        straight = run_trial({"lr": 0.1}, space, run, root / "straight")
        run_trial({"lr": 0.1}, space, run, root / "lost", stop_after=half)
        resumed = run_trial({"lr": 0.1}, space, run, root / "resumed", resume_from=root / "lost")
        results["resume"] = {
            "stopped_after": half, "restored_epoch": resumed[0].get("restored_epoch"),
            "same_selections": [r["selected"] for r in straight[half:]] == [r["selected"] for r in resumed],
            "final_val_straight": straight[-1]["val_accuracy"], "final_val_resumed": resumed[-1]["val_accuracy"],
        }
    print(f"resume on the GPU: restored epoch {results['resume']['restored_epoch']}, same selections "
          f"{results['resume']['same_selections']}, final val {results['resume']['final_val_resumed']:.4f} "
          f"(uninterrupted {results['resume']['final_val_straight']:.4f})")
    print(f"cuda available: {torch.cuda.is_available()}, device name: "
          f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-'}")
    path = write_results(f"gpu_trials-{'cuda' if torch.cuda.is_available() else 'cpu'}", results, args.out_dir)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
