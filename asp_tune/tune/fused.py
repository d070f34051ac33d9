"""Successive halving over packs, in one process: the configurations of each rung train together in packs
(:class:`~asp_tune.pack.Pack`), the stopped ones leave, the survivors are packed again for the next rung.

Plain state, no Ray: this is what a fused search runs in one worker, and what ``bench/fused.py`` sets beside
the same halving with one configuration at a time (``pack_size=1``). Each configuration is an ordinary
:class:`~asp_tune.trainer.Trainer` (built once, on one shared copy of the data), so its records, state and
model are those of a run alone.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import pandas as pd

from asp_tune.build import build_trainer
from asp_tune.config import TrainConfig, check_pack
from asp_tune.pack import CannotFuse, Pack, PackChoice, PackKinds, choose_pack_size, group_into_packs
from asp_tune.trainer import Trainer, TrainingDiverged


@dataclass
class HalvingResult:
    """Per configuration: its epochs' records (``history``: one row per epoch), where it stopped and its last
    score (``trials``); the pick; the wall time with its breakdown; how the packs were chosen."""

    trials: pd.DataFrame
    history: pd.DataFrame
    best: int | None
    wall_time_s: float
    breakdown: dict[str, float]
    pack: PackChoice
    notes: list[str] = field(default_factory=list)


def keep_best(scores: dict[int, float], eta: int, mode: str = "max") -> set[int]:
    """The ``ceil(n / eta)`` best of ``scores`` (ties: the earlier configuration)."""
    order = sorted(scores, key=lambda i: (-scores[i] if mode == "max" else scores[i], i))
    return set(order[:max(1, math.ceil(len(order) / eta))])


def successive_halving(configs: Sequence[TrainConfig], rungs: Sequence[int], eta: int = 3,
                       pack_size: int | str = "auto", model: Any = None, mode: str = "max") -> HalvingResult:
    """Train ``configs`` to the first of ``rungs`` (epochs), keep the best ``1/eta`` by validation score, train
    those to the next rung, and so on; the last rung's best is the pick. ``pack_size``: configurations per
    pack (1: one at a time; ``auto``: :func:`~asp_tune.pack.choose_pack_size`)."""
    check_pack("pack_size", pack_size)  # before anything is built
    start = time.perf_counter()
    breakdown = {"startup_s": 0.0, "train_s": 0.0, "validation_s": 0.0}
    tick = time.perf_counter()
    first = build_trainer(configs[0], model=model)
    data = first.data
    trainers: dict[int, Trainer] = {0: first}
    choice = choose_pack_size(pack_size, len(configs), first)
    kinds = PackKinds()  # each kind checked before its first pack trains; refused or halved per kind
    breakdown["startup_s"] += time.perf_counter() - tick
    alive, done, failed = list(range(len(configs))), 0, {}
    for rung in rungs:
        for group in group_into_packs([configs[i] for i in alive], choice.size):
            members = [alive[g] for g in group]
            tick = time.perf_counter()
            for i in members:
                if i not in trainers:
                    trainers[i] = build_trainer(configs[i], data=data, model=model)
            breakdown["startup_s"] += time.perf_counter() - tick
            failed.update(_train_to(rung, [trainers[i] for i in members], members, kinds))
        scores = {i: trainers[i].history[-1]["val_score"] for i in alive if i not in failed}
        scores = {i: s for i, s in scores.items() if s == s}
        alive = sorted(keep_best(scores, eta, mode)) if rung != rungs[-1] else sorted(scores)
        done = rung
    for t in trainers.values():
        breakdown["train_s"] += t.train_seconds
        breakdown["validation_s"] += t.val_seconds
    history = pd.DataFrame([{"config": i, **r} for i, t in sorted(trainers.items()) for r in t.history])
    trials = pd.DataFrame([{"config": i, "epochs": trainers[i].epoch if i in trainers else 0,
                            "final_val_score": trainers[i].history[-1]["val_score"] if i in trainers
                            and trainers[i].history else math.nan,
                            "status": "ERROR" if i in failed else "TERMINATED" if i in alive else "STOPPED",
                            "error": str(failed.get(i, "")),
                            **{k: getattr(configs[i], k) for k in ("lr", "weight_decay", "momentum")}}
                           for i in range(len(configs))])
    finished = trials[(trials["status"] == "TERMINATED") & (trials["epochs"] == done)]
    best = None
    if len(finished):
        column = finished["final_val_score"]
        best = int(finished.loc[column.idxmax() if mode == "max" else column.idxmin(), "config"])
    return HalvingResult(trials, history, best, time.perf_counter() - start, breakdown, choice,
                         [choice.reason, *kinds.notes])


def _train_to(epoch: int, trainers: list[Trainer], ids: list[int], kinds: PackKinds) -> dict[int, BaseException]:
    """Train ``trainers`` (one kind) to ``epoch``: as one pack when there are several and their kind fuses in
    packs that large (:class:`~asp_tune.pack.PackKinds`), else in smaller packs or each alone (a refusal said
    once in ``kinds.notes``). Returns the configurations that failed, with their errors."""
    failed: dict[int, BaseException] = {}
    size = kinds.size(trainers[0], len(trainers))
    if size == len(trainers) > 1:
        pack = None
        try:
            pack = Pack(trainers, checked=True)  # its kind checked by kinds.size
            while pack.members and min(t.epoch for t in pack.trainers) < epoch:
                pack.train_epoch()
            pack.close()
            return {ids[trainers.index(t)]: e for t, e in pack.failed.items()}
        except CannotFuse as exc:
            if pack is not None:
                pack.close()  # what the pack trained so far goes on alone
                failed.update({ids[trainers.index(t)]: e for t, e in pack.failed.items()})
            kinds.refuse(trainers[0], exc, len(trainers))
            size = kinds.size(trainers[0], len(trainers))
    if size > 1:
        rest = [(i, t) for i, t in zip(ids, trainers) if i not in failed]
        for start in range(0, len(rest), size):
            part = rest[start:start + size]
            failed.update(_train_to(epoch, [t for _, t in part], [i for i, _ in part], kinds))
        return failed
    for i, trainer in zip(ids, trainers):
        if i in failed:
            continue
        try:
            while trainer.epoch < epoch:
                trainer.train_epoch()
        except TrainingDiverged as exc:
            failed[i] = exc
    return failed
