"""An Optuna study in packs against the same study one trial at a time, in one process, paired by seed.

For each problem and seed, one Optuna study (TPE sampler, seeded, ``constant_liar``) of N trials over
learning rate, weight decay and momentum, each trial on proxy data (r = 0.3), runs through
``asp_tune.tune.optimize_in_packs`` twice: ``pack_size=1`` (what ``study.optimize`` with an objective that
trains one configuration does) and ``pack_size=--pack`` (default ``auto``). Two pruners: none (every trial
trains all its epochs) and Optuna's ``SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)`` (ASHA).
Reported, mean +- std over the seeds: wall time with its breakdown (building trainers, training with
validation, the sampler and pruner), trial-epochs trained, the ratio of wall times, and the pick's score when
retrained on all the data (a pack's trials are asked for at once and judged together, so the picks may
differ).

The arms alternate which runs first from seed to seed; an untimed small study loads the data first.
Beside the means, the table lists each seed's wall and training ratios and how many seeds met the issue's
targets (wall >= 1.5x, training >= 2.5x): a mean whose spread covers 1.0 is not a met target.
A problem asked for that cannot run (CIFAR-10's archive missing) stops the run with an error.

    python bench/packed_study.py --quick      # about 2 minutes on 2 CPU cores
    python bench/packed_study.py --render bench/results/packed-study-full-cpu.json   # its table again
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DeviceBusy, chosen_problems, default_cifar10, mean_std, publish  # noqa: E402

from asp_tune.tune.packed_study import optimize_in_packs  # noqa: E402

PARAMS = {"lr": {"type": "loguniform", "low": 10 ** -2.5, "high": 10 ** -0.5},
          "weight_decay": {"type": "loguniform", "low": 1e-5, "high": 10 ** -2.5},
          "momentum": {"type": "uniform", "low": 0.5, "high": 0.95}}
PROBLEMS = {
    "digits-mlp": ({"dataset": "digits", "model": "mlp", "batch_size": 64}, 64, 27),
    "tabular-mlp": ({"dataset": "trust:tabular", "model": "mlp", "model_args": {"hidden": 128}, "batch_size": 128},
                    64, 27),
    "cifar10-resnet8": ({"dataset": "cifar10", "model": "resnet8", "batch_size": 128, "subset": 5000,
                         "test_subset": 1000, "storage": "device"}, 32, 16),
}
PRUNERS = {"none": lambda: optuna.pruners.NopPruner(),
           "asha": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)}


def one_study(space: dict, trials: int, pruner: str, pack, seed: int, device: str) -> dict:
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)  # a pack's trials are asked together
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=PRUNERS[pruner]())
    with DeviceBusy(device) as busy:
        packed = optimize_in_packs(study, space, n_trials=trials, pack_size=pack, ratio=0.3, seed=seed, device=device,
                                   decide="proxy")  # both arms' picks are retrained below, outside the timing
    tick = time.perf_counter()
    full = packed.full_data_score(study.best_params)
    return {"wall_s": packed.wall_time_s, **packed.breakdown, "pack": packed.pack.size, "reason": packed.pack.reason,
            "trial_epochs": packed.fused_epochs + packed.alone_epochs, "fused_epochs": packed.fused_epochs,
            "best_proxy_score": study.best_value, "pick_full_data_score": full,
            "retrain_s": time.perf_counter() - tick, "device_busy_pct": busy.percent,
            "best_params": study.best_params}


def run_problem(name: str, quick: bool, pack, device: str, seeds: list[int]) -> list[dict]:
    fixed, count, quick_count = PROBLEMS[name]
    fixed = {**fixed, "epochs": 9}
    if name == "cifar10-resnet8":
        fixed["data_dir"] = default_cifar10()
        if quick:
            fixed.update(subset=2000, test_subset=500)
    space = {"name": name, "fixed": fixed, "params": PARAMS}
    trials = quick_count if quick else count
    warm = optuna.create_study(direction="maximize")
    optimize_in_packs(warm, {**space, "fixed": {**fixed, "epochs": 1}}, n_trials=2, pack_size=2, device=device)
    rows = []
    for pruner in PRUNERS:
        for seed in seeds:
            arms = {}
            order = [("one at a time", 1), ("packs", pack)]
            for label, size in (order if seed % 2 == 0 else order[::-1]):
                arms[label] = one_study(space, trials, pruner, size, seed, device)
            rows.append({"problem": name, "pruner": pruner, "seed": seed, "trials": trials, "arms": arms,
                         "wall_ratio": arms["one at a time"]["wall_s"] / arms["packs"]["wall_s"],
                         "train_ratio": arms["one at a time"]["train_s"] / max(arms["packs"]["train_s"], 1e-9)})
            print(f"{name} {pruner} seed {seed}: wall {arms['one at a time']['wall_s']:.1f} s one at a time, "
                  f"{arms['packs']['wall_s']:.1f} s in packs of {arms['packs']['pack']}", flush=True)
    return rows


def _ms(values: list[float], digits: int = 1) -> str:
    return mean_std(values, digits)  # the shared formatter: sample std, "x (n=1)" for one seed


TARGETS = {"wall_ratio": 1.5, "train_ratio": 2.5}  # the issue's, for 64 MLP configurations under ASHA


def markdown(rows: list[dict]) -> str:
    if not rows:
        return "No problem ran.\n"
    lines = ["| problem | pruner | trials | pack | one at a time: wall s (build / train / study) | packs: wall s "
             "(build / train / study) | trial-epochs one / packs | wall x | training x | pick on full data: one / "
             "packs |", "|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["problem"], r["pruner"]), []).append(r)
    for (problem, pruner), group in groups.items():
        one = [r["arms"]["one at a time"] for r in group]
        packs = [r["arms"]["packs"] for r in group]

        def cell(arms):
            return (f"{_ms([a['wall_s'] for a in arms])} ({statistics.fmean(a['startup_s'] for a in arms):.1f} / "
                    f"{statistics.fmean(a['train_s'] for a in arms):.1f} / "
                    f"{statistics.fmean(a['study_s'] for a in arms):.1f})")
        sizes = sorted({a["pack"] for a in packs})
        lines.append(
            f"| {problem} | {pruner} | {group[0]['trials']} | {'/'.join(map(str, sizes))} | {cell(one)} | "
            f"{cell(packs)} | {statistics.fmean(a['trial_epochs'] for a in one):.0f} / "
            f"{statistics.fmean(a['trial_epochs'] for a in packs):.0f} | {_ms([r['wall_ratio'] for r in group], 2)} | "
            f"{_ms([r['train_ratio'] for r in group], 2)} | {_ms([a['pick_full_data_score'] for a in one], 3)} / "
            f"{_ms([a['pick_full_data_score'] for a in packs], 3)} |")
    lines.append(f"\n{len(next(iter(groups.values())))} seeds each, paired; mean ± sample std (ddof 1).")
    lines += ["", "Per seed, and how many seeds met the targets (wall >= 1.5x, training >= 2.5x):", "",
              "| problem | pruner | seeds | wall x per seed | wall >= 1.5x | training x per seed | training >= 2.5x |",
              "|---|---|---|---|---|---|---|"]
    for (problem, pruner), group in groups.items():
        walls, trains = [r["wall_ratio"] for r in group], [r["train_ratio"] for r in group]
        lines.append(f"| {problem} | {pruner} | {', '.join(str(r['seed']) for r in group)} | "
                     f"{' / '.join(f'{w:.2f}' for w in walls)} | "
                     f"{sum(w >= TARGETS['wall_ratio'] for w in walls)} of {len(walls)} | "
                     f"{' / '.join(f'{t:.2f}' for t in trains)} | "
                     f"{sum(t >= TARGETS['train_ratio'] for t in trains)} of {len(trains)} |")
    return "\n".join(lines) + "\n"


def render(path: Path) -> int:
    """``--render``: the .md table written again from the JSON's rows, running nothing."""
    rows = json.loads(path.read_text())["rows"]
    text = markdown(rows)
    path.with_suffix(".md").write_text(text)
    print(text)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials and a smaller CIFAR-10 subset")
    parser.add_argument("--pack", default="auto", help="trials per pack, or auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--problems", default="digits-mlp,tabular-mlp")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    parser.add_argument("--render", default=None, metavar="JSON", help="write a results file's table again")
    args = parser.parse_args()
    if args.render:
        return render(Path(args.render))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pack = args.pack if args.pack == "auto" else int(args.pack)
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    problems = chosen_problems(parser, args.problems, PROBLEMS)  # asked by name: one that cannot run is an error
    rows = []
    for name in problems:
        rows += run_problem(name, args.quick, pack, args.device, seeds)
    publish(f"packed-study-{'quick' if args.quick else 'full'}-{args.device}", rows, markdown(rows), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
