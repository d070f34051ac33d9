"""``asp-tune`` command line: every sub-command validates its input before writing anything."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

from asp_tune.commands import (COMMANDS, SUBCOMMANDS, Command, Subcommand, add_output_flags,  # noqa: F401 - shared
                               add_train_arguments, add_trust_flag, announce_proxy_model, command, config_from_args,
                               given_fields, results_folder, subcommand, trusted_code)
from asp_tune.config import TrainConfig, check_file_config, with_params
from asp_tune.errors import AspTuneError, RunInterrupted, UserCodeError
from asp_tune.run_files import MODEL_FILE, SAMPLES_FILE, TRAJECTORIES_FILE


@command("train")
def run_train(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from asp_tune.build import build_trainer
    from asp_tune.imports import search_paths, user_modules
    from asp_tune.plots import plot_training_run

    config = train_config(args)
    with results_folder(args) as out:
        announce_proxy_model(config)
        trainer = build_trainer(config)
        print(f"[asp-tune] {trainer.data.describe()} | model {config.model} on {trainer.device} | "
              f"ratio {config.ratio} ({config.ratio_schedule}), strategy {trainer.selector.metric}", file=sys.stderr)
        bar = tqdm(total=config.epochs, desc="train", unit="epoch", disable=args.quiet, file=sys.stderr)

        def progress(rec: dict[str, Any]) -> None:
            bar.update(1)
            bar.set_postfix(val=f"{rec['val_score']:.3f}", used=f"{rec['ratio']:.2f}",
                            metric=rec["metric_used"], passes=f"{rec['data_passes']:.2f}")

        summary = trainer.fit(progress)
        bar.close()
        import pandas as pd

        epochs = pd.DataFrame(trainer.history)
        out.write_table("epochs.csv", epochs)
        plot_training_run(epochs, out.file("training.png"),
                          f"{config.model} on {config.dataset}: r={config.ratio} {config.ratio_schedule}, "
                          f"metric={config.metric}")
        summary["config"] = config.to_dict()
        # where your modules were imported from: `inspect` and `train --config` of this folder look there too
        summary["search_paths"] = search_paths(user_modules([config.model, config.dataset, config.task,
                                                             config.metric]))
        trainer.save_model(out.file(MODEL_FILE))
        out.write_table(SAMPLES_FILE, pd.DataFrame(trainer.sample_table()))
        trajectories = trainer.trajectories
        if trajectories:  # only runs whose importance memory was tracked
            out.write_table(TRAJECTORIES_FILE, pd.DataFrame(trajectories))
        if args.inspect:
            from asp_tune.pictures import score_samples_for_pictures, training_pictures

            out.write_json("summary.json", summary)  # what the pictures read; rewritten by commit
            training_pictures(out.path, out.file, *score_samples_for_pictures(trainer))
        target = out.commit(summary)
    fraction = summary["data_fraction"]
    if trainer.selector.metric != "infobatch" and abs(fraction - config.ratio) > 0.2 * config.ratio:
        print(f"[asp-tune] note: this run trained on {fraction:.3f} of the data per epoch on average, not the "
              f"ratio {config.ratio} (first epoch on all data: {'yes' if trainer.history[0]['ratio'] >= 1 - 1e-9 else 'no'}; "
              "a static subset keeps its size; short runs and the "
              "dynamic schedule's rounding shift it)", file=sys.stderr)
    score = "R²" if summary["score"] == "r2" else summary["score"]
    print(f"val {score} {summary['final_val_score']:.4f}  test {score} {summary['final_test_score']:.4f}  "
          f"data passes {summary['data_passes']:.2f} (fraction {fraction:.3f} of r={config.ratio})  "
          f"wall {summary['wall_time_s']:.1f}s  -> {target}")
    return 0



def train_config(args: argparse.Namespace) -> TrainConfig:
    """``train``'s config: the class defaults, or ``--config``'s, with the flags given on top."""
    trust = trusted_code(args)  # checked whether or not --config needs it
    base = config_from_file(args.config, trust) if args.config else TrainConfig()
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    given = given_fields(args, names)
    if given.get("data_dir") and "://" not in str(given["data_dir"]):  # recorded as it is found from anywhere
        given["data_dir"] = str(Path(given["data_dir"]).expanduser().resolve())
    return TrainConfig.from_dict({**base.to_dict(), **given})


#: A results folder's summary.json is a few kB; far larger is not one.
MAX_SUMMARY_BYTES = 50_000_000


def config_from_file(path: str, trust: tuple[str, ...] = ()) -> TrainConfig:
    """The training config a results folder or ``summary.json`` describes: a ``train`` run's config,
    or the best configuration of an ``hpo`` (its space's fixed settings plus the best parameters) or
    ``compare`` run (the pick with the best retrained test accuracy), to be trained on full data.
    Its import paths are refused before anything is imported unless they are registered names or
    lie in a module of ``trust`` (:func:`asp_tune.config.check_file_config`)."""
    from pathlib import Path

    from asp_tune.errors import ConfigError

    file = Path(path).expanduser()
    if file.is_dir():
        file = file / "summary.json"
    try:
        if not file.is_file() or file.stat().st_size > MAX_SUMMARY_BYTES:  # a pipe could answer each read anew
            raise ValueError(f"a regular file of at most {MAX_SUMMARY_BYTES // 1_000_000} MB")
        content = file.read_bytes()  # read once: what is parsed is what the signature is checked on
        summary = json.loads(content)
    except (OSError, ValueError, RecursionError) as exc:
        raise ConfigError("config", path, f"a results folder or summary.json of asp-tune train, hpo or compare "
                                          f"({type(exc).__name__})") from None
    if not isinstance(summary, dict):
        raise ConfigError("config", path, f"a summary.json holding a mapping (it holds a {type(summary).__name__})")
    full = {"ratio": 1.0, "metric": "none", "ratio_schedule": "constant"}
    if isinstance(summary.get("config"), dict):
        values = summary["config"]
    elif isinstance(summary.get("best_config"), dict):
        values = {**with_params(summary.get("fixed", {}), summary["best_config"]), **full}
    elif isinstance(summary.get("rows"), list) and any(r.get("best_config") for r in summary["rows"]):
        row = best_retrained(summary)
        values = {**with_params(summary["runs"][str(row["ratio"])].get("fixed", {}), row["best_config"]), **full}
    else:
        raise ConfigError("config", path, "a summary.json with a config (train) or a best_config (hpo, compare)")
    if not isinstance(values, dict):
        raise ConfigError("config", path, "a summary.json whose config is a mapping")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in values.items() if k in known}
    from asp_tune.run_dir import summary_signed

    if not summary_signed(file, content):
        check_file_config(values, trust, f"results file {file} (not signed by you)")
    else:
        add_signed_search_paths(summary)
    return TrainConfig.from_dict(values)


def best_retrained(summary: dict[str, Any]) -> dict[str, Any]:
    """The row of a comparison's ``summary.json`` whose pick retrained best on full data (by its ``mode``: the
    lowest loss), the first of equals; rows without a retrained score last."""
    runs = summary.get("runs") if isinstance(summary.get("runs"), dict) else {}
    sign = -1.0 if (runs.get("1.0") or {}).get("mode") == "min" else 1.0
    rows = [r for r in summary["rows"] if r.get("best_config")]

    def score(row: dict[str, Any]) -> float:
        value = row.get("retrained_mean", row.get("retrained_test_mean"))  # the deprecated name in older folders
        return sign * float(value) if isinstance(value, (int, float)) and value == value else -math.inf

    return max(rows, key=score)


def add_signed_search_paths(summary: dict[str, Any]) -> None:
    """A run of yours (its ``summary.json`` signed by you: the caller checked) imported your modules from the
    folders it recorded (a search: its space's first): so does this command, from those still yours alone (one
    deleted and made again by another user is not)."""
    from asp_tune.imports import add_search_paths, own_folder

    runs = summary.get("runs") if isinstance(summary.get("runs"), dict) else {}
    for where in [summary, *runs.values()]:
        paths = where.get("search_paths") if isinstance(where, dict) else None
        if isinstance(paths, list):
            add_search_paths([p for p in paths if isinstance(p, str) and own_folder(p)])


@subcommand("train", "train one model on proxy data (or the full-data baseline)")
def add_train_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Train one model; ratio 1.0 with metric 'none' is the full-data baseline. Writes epochs.csv, "
                     "summary.json, training.png and model.pt (the final weights with their config) to --out.")
    add_train_arguments(p, keep_unset=True)
    p.add_argument("--config", default=None, help="start from the config of a results folder or summary.json "
                                                  "(train: its config; hpo/compare: the best configuration, on "
                                                  "full data); flags given override it")
    add_trust_flag(p)
    add_output_flags(p)
    p.add_argument("--inspect", action="store_true", help="also write the pictures of asp-tune inspect")


@subcommand("inspect", "pictures of a train or correlate results folder (PNG)")
def add_inspect_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("A train run: importance trajectories of random samples, the easiest and hardest training "
                     "images by the final model's loss (overall and per class), how often each sample was "
                     "selected. A correlate run: proxy against full-data accuracy with the regression line.")
    p.add_argument("run_dir", help="results folder of asp-tune train or correlate")
    p.add_argument("--out", default=None, help="where the pictures go [default: RUN_DIR-inspect beside it]")
    p.add_argument("--overwrite", action="store_true", help="replace --out when done")
    add_trust_flag(p)


@command("inspect")
def run_inspect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from asp_tune.errors import ConfigError
    from asp_tune.pictures import inspect_folder

    folder = Path(args.run_dir).expanduser()
    if not (folder / "summary.json").is_file():
        raise ConfigError("run_dir", args.run_dir, "a results folder of asp-tune train or correlate (with summary.json)")
    from asp_tune.run_dir import summary_signed

    content = (folder / "summary.json").read_bytes()
    if summary_signed(folder / "summary.json", content):  # your run: your modules from where it imported them
        with contextlib.suppress(ValueError):
            add_signed_search_paths(json.loads(content))
    args.out = args.out or str(folder.resolve().with_name(folder.resolve().name + "-inspect"))
    with results_folder(args) as out:
        written = inspect_folder(folder, out.file, trusted_code(args))
        target = out.commit({"run_dir": str(folder.resolve()), "pictures": [p.name for p in written]})
    print("\n".join(f"  {target / p.name}" for p in written))
    return 0


ALL = "*"


def build_parser(only: str | None = ALL) -> argparse.ArgumentParser:
    """The ``asp-tune`` parser. ``only``: the sub-command whose flags are added (``ALL``: every one;
    None: none, for the top-level help)."""
    parser = argparse.ArgumentParser(prog="asp-tune", description=(
        "Cheaper HPO and NAS by training every candidate on an ASP proxy subset re-chosen each epoch."))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, spec in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=spec.help, allow_abbrev=False)  # --num-sample is a typo, not --num-samples
        if only == ALL or only == name:
            spec.add_arguments(p)
    return parser


def _command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]


def refuse_unknown(parser: argparse.ArgumentParser, command: str, unknown: list[str]) -> None:
    """Exit 2 with ``command``'s own usage, naming the ``unknown`` words and the flag each misspelled one was
    closest to (argparse would name them under the top-level usage, without a hint)."""
    import difflib

    own = _command_parser(parser, command)
    flags = [o for a in own._actions for o in a.option_strings if o.startswith("--")]
    hints = []
    for word in unknown:
        name = word.split("=", 1)[0]
        close = difflib.get_close_matches(name, flags, n=1, cutoff=0.75) if name.startswith("--") else []
        if close:
            hints.append(f"{name}: did you mean {close[0]}?")
    own.error("unrecognized arguments: " + " ".join(unknown) + "".join(f"; {h}" for h in hints))


def resume_command(words: Sequence[str], experiment: str) -> str:
    """The command line ``words`` again, its ``--resume`` (if any) replaced by ``--resume experiment``."""
    import shlex

    kept, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word == "--resume":
            skip = True
        elif not word.startswith("--resume="):
            kept.append(word)
    return "asp-tune " + shlex.join([*kept, "--resume", experiment])


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    import signal

    load_extensions()
    # import paths (--model my_models:net) resolve from the folder the command runs in, as `python -m`
    # would; appended, not prepended, so a file there never shadows an installed module
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    words = list(sys.argv[1:] if argv is None else argv)
    named = next((w for w in words if not w.startswith("-")), None)
    parser = build_parser(named if named in SUBCOMMANDS else None)
    args, unknown = parser.parse_known_args(words)
    if unknown:
        refuse_unknown(parser, args.command, unknown)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM, like Ctrl-C, commits nothing
    try:
        return COMMANDS[args.command](args)
    except UserCodeError as exc:  # one line naming the code and the step, then that code's own traceback
        follows = "; the traceback of that code follows" if exc.cause_traceback else ""
        print(f"asp-tune {args.command}: error: {exc}{follows}", file=sys.stderr)
        if exc.cause_traceback:
            print(exc.cause_traceback.rstrip(), file=sys.stderr)
        return exc.exit_code
    except RunInterrupted as exc:  # how to go on, if this command can
        resumes = any("--resume" in a.option_strings for a in _command_parser(parser, args.command)._actions)
        hint = exc.resume_hint("--resume " if resumes else None)
        if resumes and exc.experiment_path is not None:
            hint += f", the same flags beside it: {resume_command(words, exc.experiment_path)}"
        print(f"asp-tune {args.command}: error: {hint}", file=sys.stderr)
        return exc.exit_code
    except AspTuneError as exc:
        print(f"asp-tune {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        fault = disk_fault(exc)
        if fault is None:
            raise
        print(f"asp-tune {args.command}: error: {fault}; nothing was committed", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("asp-tune: interrupted; no results were committed", file=sys.stderr)
        return 130


def disk_fault(exc: OSError) -> str | None:
    """One line for a fault of the disk a run writes to (full, over a file-size limit, read-only), else None."""
    import errno

    reasons = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is used up",
               errno.EFBIG: "a file grew past the file-size limit (ulimit -f)", errno.EROFS: "the file system is "
               "read-only"}
    if exc.errno not in reasons:
        return None
    return f"cannot write {exc.filename or 'a file'}: {reasons[exc.errno]}"


def load_extensions() -> None:
    """Import the modules that register further sub-commands, if they are installed."""
    import importlib

    for module in ("asp_tune.svp_cli", "asp_tune.tune.cli", "nas.cli"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name not in (module, module.rsplit(".", 1)[0]):
                raise


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: sub-commands register into asp_tune.cli.
    from asp_tune.cli import main as _main

    sys.exit(_main())
