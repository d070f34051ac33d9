"""Does a search killed mid-way and resumed end where the uninterrupted one ends?

    python bench/resume_exact.py --quick              # Hyperband and BOHB, 2 kills each: about 8 minutes on 2 cores
    python bench/resume_exact.py --algos hyperband --kill-after 18,20,22,25,28,33,36,40,58

Per algorithm, one uninterrupted ``asp-tune hpo`` search of the embedded digits space (17 trials, 9 epochs,
``--ratio 0.5 --decide proxy``, 2 trials at once), then for each ``--kill-after N`` the same search with its
driver's process group SIGKILLed once its trials have written N reports, and ``--resume``d. Compared: each
trial's epochs (trials matched by the number their searcher gave them; a trial made again after the resume,
under a new id, counts by its later folder), ``epochs_total``, ``data_passes_total``, the pick and the trials
that failed (a checkpoint the kill cut short fails its trial on the resume). A kill
lands wherever the driver is at that moment, so the same N is not the same interrupt twice.
Results: bench/results/resume_exact[_quick].json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, publish  # noqa: E402

SEARCH = ("--space", str(REPO / "search_spaces" / "digits_mlp.yaml"), "--ratio", "0.5", "--num-samples", "17",
          "--max-epochs", "9", "--max-concurrent", "2", "--checkpoint-every-s", "1", "--verbose", "0",
          "--decide", "proxy")


def hpo(algo: str, storage: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "asp_tune", "hpo", "--algo", algo, *SEARCH, "--storage-path", str(storage),
            "--out", str(out), *extra]


def trial_epochs(experiment: Path) -> dict[int, int]:
    """Each trial's last epoch, keyed by the number its searcher gave it (the folder name's third part)."""
    epochs: dict[int, int] = {}
    for folder in sorted(p for p in experiment.iterdir() if p.is_dir()):
        number = int(folder.name.split("_")[3])
        file = folder / "result.json"
        lines = file.read_text().splitlines() if file.exists() else []
        reached = max((json.loads(line)["training_iteration"] for line in lines if line.strip()), default=0)
        epochs[number] = max(epochs.get(number, 0), reached)
    return dict(sorted(epochs.items()))


def reports_written(storage: Path) -> int:
    found = list(storage.glob("asp-*"))
    if not found:
        return 0
    return sum(len((t / "result.json").read_text().splitlines()) for t in found[0].iterdir()
               if (t / "result.json").exists())


#: a resumed 17-trial search takes under a minute here; one still going after this is stuck
RESUME_TIMEOUT_S = 240


def run(cmd: list[str], env: dict[str, str], timeout: float | None = None) -> None:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")


def outcome(storage: Path, out: Path) -> dict[str, Any]:
    summary = json.loads((out / "summary.json").read_text())
    return {"epochs": trial_epochs(next(storage.glob("asp-*"))), "epochs_total": summary["epochs_total"],
            "data_passes_total": summary["data_passes_total"], "best_config": summary["best_config"],
            "failed": summary["num_failed"]}


def killed_and_resumed(algo: str, root: Path, after: int, env: dict[str, str]) -> dict[str, Any]:
    storage, out = root / "ray", root / "out"
    driver = subprocess.Popen(hpo(algo, storage, out), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    while reports_written(storage) < after:
        if driver.poll() is not None:
            raise SystemExit(f"the {algo} search finished before {after} reports: ask for fewer")
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    time.sleep(3)  # the reaper ends what Ray left
    experiment = next(storage.glob("asp-*"))
    before = sum(trial_epochs(experiment).values())
    try:
        run(hpo(algo, storage, out, "--resume", str(experiment)), env, timeout=RESUME_TIMEOUT_S)
    except subprocess.TimeoutExpired:  # a resume that never ends is a result too (docs/hpo.md: open)
        return {"epochs": trial_epochs(experiment), "epochs_total": None, "data_passes_total": None,
                "best_config": None, "failed": None, "epochs_before_kill": before, "hung": True}
    return {**outcome(storage, out), "epochs_before_kill": before, "hung": False}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Hyperband and BOHB, kills after 20 and 40 reports")
    parser.add_argument("--algos", default="hyperband,bohb")
    parser.add_argument("--kill-after", default="20,40", help="comma-separated report counts")
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    kills = [int(k) for k in args.kill_after.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="resume_exact_") as tmp:
        env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1", "HOME": str(Path(tmp) / "home")}
        for algo in args.algos.split(","):
            whole_root = Path(tmp) / f"{algo}_whole"
            start = time.perf_counter()
            run(hpo(algo, whole_root / "ray", whole_root / "out"), env)
            whole = outcome(whole_root / "ray", whole_root / "out")
            print(f"{algo}: uninterrupted {whole['epochs_total']} epochs, {time.perf_counter() - start:.0f} s",
                  flush=True)
            for after in kills:
                got = killed_and_resumed(algo, Path(tmp) / f"{algo}_{after}", after, env)
                differ = {n: (whole["epochs"].get(n), got["epochs"].get(n))
                          for n in sorted(set(whole["epochs"]) | set(got["epochs"]))
                          if whole["epochs"].get(n) != got["epochs"].get(n)}
                rows.append({"algo": algo, "kill_after_reports": after, "epochs_before_kill": got["epochs_before_kill"],
                             "uninterrupted_epochs": whole["epochs_total"], "resumed_epochs": got["epochs_total"],
                             "uninterrupted_passes": whole["data_passes_total"],
                             "resumed_passes": got["data_passes_total"],
                             "same_pick": got["best_config"] == whole["best_config"], "trials_differ": differ,
                             "resumed_failed_trials": got["failed"], "resume_hung": got["hung"]})
                print(f"  killed after {after} reports ({got['epochs_before_kill']} epochs done): "
                      f"{got['epochs_total']} epochs, same pick {rows[-1]['same_pick']}, differ {differ}, "
                      f"failed {got['failed']}", flush=True)
    table = ["| algorithm | killed after (reports) | epochs done then | epochs: uninterrupted / resumed | "
             "data passes: uninterrupted / resumed | same pick | trials that differ (epochs) | failed trials |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['algo']} | {r['kill_after_reports']} | {r['epochs_before_kill']} | "
                     f"{r['uninterrupted_epochs']} / {r['resumed_epochs'] if not r['resume_hung'] else '**hung**'} | "
                     f"{r['uninterrupted_passes']:.2f} / {r['resumed_passes'] or 0:.2f} | "
                     f"{'yes' if r['same_pick'] else '**no**'} | "
                     f"{r['trials_differ'] or 'none'} | {r['resumed_failed_trials']} |")
    publish(args.name or ("resume_exact_quick" if args.quick else "resume_exact"), rows, "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
