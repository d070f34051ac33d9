"""HPO speed-up: the same ASHA search on full data and at r = 0.3 and 0.1, picks retrained on full data.

Each proxy ratio runs twice: proxy-only (``--decide proxy --min-first-rung-steps 0``: the best proxy score
picks, as before full data decided) and the default (the first rung lengthened to 16 optimiser steps,
the top rung on all the data, the pick made there), so the price of checking on full data is seen.

    python bench/hpo_speedup.py --quick      # ResNet-8, 3k CIFAR-10 images, 2 CPU cores (~10 min)
    python bench/hpo_speedup.py              # trials of a minute or more each on the CPU (~15 min with --retrain-seeds 1)
    python bench/hpo_speedup.py --device cuda --gpus-per-trial 0.5 --subset 0

Fair timing: Ray is started, and its worker processes warmed up, before any timed search; each
repeat runs the searches in the opposite order of the one before (full data first, then last). The
wall ratio of each repeat is paired with that repeat's full-data search; the median over repeats
is the figure, with the lowest and highest beside it. For every search the trials' start-up, training and validation
seconds are reported apart, and what is left of the wall time (Ray scheduling, checkpoints,
reports) as "other". Each search's best configuration is retrained on full data.
Targets: quick median wall ratio <= 0.25 at r = 0.1 and <= 0.45
at r = 0.3; the full mode's <= 0.15 at r = 0.1; data-pass ratio <= 0.12 at r = 0.1, retrained
accuracy of the pick within 0.3 points.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, default_cifar10, machine, mean_std, spread, write_results  # noqa: E402

from asp_tune.tune.builtin import retrain_full_data  # noqa: E402
from asp_tune.tune.builtin import run_hpo  # noqa: E402
from asp_tune.tune.session import ensure_ray  # noqa: E402
from asp_tune.tune.settings import HpoSettings  # noqa: E402
from asp_tune.tune.space import SearchSpace, load_space  # noqa: E402

#: (ratio, who decides): the full-data search, then each proxy ratio proxy-only and with full data deciding.
SEARCHES = ((1.0, "proxy"), (0.3, "proxy"), (0.3, "full"), (0.1, "proxy"), (0.1, "full"))
TARGETS = {0.3: 0.45, 0.1: 0.25}  # quick mode, proxy-only
FULL_TARGETS = {0.1: 0.15}  # trials of a minute or more


def label(search: tuple[float, str]) -> str:
    ratio, decide = search
    return "1.0" if ratio == 1.0 else f"{ratio} {'full decides' if decide == 'full' else 'proxy-only'}"


def warm_up(workers: int) -> None:
    """Start Ray's worker processes before anything is timed."""
    import ray

    @ray.remote(num_cpus=1)
    def noop(i: int) -> int:
        import torch  # noqa: F401 - the import is the warm-up

        return i

    ray.get([noop.remote(i) for i in range(workers)])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--data-dir", default=default_cifar10())
    p.add_argument("--space", default=str(REPO / "search_spaces" / "resnet8_cifar10_cpu.yaml"))
    p.add_argument("--subset", type=int, default=None, help="training images (0: all)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--num-samples", type=int, default=None)
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--repeats", type=int, default=None,
                   help="each repeat reverses the order of the searches (default: 5 quick, 2 full)")
    p.add_argument("--retrain-seeds", type=int, default=None)
    p.add_argument("--ratio-schedule", default=HpoSettings.ratio_schedule,
                   help="of the proxy searches [default: asp-tune hpo's, %(default)s]")
    p.add_argument("--metric", default="auto", help="of the proxy searches [default: asp-tune hpo's, auto]")
    p.add_argument("--device", default="auto")
    p.add_argument("--gpus-per-trial", type=float, default=0.0)
    p.add_argument("--first-epoch-full", choices=["auto", "true", "false"], default="auto",
                   help="auto: the HPO default (no full first pass under early stopping)")
    p.add_argument("--out-dir", default=None)
    p.add_argument("--render", default=None, metavar="JSON",
                   help="write a results file's .txt table again from its JSON rows, running nothing")
    args = p.parse_args()
    if args.render:
        return render(Path(args.render), args.retrain_seeds)
    args.repeats = args.repeats or (5 if args.quick else 2)
    targets = TARGETS if args.quick else FULL_TARGETS
    space = load_space(args.space)
    fixed = {**space.fixed, "data_dir": args.data_dir}
    if args.quick:
        fixed.update(subset=3000, test_subset=1000, epochs=6)
    else:
        fixed.update(subset=10000, test_subset=2000, epochs=8)  # a full-data trial: about 80 s
    if args.subset is not None:
        fixed["subset"] = args.subset or None
    if args.epochs:
        fixed["epochs"] = args.epochs
    selection = {} if args.first_epoch_full == "auto" else {"first_epoch_full": args.first_epoch_full == "true"}
    space = SearchSpace(space.name, fixed, space.params)
    base = HpoSettings(space=space, algo="asha", ratio=1.0, ratio_schedule="dynamic", metric="none",
                       num_samples=args.num_samples or 8, max_concurrent=args.max_concurrent,
                       device=args.device, gpus_per_trial=args.gpus_per_trial, verbose=0, selection=selection,
                       storage_path=str(Path(args.out_dir or REPO / "bench" / "results") / "ray"))
    ensure_ray()
    warm_up(args.max_concurrent)
    runs: dict[str, list[dict]] = {label(x): [] for x in SEARCHES}
    for repeat in range(args.repeats):
        order = SEARCHES if repeat % 2 == 0 else tuple(reversed(SEARCHES))
        for r, decide in order:
            settings = dataclasses.replace(base, ratio=r, metric="none" if r == 1.0 else args.metric,
                                           ratio_schedule="constant" if r == 1.0 else args.ratio_schedule,
                                           decide=decide, min_first_rung_steps=0 if decide == "proxy" else
                                           HpoSettings.min_first_rung_steps)
            s = run_hpo(settings).summary
            t = s["trial_seconds"]
            other = max(0.0, s["search_wall_time_s" if "search_wall_time_s" in s else "wall_time_s"]
                        - sum(t.values()) / args.max_concurrent)
            full = s.get("full_data") or {}
            runs[label((r, decide))].append({
                "repeat": repeat, "wall_time_s": s["wall_time_s"], "data_passes": s["data_passes_total"],
                "startup_s": t["startup"], "training_s": t["training"], "validation_s": t["validation"],
                "other_s": other, "best_config": s["best_config"], "first_epoch_full": s["first_epoch_full"],
                "metric": s["metric"], "ratio_schedule": s["ratio_schedule"], "decided_by": s["decided_by"],
                "full_data_share": (full.get("cost") or {}).get("share_of_wall"),
                "first_rung_change": s.get("first_rung_change"), "kendall_tau": full.get("kendall_tau")})
            print(f"repeat {repeat} {label((r, decide))}: wall {s['wall_time_s']:.1f} s, {s['data_passes_total']:.2f} "
                  f"passes, trial start-up {t['startup']:.1f} s, training {t['training']:.1f} s, validation "
                  f"{t['validation']:.1f} s, other {other:.1f} s", flush=True)
    seeds = list(range(args.retrain_seeds or (2 if args.quick else 3)))
    rows = []
    full_wall = np.mean([x["wall_time_s"] for x in runs["1.0"]])
    full_passes = np.mean([x["data_passes"] for x in runs["1.0"]])
    retrained = {}
    for name in runs:
        pick = runs[name][-1]["best_config"]
        res = retrain_full_data(space, pick, int(fixed["epochs"]), seeds, args.device, 1.0, args.gpus_per_trial)
        retrained[name] = [x["test_accuracy"] for x in res]
    for (r, decide), name in ((x, label(x)) for x in SEARCHES):
        wall = np.mean([x["wall_time_s"] for x in runs[name]])
        mean = lambda key: float(np.mean([x[key] for x in runs[name]]))  # noqa: E731
        paired = [x["wall_time_s"] / f["wall_time_s"] for x, f in zip(runs[name], runs["1.0"])]  # same repeat
        gap = 100 * (np.mean(retrained["1.0"]) - np.mean(retrained[name]))
        shares = [x["full_data_share"] for x in runs[name] if x["full_data_share"] is not None]
        rows.append({"search": name, "ratio": r, "decide": decide, "wall_s": float(wall),
                     "full_data_share": float(np.mean(shares)) if shares else None,
                     "wall_s_per_repeat": [x["wall_time_s"] for x in runs[name]],
                     "wall_ratio": float(np.median(paired)), "wall_ratio_min": float(np.min(paired)),
                     "wall_ratio_max": float(np.max(paired)), "wall_ratio_per_repeat": paired,
                     "wall_ratio_of_means": float(wall / full_wall), "data_pass_ratio": mean("data_passes") / full_passes,
                     "startup_s": mean("startup_s"), "training_s": mean("training_s"),
                     "validation_s": mean("validation_s"), "other_s": mean("other_s"),
                     "retrained_test_mean": float(np.mean(retrained[name])),
                     "retrained_test_std": spread(retrained[name]),
                     "retrained_test_per_seed": retrained[name],
                     "accuracy_gap_points": float(gap), "best_config": runs[name][-1]["best_config"],
                     "wall_target": targets.get(r) if decide == "proxy" else None,
                     "first_epoch_full": runs[name][-1]["first_epoch_full"],
                     "first_rung_change": runs[name][-1]["first_rung_change"]})
    head = (f"HPO speed-up: {space.name}, ASHA, {base.num_samples} trials x {fixed['epochs']} epochs, proxies "
            f"{args.ratio_schedule} / {runs[label(SEARCHES[-1])][-1]['metric']}, "
            f"{args.max_concurrent} at a time, subset {fixed.get('subset')}, {args.repeats} repeats in alternating "
            "order (Ray started and warmed up first)")
    text = "\n".join([head, ""] + table_lines(rows))
    print(text)
    name = "hpo_speedup" + ("-quick" if args.quick else "") + (
        "" if args.ratio_schedule == HpoSettings.ratio_schedule else f"-{args.ratio_schedule}") + (
        "" if args.first_epoch_full == "auto" else f"-first-epoch-full-{args.first_epoch_full}")
    path = write_results(name, {"machine": machine(), "command": " ".join(sys.argv), "space": space.name, "fixed": fixed,
                                "num_samples": base.num_samples, "rows": rows,
                                "runs": runs}, args.out_dir)
    path.with_suffix(".txt").write_text(text + "\n")
    print(f"wrote {path}")
    return 0


def table_lines(rows: list[dict]) -> list[str]:
    """The results table: one row per search; the retrained pick's test accuracy as mean ± sample std over the
    retrain seeds (``x (n=1)`` for one). Rows of files written before full data could decide (no ``search``) keep
    that table's columns."""
    decides = any("search" in x for x in rows)
    lines = ["| search | wall s (mean) | median wall ratio [min, max] (target) | data-pass ratio | full-data share | "
             "trial start-up s | training s | validation s | other s | retrained test % (gap) |",
             "|---|---|---|---|---|---|---|---|---|---|"] if decides else [
             "| r | wall s (mean) | median wall ratio [min, max] (target) | data-pass ratio | "
             "trial start-up s | training s | validation s | other s | retrained test % (gap) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for x in rows:
        target = f" (<= {x['wall_target']}: {'met' if x['wall_ratio'] <= x['wall_target'] else 'not met'})" \
            if x.get("wall_target") else ""
        share = "" if x.get("full_data_share") is None else f"{100 * x['full_data_share']:.0f}%"
        lines.append(f"| {x.get('search', x['ratio'])} | {x['wall_s']:.1f} | {x['wall_ratio']:.3f} "
                     f"[{x['wall_ratio_min']:.3f}, {x['wall_ratio_max']:.3f}]{target} | {x['data_pass_ratio']:.3f} | "
                     + (f"{share} | " if decides else "") +
                     f"{x['startup_s']:.1f} | {x['training_s']:.1f} | {x['validation_s']:.1f} | {x['other_s']:.1f} | "
                     f"{mean_std(x['retrained_test_per_seed'], 2, scale=100)} ({x['accuracy_gap_points']:+.2f}) |")
    lines.append("\nStart-up, training and validation are summed over trials; other = the search's wall - their sum / "
                 "concurrency (Ray scheduling, checkpoints, reports)." + (
                     " Full-data share: the part of the wall time the full-data top rung and any audit took "
                     "(summary.json, full_data.cost)." if decides else "") +
                 " Retrained test %: the last repeat's pick retrained on full data, mean ± sample std over the "
                 "retrain seeds; gap: full data's mean minus this one's.")
    for x in rows:
        change = x.get("first_rung_change")
        if change:
            lines.append(f"{x['search']}: the first rung was lengthened from {change['steps'][0]} to "
                         f"{change['steps'][1]} optimiser steps (grace period {change['grace_period'][1]}, ratio "
                         f"{change['ratio'][1]:g}).")
    return lines


def render(path: Path, retrain_seeds: int | None) -> int:
    """``--render``: the .txt table written again from the JSON's rows (its first line kept). A file written before
    rows kept their retrained values per seed holds only their mean and ddof-0 std: with ``--retrain-seeds`` 1 the
    value is the mean, with 2 the two values are mean - std and mean + std (exact for two values)."""
    data = json.loads(path.read_text())
    rebuilt = False
    for x in data["rows"]:
        if "retrained_test_per_seed" not in x:
            m, s = x["retrained_test_mean"], x["retrained_test_std"]
            if retrain_seeds == 1 and s == 0:
                x["retrained_test_per_seed"] = [m]
            elif retrain_seeds == 2:
                x["retrained_test_per_seed"] = [m - s, m + s]
            else:
                raise SystemExit(f"{path} keeps no retrained values per seed: give --retrain-seeds 1 or 2 (as run)")
            x["retrained_test_std"] = spread(x["retrained_test_per_seed"])
            x["retrained_per_seed_rebuilt"] = retrain_seeds
        rebuilt = rebuilt or "retrained_per_seed_rebuilt" in x  # said again by every later render
    txt = path.with_suffix(".txt")
    head = txt.read_text().splitlines()[0] if txt.exists() else f"HPO speed-up ({path.name})"
    note = (f"\nWritten again from {path.name} by --render; the retrained values per seed were rebuilt from the mean "
            f"and ddof-0 std the file kept ({data['rows'][0].get('retrained_per_seed_rebuilt')} retrain seed(s), as run)."
            ) if rebuilt else \
        f"\nWritten again from {path.name} by --render."
    text = "\n".join([head, ""] + table_lines(data["rows"])) + note
    path.write_text(json.dumps(data, indent=2) + "\n")
    txt.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
