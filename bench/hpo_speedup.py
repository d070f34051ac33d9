"""HPO speed-up: the same ASHA search on full data and at r = 0.3 and 0.1, picks retrained on full data.

    python bench/hpo_speedup.py --quick      # ResNet-8, CIFAR-10 subset, 2 CPU cores

Prints wall-time ratio, data-pass ratio and the retrained test accuracy of each run's best
configuration, and writes bench/results/hpo_speedup*.json. Targets: wall-time ratio <= 1.3 x r,
retrained accuracy of the proxy's pick within 1 point of the baseline's pick.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, default_cifar10, machine, write_results  # noqa: E402

from asp_tune.tune.compare import comparison_markdown, run_compare  # noqa: E402
from asp_tune.tune.runner import HpoSettings  # noqa: E402
from asp_tune.tune.space import SearchSpace, load_space  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--data-dir", default=default_cifar10())
    p.add_argument("--space", default=str(REPO / "search_spaces" / "resnet8_cifar10_cpu.yaml"))
    p.add_argument("--num-samples", type=int, default=None)
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--retrain-seeds", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--gpus-per-trial", type=float, default=0.0)
    p.add_argument("--first-epoch-full", choices=["true", "false"], default="true",
                   help="train the first epoch of every trial on all data (paper Algorithm 1)")
    p.add_argument("--out-dir", default=None)
    args = p.parse_args()
    space = load_space(args.space)
    fixed = {**space.fixed, "data_dir": args.data_dir}
    fixed["first_epoch_full"] = args.first_epoch_full == "true"
    if args.quick:
        fixed.update(subset=3000, test_subset=1000, epochs=6)
    space = SearchSpace(space.name, fixed, space.params)
    base = HpoSettings(space=space, algo="asha", ratio=1.0, ratio_schedule="constant", metric="mixture",
                       num_samples=args.num_samples or (4 if args.quick else 16), max_concurrent=args.max_concurrent,
                       device=args.device, gpus_per_trial=args.gpus_per_trial, verbose=0,
                       storage_path=str(Path(args.out_dir or REPO / "bench" / "results") / "ray"))
    res = run_compare(base, [1.0, 0.3, 0.1], retrain_seeds=args.retrain_seeds or (2 if args.quick else 3))
    table = res["table"]
    full = table[table["ratio"] == 1.0].iloc[0]
    print(comparison_markdown(table, f"HPO speed-up: {space.name}, ASHA, {base.num_samples} trials"))
    rows = []
    for _, r in table.iterrows():
        wall_ratio = r["wall_time_s"] / full["wall_time_s"]
        pass_ratio = r["data_passes_total"] / full["data_passes_total"]
        gap = 100 * (full["retrained_test_mean"] - r["retrained_test_mean"])
        rows.append({"ratio": r["ratio"], "wall_ratio": wall_ratio, "data_pass_ratio": pass_ratio,
                     "retrained_test_mean": r["retrained_test_mean"], "retrained_test_std": r["retrained_test_std"],
                     "accuracy_gap_points": gap, "wall_target_met": bool(wall_ratio <= 1.3 * r["ratio"]),
                     "accuracy_target_met": bool(gap <= 1.0), "best_config": r["best_config"]})
        print(f"r={r['ratio']:<4} wall ratio {wall_ratio:.3f} (target <= {1.3 * r['ratio']:.2f}) | data-pass ratio "
              f"{pass_ratio:.3f} | retrained test {100 * r['retrained_test_mean']:.2f} "
              f"(gap {gap:+.2f} points, target <= 1)")
    name = "hpo_speedup" + ("-quick" if args.quick else "") + ("" if fixed["first_epoch_full"] else "-no-full-first")
    path = write_results(name, {"machine": machine(), "space": space.name, "fixed": fixed,
                                "num_samples": base.num_samples, "rows": rows,
                                "table": json.loads(table.to_json(orient="records"))}, args.out_dir)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
