"""``asp-tune`` command line: every sub-command validates its input before writing anything."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Container, Sequence

import pandas as pd

from asp_tune.config import DEVICES, LR_SCHEDULES, STORAGES, TrainConfig
from asp_tune.errors import AspTuneError

Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, Command] = {}


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("none", "all", "") else int(text)


def add_train_arguments(p: argparse.ArgumentParser, defaults: TrainConfig | None = None,
                        skip: Container[str] = ()) -> None:
    """Flags for every :class:`TrainConfig` field (shared by ``train``, HPO and NAS commands);
    fields named in ``skip`` get no flag."""
    d = defaults or TrainConfig()

    class _Group:
        def __init__(self, title: str):
            self.group = p.add_argument_group(title)

        def add_argument(self, flag: str, **kwargs: Any) -> None:
            if flag.lstrip("-").replace("-", "_") not in skip:
                self.group.add_argument(flag, **kwargs)
    g = _Group("data")
    g.add_argument("--dataset", default=d.dataset, help="digits (offline default), cifar10, cifar100, image_folder")
    g.add_argument("--data-dir", default=d.data_dir,
                   help="folder (train/<class>/*.jpg [test/...]), .tar.gz archive, or torchvision root")
    g.add_argument("--download", action="store_true", help="let torchvision download CIFAR")
    g.add_argument("--subset", type=_optional_int, default=d.subset, help="use this many training samples")
    g.add_argument("--test-subset", type=_optional_int, default=d.test_subset, help="use this many test samples")
    g.add_argument("--val-fraction", type=float, default=d.val_fraction)
    g.add_argument("--storage", default=d.storage, help=f"{' or '.join(STORAGES)}: device-resident tensors "
                   "or a DataLoader with a selected-index sampler")
    g.add_argument("--num-workers", type=int, default=d.num_workers, help="DataLoader workers (stream storage)")
    g.add_argument("--crop-padding", type=int, default=d.crop_padding, help="random-crop padding (data set default)")
    g.add_argument("--flip-p", type=float, default=d.flip_p, help="horizontal flip probability (data set default)")
    g.add_argument("--cutout", type=int, default=d.cutout, help="cutout square side in pixels (0: off)")
    g = _Group("model and optimisation")
    g.add_argument("--model", default=d.model, help="mlp, resnet8, resnet20/32/44/56, resnet18/34")
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--momentum", type=float, default=d.momentum)
    g.add_argument("--nesterov", type=_bool, default=d.nesterov)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    g.add_argument("--lr-schedule", default=d.lr_schedule, help=", ".join(LR_SCHEDULES))
    g.add_argument("--milestones", type=lambda s: tuple(float(x) for x in s.split(",")), default=d.milestones,
                   help="multistep milestones as fractions of the run, e.g. 0.5,0.75")
    g = _Group("proxy data (ASP)")
    g.add_argument("--ratio", type=float, default=d.ratio, help="sampling ratio r in (0, 1]")
    g.add_argument("--ratio-schedule", default=d.ratio_schedule, help="constant or dynamic (Algorithm 2)")
    g.add_argument("--metric", default=d.metric,
                   help="random, loss, entropy, gradient, prediction, mixture, or none (full data)")
    g.add_argument("--mixture-order", default=d.mixture_order, help="g012 (default), g021, g102, g120, g201, g210")
    g.add_argument("--mixture-width", type=float, default=d.mixture_width,
                   help="std of each metric's Gaussian, as a fraction of the run")
    g.add_argument("--temperature", type=float, default=d.temperature, help="selection softmax temperature; 0 = top-m")
    g.add_argument("--first-epoch-full", type=_bool, default=d.first_epoch_full)
    g = _Group("run")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--device", default=d.device, help=", ".join(DEVICES) + " or cuda:N")
    g.add_argument("--amp", type=_bool, default=d.amp, help="bf16 autocast on CUDA")
    g.add_argument("--channels-last", type=_bool, default=d.channels_last)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    fields = TrainConfig.__dataclass_fields__
    values = {k: v for k, v in vars(args).items() if k in fields}
    return TrainConfig.from_dict(values)


def command(name: str) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        COMMANDS[name] = fn
        return fn
    return register


@command("train")
def run_train(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from asp_tune.plots import plot_training_run
    from asp_tune.run_dir import RunDirectory
    from asp_tune.trainer import Trainer

    config = config_from_args(args)
    with RunDirectory(args.out, overwrite=args.overwrite) as out:
        trainer = Trainer(config)
        print(f"[asp-tune] {trainer.data.describe()} | model {config.model} on {trainer.device} | "
              f"ratio {config.ratio} ({config.ratio_schedule}), metric {config.metric}", file=sys.stderr)
        bar = tqdm(total=config.epochs, desc="train", unit="epoch", disable=args.quiet, file=sys.stderr)

        def progress(rec: dict[str, Any]) -> None:
            bar.update(1)
            bar.set_postfix(val=f"{rec['val_accuracy']:.3f}", used=f"{rec['ratio']:.2f}",
                            metric=rec["metric_used"], passes=f"{rec['data_passes']:.2f}")

        summary = trainer.fit(progress)
        bar.close()
        epochs = pd.DataFrame(trainer.history)
        out.write_table("epochs.csv", epochs)
        plot_training_run(epochs, out.file("training.png"),
                          f"{config.model} on {config.dataset}: r={config.ratio} {config.ratio_schedule}, "
                          f"metric={config.metric}")
        summary["config"] = config.to_dict()
        target = out.commit(summary)
    print(f"val {summary['final_val_accuracy']:.4f}  test {summary['final_test_accuracy']:.4f}  "
          f"data passes {summary['data_passes']:.2f}  wall {summary['wall_time_s']:.1f}s  -> {target}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asp-tune", description=(
        "Cheaper HPO and NAS by training every candidate on an ASP proxy subset re-chosen each epoch."))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("train", help="train one model on proxy data (or the full-data baseline)",
                       description="Train one model; ratio 1.0 with metric 'none' is the full-data baseline. "
                                   "Writes epochs.csv, summary.json and training.png to --out.")
    add_train_arguments(p)
    p.add_argument("--out", required=True, help="results folder (must be new or empty, see --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace --out when the run succeeds")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    for extend in EXTRA_PARSERS:
        extend(sub)
    return parser


#: Other modules (HPO, NAS) add their sub-commands here.
EXTRA_PARSERS: list[Callable[[Any], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    _load_extensions()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except AspTuneError as exc:
        print(f"asp-tune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("asp-tune: interrupted; no results were committed", file=sys.stderr)
        return 130


def _load_extensions() -> None:
    """Import the modules that register further sub-commands, if they are installed."""
    import importlib

    for module in ("asp_tune.tune.cli", "nas.cli"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name not in (module, module.rsplit(".", 1)[0]):
                raise


if __name__ == "__main__":
    sys.exit(main())
