"""asp_tune on a local multi-node Ray cluster: trial throughput, and how long faults cost.

On ``ray.cluster_utils.Cluster`` (a head without CPUs and one-CPU worker nodes, all on this machine):
- trial throughput: trials per minute of a tiny trainable (digits MLP) at 1, 2 and 4 concurrent
  trials, on as many worker nodes;
- node death: the time from removing the node a trial runs on to that trial's next report (it
  restarts from its checkpoint on another node);
- driver restart: the time from starting ``asp-tune hpo --resume`` after the driver was killed
  (SIGKILL) to the first new report.

``--part trials`` measures the fixed cost of a trial instead: ``asp-tune hpo --algo random`` of 8,
32, 128 and 256 tiny trials (digits MLP, 2 epochs), each command timed as a user waits for it. Per
command: its start-up (wall time before the search starts), the search's wall time split into the
trials' own seconds (start-up, training, validation, summed over trials and divided by the
concurrency) and the rest (Ray's scheduling, reports, checkpoints, state), and the bytes the driver
wrote. The cost of an added trial is the slope of the search's wall time between two sizes.
Target: <= 0.2 s per added trial, not growing from 8 to 256.

    python bench/scale.py                  # the cluster part, ~3 min on 2 cores
    python bench/scale.py --part trials    # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_results  # noqa: E402

from asp_tune.tune.builtin import run_hpo  # noqa: E402
from asp_tune.tune.settings import HpoSettings  # noqa: E402
from asp_tune.tune.space import parse_space  # noqa: E402
from asp_tune.tune.storage import trial_reports  # noqa: E402


def space(epochs: int) -> dict:
    return {"name": "scale", "fixed": {"dataset": "digits", "model": "mlp", "epochs": epochs, "subset": 400,
                                       "batch_size": 64},
            "params": {"lr": {"type": "loguniform", "low": 0.02, "high": 0.3}}}


def cluster_of(workers: int):
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(workers):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    return cluster


def close(cluster) -> None:
    import ray

    ray.shutdown()
    cluster.shutdown()


def poll(condition, timeout_s: float, step_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step_s)
    raise TimeoutError


def throughput(concurrency: int, trials: int, epochs: int, storage: Path) -> dict:
    cluster = cluster_of(concurrency)
    try:
        settings = HpoSettings(space=parse_space(space(epochs)), algo="random", num_samples=trials,
                               max_concurrent=concurrency, address=cluster.address, storage_path=str(storage),
                               verbose=0, name=f"throughput-{concurrency}")
        start = time.perf_counter()
        result = run_hpo(settings)
        wall = time.perf_counter() - start
    finally:
        close(cluster)
    return {"concurrent": concurrency, "trials": trials, "wall_s": wall, "trials_per_min": 60 * trials / wall,
            "nodes_used": int(result.trials["node_id"].nunique()), "failed": int(result.summary["num_failed"])}


def node_death(epochs: int, storage: Path) -> dict:
    cluster = cluster_of(2)
    try:
        settings = HpoSettings(space=parse_space({**space(epochs), "params": {"lr": {"type": "choice", "values": [0.05]}}}),
                               algo="random", num_samples=1, address=cluster.address, storage_path=str(storage),
                               verbose=0, max_failures=3, name="node-death")
        thread = threading.Thread(target=run_hpo, args=(settings,), daemon=True)
        thread.start()
        experiment = storage / "node-death"
        trial, node = poll(lambda: next(((t, trial_reports(t)[-1]["node_id"]) for t in experiment.glob("proxy_trial_*")
                                         if len(trial_reports(t)) >= 5), None), 120)
        cluster.remove_node(next(n for n in cluster.worker_nodes if n.node_id == node), allow_graceful=False)
        removed = time.monotonic()
        poll(lambda: any("restored_epoch" in r for r in trial_reports(trial)), 300)
        seconds = time.monotonic() - removed
        thread.join(timeout=300)
    finally:
        close(cluster)
    return {"node_death_to_next_report_s": seconds}


def driver_restart(epochs: int, storage: Path) -> dict:
    yaml = storage / "space.yaml"
    yaml.write_text(json.dumps(space(epochs)))  # JSON is YAML
    cmd = [sys.executable, "-m", "asp_tune", "hpo", "--space", str(yaml), "--algo", "random", "--num-samples", "2",
           "--max-concurrent", "2", "--ratio", "0.5", "--metric", "loss", "--storage-path", str(storage / "ray"),
           "--verbose", "0", "--out", str(storage / "out")]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    experiment = poll(lambda: next(iter((storage / "ray").glob("asp-*")), None), 120)
    poll(lambda: all(len(trial_reports(t)) >= 5 for t in experiment.glob("proxy_trial_*"))
         and len(list(experiment.glob("proxy_trial_*"))) == 2, 120)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    time.sleep(2)
    counts = {t: len(trial_reports(t)) for t in experiment.glob("proxy_trial_*")}
    start = time.monotonic()
    resumed = subprocess.Popen(cmd + ["--resume", str(experiment)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    poll(lambda: any(len(trial_reports(t)) > n for t, n in counts.items()), 300)
    seconds = time.monotonic() - start
    resumed.wait(timeout=600)
    return {"driver_restart_to_first_report_s": seconds, "resume_exit_code": resumed.returncode}


def trial_cost(trials: int, epochs: int, folder: Path) -> dict:
    """One ``asp-tune hpo`` command of ``trials`` tiny trials, timed from outside, with the bytes its
    driver process wrote (Ray's state, uploads and asp_tune's own files; its workers apart)."""
    import psutil

    folder.mkdir(parents=True)
    (folder / "space.yaml").write_text(json.dumps(space(epochs)))
    out = folder / "out"
    command = [sys.executable, "-m", "asp_tune", "hpo", "--space", str(folder / "space.yaml"), "--algo", "random",
               "--ratio", "0.5", "--metric", "loss", "--num-samples", str(trials), "--max-concurrent", "2",
               "--storage-path", str(folder / "ray"), "--verbose", "0", "--out", str(out)]
    started = time.perf_counter()
    driver = psutil.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    written = 0
    while driver.poll() is None:
        try:
            written = driver.io_counters().write_chars
        except psutil.Error:
            pass
        time.sleep(0.2)
    wall = time.perf_counter() - started
    if driver.returncode != 0:
        raise RuntimeError(f"hpo of {trials} trials failed: {driver.stderr.read().decode()[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    seconds = summary["trial_seconds"]
    concurrent = 2
    own = {k: seconds[k] / concurrent for k in ("startup", "training", "validation")}
    search = summary["wall_time_s"]
    return {"trials": trials, "epochs": epochs, "command_s": round(wall, 2), "search_s": round(search, 2),
            "command_startup_s": round(wall - search, 2),
            "trial_own_s": {k: round(v, 2) for k, v in own.items()},
            "search_other_s": round(search - sum(own.values()), 2),
            "driver_written_mb": round(written / 1e6, 1)}


def trials_part(args) -> int:
    sizes = [int(v) for v in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for n in sizes:
            rows.append(trial_cost(n, 2, Path(folder) / f"n{n}"))
            r = rows[-1]
            print(f"  {n} trials: command {r['command_s']} s, search {r['search_s']} s, "
                  f"driver wrote {r['driver_written_mb']} MB", file=sys.stderr)
    for a, b in zip(rows, rows[1:]):
        b["added_trial_s"] = round((b["search_s"] - a["search_s"]) / (b["trials"] - a["trials"]), 3)
        b["added_trial_other_s"] = round((b["search_other_s"] - a["search_other_s"]) / (b["trials"] - a["trials"]), 3)
    print(f"\nfixed cost of a trial: `asp-tune hpo --algo random`, digits MLP of 2 epochs, 2 concurrent, "
          f"{machine()['cpu_threads']} threads")
    print(f"{'trials':>7} {'command s':>10} {'start-up s':>11} {'search s':>9} {'trials own s':>13} "
          f"{'other s':>8} {'s/added trial':>14} {'other/added':>12} {'driver MB':>10}")
    for r in rows:
        print(f"{r['trials']:>7} {r['command_s']:>10.1f} {r['command_startup_s']:>11.1f} {r['search_s']:>9.1f} "
              f"{sum(r['trial_own_s'].values()):>13.1f} {r['search_other_s']:>8.1f} "
              f"{r.get('added_trial_s', float('nan')):>14.3f} {r.get('added_trial_other_s', float('nan')):>12.3f} "
              f"{r['driver_written_mb']:>10.1f}")
    path = write_results(args.name, {"machine": machine(), "target_added_trial_s": 0.2, "rows": rows}, args.out_dir)
    print(f"results: {path}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("cluster", "trials"), default="cluster")
    p.add_argument("--trials", type=int, default=8, help="trials per throughput measurement")
    p.add_argument("--epochs", type=int, default=5, help="epochs of a throughput trial")
    p.add_argument("--sizes", default="8,32,128,256", help="--part trials: the numbers of trials")
    p.add_argument("--name", default="scale-trials", help="--part trials: the results file's name")
    p.add_argument("--out-dir", default=None)
    args = p.parse_args()
    if args.part == "trials":
        return trials_part(args)
    results: dict = {"machine": machine(), "throughput": []}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for concurrency in (1, 2, 4):
            row = throughput(concurrency, args.trials, args.epochs, root / f"t{concurrency}")
            results["throughput"].append(row)
            print(f"  {concurrency} concurrent: {row['trials_per_min']:.1f} trials/min", file=sys.stderr)
        results.update(node_death(150, root / "nd"))
        (root / "dr").mkdir()
        results.update(driver_restart(150, root / "dr"))
    print(f"\nasp_tune on a local Ray cluster (one-CPU worker nodes on {machine()['cpu_threads']} threads); "
          f"{args.trials} digits-MLP trials of {args.epochs} epochs each")
    print(f"{'concurrent trials':>18} {'wall s':>8} {'trials/min':>11} {'nodes used':>11}")
    for row in results["throughput"]:
        print(f"{row['concurrent']:>18} {row['wall_s']:>8.1f} {row['trials_per_min']:>11.1f} {row['nodes_used']:>11}")
    print(f"node death -> the trial's next report (restarted from its checkpoint elsewhere): "
          f"{results['node_death_to_next_report_s']:.1f} s")
    print(f"driver killed, `hpo --resume` started -> first new report: {results['driver_restart_to_first_report_s']:.1f} s"
          f" (resume exit code {results['resume_exit_code']})")
    path = write_results("scale-local-cluster", results, args.out_dir)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
