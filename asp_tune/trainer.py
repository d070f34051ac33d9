"""The proxy-data trainer: each epoch trains on the subset the :class:`ProxySelector` picks.

One code path for every run: the full-data baseline is ``ratio=1.0, metric='none'``. The trainer
is driven epoch by epoch (``train_epoch``) so that a Ray Tune trainable or a NAS searcher can
report and checkpoint between epochs; ``fit`` runs them all.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence, Union

import torch
from torch import nn
from torch.func import vmap

from asp_tune.assembly import ModelFactory, Parts, build_parts, make_feeder  # noqa: F401 - make_feeder: its old home
from asp_tune.config import SETTINGS_FREE_ON_RESUME, TrainConfig
from asp_tune.datasets import DataBundle
from asp_tune.device import autocast, synchronize
from asp_tune.errors import AspTuneError, ConfigError, UserCodeError
from asp_tune.memory import FeatureNormTap
from asp_tune.models import build_model
from asp_tune.proxy import ProxySelector
from asp_tune.registry import MODELS
from asp_tune.strategies import EpochPlan
from asp_tune.trajectories import Trajectories


#: Samples whose importance values are recorded every epoch (``Trainer.trajectories``).
TRACKED_SAMPLES = 32


class TrainingDiverged(AspTuneError):
    """The training loss became NaN or infinite."""


#: Trains (or reads from a cache) the scoring model of a strategy that needs one, given the trainer
#: with its data and network and the strategy (``asp_tune.build`` supplies it).
ScoresFactory = Callable[["Trainer", Any], Any]


class Observed(NamedTuple):
    """A batch the proxy memory learns from: the logits of a forward pass training already ran."""

    logits: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor
    feature_norms: torch.Tensor | None = None  # ||h|| into the last layer, for the `gradient` metric


class StepOutput(NamedTuple):
    """What :meth:`Trainer.train_step` hands back; the trainer, not the step, updates the memory."""

    trained: Observed  # the batch the weights were updated on (its loss and accuracy are reported)
    loss: torch.Tensor
    also_seen: tuple[Observed, ...] = ()  # other batches the step ran forward (DARTS's architecture batch)


def lr_factor(config: TrainConfig, epoch: int) -> float:
    """Multiplier of the base learning rate at ``epoch`` (stepped per epoch, whatever its size)."""
    e, total = epoch, config.epochs
    if config.lr_schedule == "cosine":
        floor = config.lr_min / config.lr
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * e / total))
    if config.lr_schedule == "multistep":
        passed = sum(e >= round(m * total) for m in config.milestones)
        return config.lr_gamma ** passed
    return 1.0


def make_optimizer(config: TrainConfig, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
    """``config.optimizer`` over ``parameters``: SGD (momentum, Nesterov), Adam or AdamW (betas), each
    with ``lr`` and ``weight_decay``."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov and config.momentum > 0, weight_decay=config.weight_decay)
    kind = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return kind(parameters, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)





def check_outputs(outputs: int | None, wanted: int, task: str, name: str) -> None:
    """A network's outputs are one per class (or per regression value): fewer cannot be trained (a named
    error); more train, with the extra ones never a label (a warning: a builder that ignores
    ``num_classes`` leaves them, say). Nothing where ``outputs`` is unknown (None) or the task has neither."""
    if outputs is None or outputs == wanted or task not in ("classification", "regression"):
        return
    unit = "class" if task == "classification" else "regression value"
    if outputs < wanted:
        raise ConfigError("model", name, f"a network with {wanted} outputs, one per {unit} of this data: it "
                                         f"gives {outputs}") from None
    units = "classes" if unit == "class" else "regression values"
    warnings.warn(f"the network {name} gives {outputs} outputs for the {wanted} {units} of this data: the last "
                  f"{outputs - wanted} are never a label", stacklevel=3)


class Trainer:
    """Trains one model on ASP proxy data; every piece of state round-trips via ``state_dict``.

    The trainer owns its set-up: it seeds, loads the data (unless given) and builds the network,
    from ``config.model`` or from ``model``: a module, or a factory called with the loaded data.
    Searchers specialise one step, not the loop: override :meth:`epoch_batches` (what an epoch
    iterates over) and :meth:`train_step` (one optimisation step, returning the batches whose
    logits the proxy memory learns from). A model exposing ``weight_parameters()`` has only those
    optimised by SGD (a DARTS supernet keeps its architecture weights apart); ``grad_clip`` > 0
    clips their gradient norm in :meth:`optimizer_step`.
    """

    def __init__(self, config: TrainConfig, data: DataBundle | None = None,
                 model: Union[nn.Module, ModelFactory, None] = None, grad_clip: float = 0.0,
                 scores: ScoresFactory | None = None, size_field: tuple[str, Any] = ("model", "the network given"),
                 parts: Parts | None = None):
        self.config = config.validate()
        if self.validates and self.config.val_fraction == 0:
            raise ConfigError("val_fraction", 0.0, f"a fraction in (0, 1): {type(self).__name__} validates on a held-out "
                                                   "split (0, no split, is for nas-retrain and active-learn)")
        parts = parts or build_parts(self.config, data, model, size_field=size_field)
        self.data, self.task, self.device, self.model = parts.data, parts.task, parts.device, parts.model
        #: how ``model.pt`` rebuilds the network: the config's builder and arguments, or the class of a
        #: network handed in (rebuilt without arguments, or loaded into one: ``load_model(path, model=...)``)
        self.model_builder, self.channels_last = parts.model_builder, parts.channels_last
        self.grad_clip = grad_clip
        self.weights = list(getattr(self.model, "weight_parameters", self.model.parameters)())  # what SGD updates
        self.optimizer = make_optimizer(self.config, self.weights)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda e: lr_factor(self.config, e))
        self.proxy_scores = None  # the scoring model of a strategy that needs one (trained once per search, cached)
        if parts.strategy.needs_scores:
            if scores is None:
                raise ConfigError("metric", parts.strategy.name, "a trainer built by asp_tune.build.build_trainer, "
                                                                 "which trains the proxy model that scores the samples")
            self.proxy_scores = scores(self, parts.strategy)
        self.selector = self.make_selector(parts)
        self.feature_tap = FeatureNormTap(self.model)  # ||h|| into the last layer, for `gradient`
        self.sample_weights: torch.Tensor | None = None  # this epoch's loss weights by sample index
        self.train_feeder, self.eval_feeders = parts.train_feeder, parts.eval_feeders
        self.validate_each_epoch = True  # False: records carry NaN val metrics (saves a pass per epoch)
        self._stepped = False  # the first step names what failed
        # a few samples whose importance is recorded every epoch (ASP appendix D's trajectories)
        picker = torch.Generator().manual_seed(self.config.seed + 7)
        self.tracked = torch.randperm(len(self.data.train), generator=picker)[:TRACKED_SAMPLES].to(self.device)
        self.tracked_importance = Trajectories(self.tracked, self.data.train.labels[self.tracked.cpu()])
        self.epoch = 0
        self.samples_seen = 0
        self.train_seconds = 0.0
        self.val_seconds = 0.0
        self.history: list[dict[str, Any]] = []

    #: settings a checkpoint may have been saved under otherwise (:meth:`load_state_dict`)
    free_on_resume: frozenset[str] = SETTINGS_FREE_ON_RESUME
    #: whether the run validates on a held-out split (``val_fraction`` 0, no split, is refused by name)
    validates = True

    def make_selector(self, parts: Parts) -> ProxySelector:
        """The proxy selector over the training split (a searcher may select from parts of it apart)."""
        return ProxySelector(len(self.data.train), self.config.epochs, parts.strategy, seed=self.config.seed,
                             device=self.device, labels=self.data.train.labels if self.task.has_classes else None,
                             proxy_scores=self.proxy_scores, **vars(parts.proxy))

    # ------------------------------------------------------------------ training

    @property
    def done(self) -> bool:
        return self.epoch >= self.config.epochs

    def train_epoch(self) -> dict[str, Any]:
        """Select this epoch's proxy subset, train on it, validate; return the epoch's record."""
        start = time.perf_counter()
        plan = self.selector.plan(self.epoch)
        self.sample_weights = plan.weights
        self.model.train()
        track = self.selector.tracks_importance
        loss_sum = torch.zeros((), device=self.device)
        sums: torch.Tensor | int = 0
        trained = 0
        for batch in self.epoch_batches(plan):
            self.feature_tap.norms = None
            out = self.train_step(batch) if self._stepped else self._first_step(batch)
            if track:
                for seen in (out.trained, *out.also_seen):
                    self.observe(seen)
            y = out.trained.targets
            loss_sum += out.loss.detach() * y.shape[0]
            sums = sums + self.task.batch_sums(out.trained.logits.detach(), y)
            trained += y.shape[0]
        synchronize(self.device)
        return self.close_epoch(plan, float(loss_sum), sums, trained, time.perf_counter() - start)

    def close_epoch(self, plan: EpochPlan, loss_sum: float, sums: torch.Tensor | int, trained: int,
                    train_seconds: float, validation: tuple[float, float, float] | None = None) -> dict[str, Any]:
        """End an epoch trained on ``plan`` (``loss_sum`` and the task's ``sums`` over ``trained`` samples in
        ``train_seconds``): step the schedule, validate (unless ``validation`` gives the score, loss and
        seconds), and return the epoch's record. :class:`~asp_tune.pack.Pack` ends its members' epochs here."""
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        trained = max(trained, 1)
        train_loss = loss_sum / trained
        if not math.isfinite(train_loss):
            scale = "" if self.task.has_classes else \
                "; regression targets are fed as they are: scale them to about unit spread (inputs are standardised)"
            raise TrainingDiverged(f"training loss became {train_loss} at epoch {self.epoch + 1} "
                                   f"(lr={self.config.lr}); lower the learning rate{scale}")
        self.train_seconds += train_seconds
        self.samples_seen += plan.count
        self.epoch += 1
        val_start = time.perf_counter()
        if validation is not None:
            val_score, val_loss, val_seconds = validation
        else:
            val_score, val_loss = self.evaluate("val") if self.validate_each_epoch else (math.nan, math.nan)
        score = self.task.score_name
        val_constant = self.constant_score("val") if self.validate_each_epoch else math.nan
        self.val_seconds += time.perf_counter() - val_start if validation is None else val_seconds
        n = self.selector.num_samples
        record = {
            "epoch": self.epoch,
            "ratio": plan.count / n,
            "target_ratio": plan.target_ratio,
            "selected": plan.count,
            "metric_used": plan.metric,
            "top10_mass": plan.top10_mass,
            "lr": lr,
            "train_loss": train_loss,
            f"train_{score}": self.task.finish(sums, trained)[0] if trained else math.nan,
            "val_loss": val_loss,
            f"val_{score}": val_score,
            "val_score": val_score,
            "val_constant": val_constant,
            "epoch_seconds": train_seconds,
            "samples_seen": self.samples_seen,
            "data_passes": self.samples_seen / n,
            "coverage": float(self.selector.seen.float().mean()),  # planned at least once: trained
            "train_seconds_total": self.train_seconds,
            "val_seconds_total": self.val_seconds,
        }
        self.history.append(record)
        if self.selector.tracks_importance:
            self._record_trajectories(plan)
        return record

    def _first_step(self, batch: Any) -> StepOutput:
        """The run's first step, whose failure is the network not fitting the data (or the user's code
        failing): named, with the network, the inputs and the step (the user's traceback kept)."""
        try:
            out = self.train_step(batch)
        except AspTuneError:
            raise
        except Exception as exc:  # noqa: BLE001 - a network of the user's: any error is theirs
            self._check_outputs(self._outputs_of(batch))
            data = self.data
            hint = (f"the data holds {data.kind} inputs of shape {tuple(data.input_shape)} and the network is asked "
                    f"for {data.num_classes} outputs")
            if data.kind == "tokens":
                hint += "; integer inputs are fed as token sequences: give float features if they are not tokens"
            name = self.model_builder.get("builder") or self.model_builder.get("class")
            if str(self.model_builder.get("builder", "")) in MODELS._builtin:  # noqa: SLF001 - one of ours
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConfigError("model", name, f"a network for this data: {hint} ({first})") from None
            raise UserCodeError(name, "the first training batch", exc, hint) from exc
        self._check_outputs(out.trained.logits.shape[-1] if out.trained.logits.dim() == 2 else None)
        self._stepped = True
        return out

    def _outputs_of(self, batch: Any) -> int | None:
        """The network's outputs per sample on ``batch`` (None where it cannot say)."""
        try:
            with torch.no_grad(), autocast(self.device, self.config.amp):
                logits = self.forward_eval(batch[0])
            return logits.shape[-1] if logits.dim() == 2 else None
        except Exception:  # noqa: BLE001 - the step's own error is the one to report then
            return None

    def _check_outputs(self, outputs: int | None) -> None:
        check_outputs(outputs, self.data.num_classes, self.task.name,
                      self.model_builder.get("builder") or self.model_builder.get("class"))

    def observe(self, seen: Observed) -> None:
        """Let the proxy memory learn from a batch a forward pass already ran: its class logits when the
        task has classes (every statistic), else its per-sample loss."""
        self.selector.observe(seen.indices, **self._memory_inputs(seen.logits, seen.targets, seen.feature_norms))

    def _memory_inputs(self, logits: torch.Tensor, targets: torch.Tensor, feature_norms: torch.Tensor | None,
                       stacked: bool = False) -> dict[str, torch.Tensor | None]:
        """What the memory is given of a batch (``stacked``: of K batches stacked along a first dimension)."""
        if self.task.has_classes:
            return {"logits": logits.detach(), "targets": targets, "feature_norms": feature_norms}
        if not stacked:
            return {"losses": self.task.loss(logits.detach(), targets)}
        return {"losses": vmap(self.task.loss)(logits.detach(), targets)}  # each batch's loss alone

    def observe_stacked(self, others: Sequence["Trainer"], logits: torch.Tensor, targets: torch.Tensor,
                        indices: Sequence[torch.Tensor], feature_norms: torch.Tensor | None = None) -> None:
        """:meth:`observe` for this trainer and ``others`` (one task and strategy), batch k being row k of the
        stacked ``(K, B, ...)`` tensors: the statistics run once for all (:meth:`ProxyMemory.update_stacked`)."""
        if any(type(t.task) is not type(self.task) or t.selector.metric != self.selector.metric for t in others):
            raise ValueError("observe_stacked needs trainers of one task and one strategy")
        if not self.selector.tracks_importance:
            return
        given = self._memory_inputs(logits, targets, feature_norms, stacked=True)
        self.selector.check_inputs(given.get("logits"), given.get("targets"), given.get("losses"))
        self.selector.memory.update_stacked([t.selector.memory for t in others], indices, **given)

    def _record_trajectories(self, plan: EpochPlan) -> None:
        """Memory values of the tracked samples after this epoch, and whether the epoch selected them."""
        memory = self.selector.memory
        selected = torch.zeros(memory.num_samples, dtype=torch.bool, device=self.device)
        selected[plan.indices] = True
        self.tracked_importance.record(self.epoch, plan.metric, selected, memory)

    @property
    def trajectories(self) -> list[dict[str, Any]]:
        """One row per tracked sample and epoch: its memory values and whether the epoch selected it
        (empty where the importance memory was not tracked)."""
        return self.tracked_importance.rows()

    def sample_table(self) -> dict[str, list]:
        """One row per training sample: label, times selected and, when importance was tracked, the
        memory's final values."""
        table = {"index": list(range(self.selector.num_samples)), "label": self.data.train.labels.tolist(),
                 "times_selected": self.selector.times_selected.cpu().tolist()}
        if self.selector.tracks_importance:
            for name in self.selector.memory.columns:
                table[name] = self.selector.memory[name].cpu().tolist()
        return table

    def epoch_batches(self, plan: EpochPlan) -> Iterator[Any]:
        """What one epoch iterates over: by default mini-batches of the selected samples."""
        return self.train_feeder.batches(plan.indices, self.config.batch_size)

    def train_step(self, batch: Any) -> StepOutput:
        """One SGD step on ``batch`` (images, targets, sample indices)."""
        x, y, idx = batch
        with autocast(self.device, self.config.amp):
            logits = self.model(x)
        loss = self.training_loss(logits, y, idx)
        self.optimizer_step(loss)
        return StepOutput(Observed(logits, y, idx, self.feature_tap.take(y.shape[0], logits.shape[-1] if logits.dim() == 2 else None)), loss)

    def optimizer_step(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` and take one SGD step on the network weights (clipped by ``grad_clip``)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.weights, self.grad_clip)
        self.optimizer.step()

    def training_loss(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
                      label_smoothing: float | None = None) -> torch.Tensor:
        """Mean loss of a batch (the task's: cross-entropy with label smoothing, the run's unless
        ``label_smoothing`` is given, or squared error), each sample weighted by this epoch's selection weight
        when the plan has weights (unbiased reweighting, InfoBatch rescaling)."""
        smoothing = self.config.label_smoothing if label_smoothing is None else label_smoothing
        losses = self.task.loss(logits, y, smoothing)
        if self.sample_weights is not None:
            losses = losses * self.sample_weights[idx]
        return losses.mean()

    def forward_eval(self, x: torch.Tensor) -> torch.Tensor:
        """Logits used by :meth:`evaluate` (a searcher may fix a path or an architecture here)."""
        return self.model(x)

    @torch.inference_mode()
    def constant_score(self, split: str = "val") -> float:
        """The score of the task's constant predictor on ``split`` (chance accuracy, R² about 0): what a run
        that learnt nothing scores (computed once per split)."""
        cached = self.__dict__.setdefault("_constant_scores", {})
        if split not in cached:
            cached[split] = self.task.constant_score(self.data.train.labels, getattr(self.data, split).labels)
        return cached[split]

    @torch.inference_mode()
    def evaluate(self, split: str = "val", indices: torch.Tensor | None = None) -> tuple[float, float]:
        """(score, mean loss) on ``val`` or ``test`` (only ``indices`` of it when given), in inference mode
        and evaluation-size batches; never touches the proxy memory. The score is the task's (accuracy
        for classification, R² for regression)."""
        feeder = self.eval_feeders[split]
        total = feeder.num_samples if indices is None else int(indices.numel())
        if total == 0:
            return float("nan"), float("nan")
        self.model.eval()
        sums: torch.Tensor | int = 0
        batches = feeder.batches(indices, self.config.eval_batch_size)
        if split == "test":  # the one long evaluation, at the end: a bar on a terminal
            import sys

            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="test", unit="batch", file=sys.stderr, disable=None, leave=False,
                           total=-(-total // self.config.eval_batch_size))
        for x, y, _ in batches:
            with autocast(self.device, self.config.amp):
                logits = self.forward_eval(x)
            sums = sums + self.task.batch_sums(logits, y)
        return self.task.finish(sums, total)

    def fit(self, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Run the remaining epochs, then report test accuracy; returns the run's summary."""
        start = time.perf_counter()
        while not self.done:
            record = self.train_epoch()
            if on_epoch is not None:
                on_epoch(record)
        return self.summary(wall_time_s=time.perf_counter() - start)

    def summary(self, wall_time_s: float) -> dict[str, Any]:
        test_score, test_loss = self.evaluate("test")
        last = self.history[-1] if self.history else {}
        score = self.task.score_name
        best = max((r["val_score"] for r in self.history if r["val_score"] == r["val_score"]), default=None)
        return {
            "task": self.task.name, "score": score,
            f"final_val_{score}": last.get("val_score"), "final_val_score": last.get("val_score"),
            f"best_val_{score}": best, "best_val_score": best,
            f"final_test_{score}": test_score, "final_test_score": test_score,
            "final_test_loss": test_loss,
            "constant_test_score": self.constant_score("test"),
            "epochs": self.epoch,
            "samples_seen": self.samples_seen,
            "data_passes": self.samples_seen / self.selector.num_samples,
            "data_fraction": self.samples_seen / (self.selector.num_samples * max(self.epoch, 1)),
            "train_seconds": self.train_seconds,
            "val_seconds": self.val_seconds,
            "wall_time_s": wall_time_s,
            "device": str(self.device),
            # what the device applied of what was asked (bf16 autocast and channels-last act on CUDA only)
            "applied": {"amp": bool(self.config.amp and self.device.type == "cuda"),
                        "channels_last": bool(self.channels_last)},
            "data": self.data.describe(),
            "train_split": self.split_fingerprint(),
            **self.proxy_summary(),
        }

    def split_fingerprint(self) -> dict[str, Any]:
        """The training split's size and a digest of its labels: ``inspect`` checks it reads the same data again."""
        import hashlib

        labels = self.data.train.labels.detach().cpu().contiguous()
        return {"samples": int(labels.shape[0]), "labels_sha1": hashlib.sha1(labels.numpy().tobytes()).hexdigest()[:16]}

    def proxy_summary(self) -> dict[str, Any]:
        """A static proxy's selection seconds, and its scoring model with that model's seconds (counted
        once per search), if any."""
        out = {} if self.proxy_scores is None else self.proxy_scores.describe()
        if self.selector.strategy.kind == "static":
            out["subset_selection_seconds"] = self.selector.selection_seconds
        return out

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Model, optimiser, LR schedule, proxy memory, feeder and RNG states, and progress."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "selector": self.selector.state_dict(),
            "train_feeder": self.train_feeder.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "epoch": self.epoch,
            "samples_seen": self.samples_seen,
            "train_seconds": self.train_seconds,
            "val_seconds": self.val_seconds,
            "history": list(self.history),
            "trajectories": self.tracked_importance.state_dict(),
            "config": self.config.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the run that saved ``state`` (:meth:`state_dict`). A state saved under other settings
        than this trainer's is refused, naming them: the optimiser's and schedule's saved states would
        silently override a changed learning rate, schedule or epoch count. Only where the run is placed
        (:data:`SETTINGS_FREE_ON_RESUME`) may differ."""
        self._check_same_run(state.get("config"))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.selector.load_state_dict(state["selector"])
        self.train_feeder.load_state_dict(state["train_feeder"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.epoch = state["epoch"]
        self.samples_seen = state["samples_seen"]
        self.train_seconds = state["train_seconds"]
        self.val_seconds = state.get("val_seconds", 0.0)
        self.history = list(state["history"])
        self.tracked_importance.load_state_dict(state.get("trajectories", []))

    def _check_same_run(self, saved: dict[str, Any] | None) -> None:
        if not isinstance(saved, dict):  # a state of an older version carries no settings
            return
        mine = self.config.to_dict()
        changed = [f"{name} {saved[name]!r} -> {mine[name]!r}" for name in sorted(mine)
                   if name in saved and name not in self.free_on_resume and saved[name] != mine[name]]
        if changed:
            raise AspTuneError(f"this checkpoint continues a run of other settings ({'; '.join(changed)}): resume "
                               "with the settings it was saved under, or start a new run for these")

    def save_model(self, path: str | Path) -> None:
        """The final weights with what rebuilds them (see :func:`load_model`): the builder (a registered
        name or an import path) and its arguments, or the class of a network handed in; the input
        shape and kind, the class names and the normalisation the network expects."""
        from asp_tune.signatures import sign_payload

        state = {"model": self.model.state_dict(), "config": self.config.to_dict(), **self.model_builder,
                 "image_shape": list(self.data.image_shape), "input_shape": list(self.data.input_shape),
                 "kind": self.data.kind, "classes": list(self.data.classes), "mean": list(self.data.mean),
                 "std": list(self.data.std), "task": self.task.name, "outputs": self.data.num_classes}
        state["signature"] = sign_payload(MODEL_FILE_SIGNATURE, model_file_code(state))
        save_state(state, path)

    def save_checkpoint(self, path: str | Path) -> None:
        save_state(self.state_dict(), path)

    def load_checkpoint(self, path: str | Path) -> None:
        self.load_state_dict(load_state(path, "selector", "an asp_tune trainer checkpoint"))


def save_state(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` through a fresh temporary file (:func:`asp_tune.atomic.atomic_write`), so a crash
    never leaves half a checkpoint and a planted link is never followed."""
    from asp_tune.atomic import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda handle: torch.save(state, handle))


def load_state(path: str | Path, required_key: str, kind: str, hint: str = "") -> dict[str, Any]:
    """A checkpoint dict holding ``required_key``; anything else is one clear error.

    Loaded with ``weights_only=True``: a checkpoint holds only tensors and plain Python values,
    so a crafted file cannot run code on load (it is refused instead).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable or unsafe file is the same user error
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AspTuneError(f"cannot read checkpoint {path}: {first}{hint}") from None
    if not isinstance(state, dict) or required_key not in state:
        raise AspTuneError(f"{path} is not {kind}{hint}")
    return state


INFO_KEYS = ("image_shape", "input_shape", "kind", "classes", "mean", "std", "task", "outputs")
MODEL_FILE_SIGNATURE = "model file v1"


def model_file_code(state: dict[str, Any]) -> dict[str, Any]:
    """What a model file names that reading it may import and call: the builder or class, the builder's
    arguments and input shape, and the config's import paths (what its signature covers)."""
    from asp_tune.config import import_fields

    from asp_tune.config import TASKS

    config = state.get("config") if isinstance(state.get("config"), dict) else {}
    # a task by a registered name imports nothing: left out, so files signed before the task was covered verify
    covered = [n for n in import_fields() if n != "task" or config.get("task") not in ("auto", *TASKS)]
    return {"builder": state.get("builder"), "class": state.get("class"), "model_args": state.get("model_args"),
            "input_shape": state.get("input_shape"), "classes": len(state.get("classes") or ()),
            "outputs": state.get("outputs"),
            "config": {name: config.get(name) for name in covered}}


def model_file_signed(state: dict[str, Any]) -> bool:
    """Whether this user's asp_tune wrote the model file ``state`` (its code is then this user's own)."""
    from asp_tune.signatures import signed_by_me

    return signed_by_me(MODEL_FILE_SIGNATURE, model_file_code(state), state.get("signature"))


def load_model(path: str | Path, model: nn.Module | None = None, trust: tuple[str, ...] | list[str] = (),
               check_config: bool = False) -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """``(model, config, info)`` from a ``model.pt`` written by ``asp-tune train`` (or
    :meth:`Trainer.save_model`); ``info`` holds the input shape and kind, the class names and the
    normalisation the network expects (:func:`predict` applies them). The network is rebuilt by the
    builder the file names, or by the class of a network that was handed to the trainer; ``model``:
    load the weights into this one instead.

    A crafted file runs nothing: it is loaded with ``weights_only``, and the builder or class it names is
    used only when this user's asp_tune wrote the file (it is signed with this user's key,
    :mod:`asp_tune.signatures`), when it is registered (asp_tune's, an installed package's entry point,
    or registered in this process), or when it lies in a module named in ``trust`` (your own code, e.g.
    ``trust=["my_models"]``); anything else is refused by name before it is imported. ``check_config``:
    the same for the import paths of the file's config (for a caller that rebuilds its run from it)."""
    from asp_tune.imports import check_trusted, import_object
    from asp_tune.tasks import TASKS

    state = load_state(path, "model", "an asp_tune model file (model.pt)")
    source = f"model file {path} (not signed by you)"
    builder = state.get("builder", state.get("config", {}).get("model") if isinstance(state.get("config"), dict)
                        else None)
    signed = model_file_signed(state)
    if model is None and not signed:
        if builder is not None:
            check_trusted(MODELS, builder, "builder", trust, source)
        else:
            check_trusted({}, state.get("class"), "model class", trust, source)
    if check_config and not signed:
        from asp_tune.config import check_file_config

        check_file_config(state.get("config") if isinstance(state.get("config"), dict) else {}, trust, source)
    try:
        config = TrainConfig.from_dict(state["config"], validate=False)
    except (ConfigError, TypeError) as exc:
        raise AspTuneError(f"{path} is not an asp_tune model file of this version ({exc})") from None
    info = {k: state[k] for k in INFO_KEYS if k in state}
    info.setdefault("input_shape", info["image_shape"])
    info.setdefault("kind", "image")
    info.setdefault("task", "classification")  # model files from before regression
    if config.task != "auto":  # the task as the run named it (an import path of yours): what predict needs
        info["task"] = config.task
    if not signed and info["task"] not in TASKS:
        check_trusted(TASKS, info["task"], "task", trust, source)
    info.setdefault("outputs", len(state.get("classes") or ()))
    if model is None:
        if builder is not None:
            try:
                model = build_model(builder, info["input_shape"], int(info["outputs"]), **state.get("model_args", {}))
            except ConfigError as exc:
                raise AspTuneError(f"model file {path} was written by builder '{builder}', which cannot be used "
                                   f"here: {exc.allowed} (a module of your own: run from its folder or put that "
                                   "folder on PYTHONPATH)") from None
        else:
            try:
                model = import_object(state["class"], "model class")()
            except ConfigError as exc:
                raise AspTuneError(f"model file {path} holds a {state['class']}, which cannot be imported here: "
                                   f"{exc.allowed}") from None
            except TypeError as exc:
                raise AspTuneError(f"model file {path} holds a {state['class']}, which needs arguments to be "
                                   f"built ({exc}): pass it, load_model(path, model=...)") from None
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise AspTuneError(f"the weights in {path} do not fit this network: "
                           f"{str(exc).strip().splitlines()[0]}") from None
    return model.eval(), config, info


@torch.inference_mode()
def predict(model_file: str | Path | tuple[nn.Module, TrainConfig, dict[str, Any]], inputs: Any,
            batch_size: int = 1024, trust: tuple[str, ...] | list[str] = ()) -> torch.Tensor:
    """The predictions of a saved model (``model.pt``, or what :func:`load_model` returned) for raw ``inputs``
    as the data set holds them (uint8 images, float features or token sequences), the saved preprocessing
    applied first: class probabilities ``(N, classes)`` for classification, the predicted values
    ``(N, k)`` for regression. ``trust``: as for :func:`load_model`."""
    from asp_tune.feeding import Normalizer
    from asp_tune.imports import resolve
    from asp_tune.tasks import TASKS

    model, _, info = load_model(model_file, trust=trust) if isinstance(model_file, (str, Path)) else model_file
    x = torch.as_tensor(inputs)
    if tuple(x.shape[1:]) != tuple(info["input_shape"]):
        raise ConfigError("inputs", f"shape {tuple(x.shape)}", f"(N, {', '.join(map(str, info['input_shape']))})")
    if info["kind"] == "image" and x.dtype != torch.uint8:  # a float image in [0, 1] was divided by 255 again
        raise ConfigError("inputs", f"{x.dtype} images", "uint8 images (values 0..255), as the data set holds them: "
                                                          "predict normalises them as training did")
    device = next(model.parameters()).device
    normalize = Normalizer(info["mean"], info["std"], device, kind=info["kind"])
    task = resolve(TASKS, info["task"], "task")  # never another task's predictions: a softmax of a regression
    parts = [task.predict(model(normalize(x[i:i + batch_size].to(device)))).cpu()
             for i in range(0, x.shape[0], batch_size)]
    return torch.cat(parts)
