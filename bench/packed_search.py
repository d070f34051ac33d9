"""Packed Ray searches against one trial per process: the same ASHA search, the same seed, run three times in one
Ray session: ``--pack 1`` (one trial per process), ``--pack K`` (forced) and ``--pack auto``.

Reported per arm: the wall time a user waits for (the job's set-up, ``auto``'s measurement included, plus the
search), with the trials' summed start-up, training and validation seconds beside it, the pack size and
reason, and the pick. ASHA decides asynchronously: which trials a rung stops depends on the order results
arrive in, packed or not, so the stopped trials may differ between arms of the same search (Hyperband's
decisions do not: ``tests/test_packed_search.py`` asserts the same ones); the pick's validation score is
reported with it.

The three arms run in an order that rotates with the seed (seed 0: 1, K, auto; seed 1: K, auto, 1; seed 2:
auto, 1, K), so no arm is always the first after Ray's cold start; the order is recorded. Wall x is always
against ``--pack 1``.

    python bench/packed_search.py --quick      # about 3 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import publish  # noqa: E402

from asp_tune.tune.builtin import job_from_settings  # noqa: E402
from asp_tune.tune.run import run_search  # noqa: E402
from asp_tune.tune.session import ensure_ray  # noqa: E402
from asp_tune.tune.settings import HpoSettings  # noqa: E402
from asp_tune.tune.space import parse_space  # noqa: E402

PARAMS = {"lr": {"type": "loguniform", "low": 0.003, "high": 0.3},
          "weight_decay": {"type": "loguniform", "low": 1e-5, "high": 3e-3},
          "momentum": {"type": "uniform", "low": 0.5, "high": 0.95}}
PROBLEMS = {  # fixed settings, configurations, configurations with --quick
    "digits-mlp": ({"dataset": "digits", "model": "mlp", "batch_size": 64, "epochs": 9}, 64, 27),
    "tabular-mlp": ({"dataset": "trust:tabular", "model": "mlp", "model_args": {"hidden": 128}, "batch_size": 128,
                     "epochs": 9}, 64, 27),
}


def run_arm(name: str, pack: str, count: int, seed: int, forced: int, storage: str) -> dict:
    fixed, _, _ = PROBLEMS[name]
    space = parse_space({"name": name, "fixed": fixed, "params": PARAMS})
    settings = HpoSettings(space=space, algo="asha", num_samples=count, ratio=0.3, seed=seed, pack=pack,
                           decide="proxy", verbose=0, storage_path=storage)
    start = time.perf_counter()
    job = job_from_settings(settings)
    setup = time.perf_counter() - start
    result = run_search(job)
    wall = time.perf_counter() - start
    s, t = result.summary, result.trials
    return {"pack": pack, "size": s["pack"]["size"], "reason": s["pack"]["reason"], "wall_s": wall, "setup_s": setup,
            "search_s": s["wall_time_s"], **{f"{k}_s": v for k, v in s["trial_seconds"].items()},
            "fused_epochs": (s.get("packs") or {}).get("fused_epochs", 0), "best_config": s["best_config"],
            "best_score": s["best_score"], "epochs_total": s["epochs_total"],
            "stopped": int((t["status"] == "STOPPED").sum())}


def markdown(rows: list[dict]) -> str:
    lines = ["| problem | configurations | arm | pack | wall s (set-up / search) | trials' start-up / training / "
             "validation s | wall x against one per process | pick's val score | same pick |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = next(a for a in r["arms"] if a["pack"] == "1")
        for arm in r["arms"]:
            lines.append(f"| {r['problem']} | {r['configurations']} | --pack {arm['pack']} | {arm['size']} | "
                         f"{arm['wall_s']:.1f} ({arm['setup_s']:.1f} / {arm['search_s']:.1f}) | "
                         f"{arm['startup_s']:.1f} / {arm['training_s']:.1f} / {arm['validation_s']:.1f} | "
                         f"{base['wall_s'] / arm['wall_s']:.2f} | {arm['best_score']:.4f} | "
                         f"{arm['best_config'] == base['best_config']} |")
    reasons = [f"- {r['problem']}, --pack auto: {a['reason']}" for r in rows for a in r["arms"] if a["pack"] == "auto"]
    return "\n".join(lines + [""] + reasons) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer configurations")
    parser.add_argument("--pack", type=int, default=16, help="the forced pack size set beside 1 and auto")
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = parser.parse_args()
    import tempfile

    ensure_ray(num_cpus=2)
    rows = []
    with tempfile.TemporaryDirectory() as storage:
        for name in args.problems.split(","):
            count = PROBLEMS[name][2] if args.quick else PROBLEMS[name][1]
            packs = ["1", str(args.pack), "auto"]
            order = packs[args.seed % 3:] + packs[:args.seed % 3]  # rotate with the seed: no arm always first
            done = {pack: run_arm(name, pack, count, args.seed, args.pack, storage) for pack in order}
            arms = [done[pack] for pack in packs]
            rows.append({"problem": name, "configurations": count, "arms": arms, "order": order})
            print(f"{name}: " + ", ".join(f"--pack {a['pack']} {a['wall_s']:.1f} s" for a in arms), flush=True)
    table = markdown(rows)
    publish(f"packed-search-{'quick' if args.quick else 'full'}-cpu", rows, table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
