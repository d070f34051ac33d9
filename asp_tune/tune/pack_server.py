"""The trainers of many trials in one process, trained an epoch at a time in packs: what a pack worker holds.

Plain state, no Ray (:mod:`asp_tune.tune.pack_ray` puts it in a Ray actor and lets trials talk to it). Each
trial of a search stays a trial: it joins with its configuration (and its checkpoint, when Ray restores it),
asks for one epoch at a time, and leaves. The server trains the epochs asked for together: members that can
share a pack (:func:`~asp_tune.pack.pack_key`, the same number of samples this epoch, the same validation)
train as one :class:`~asp_tune.pack.Pack` of at most ``pack_size``, the rest alone. A member's record, state
and checkpoint are those of its trainer alone, so a scheduler's decisions, ``trials.csv`` and every report
stay per configuration.

A pack is kept from one epoch to the next; a member that leaves it (its trial stopped or paused, or training
alone this epoch) is written back and taken out (:meth:`~asp_tune.pack.Pack.remove`), the others go on in it, and
a member's checkpoint is written from its trainer after its own write-back. Whether a kind of pack fuses, and in
packs of how many, is decided per kind (:class:`~asp_tune.pack.PackKinds`).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from asp_tune.build import build_trainer
from asp_tune.config import TrainConfig
from asp_tune.datasets import DataBundle
from asp_tune.memory import ProxyMemory
from asp_tune.pack import CannotFuse, Pack, PackKinds, pack_key
from asp_tune.trainer import Trainer, TrainingDiverged
from asp_tune.tune.space import SearchSpace

#: The fields that decide which data a run reads and how it is split: members equal in them share one copy.
DATA_FIELDS = ("dataset", "data_dir", "val_fraction", "subset", "test_subset", "seed", "download",
               "image_size")


def trial_config(space: SearchSpace, run: dict[str, Any], params: dict[str, Any],
                 overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The run config of a trial of ``space``: its ``params`` (its config; keys the space does not search are
    ignored) under the search's ``run`` fields with the trial's ``overrides``."""
    names = {p.name for p in space.params}
    return space.train_config({k: v for k, v in params.items() if k in names}, **{**run, **(overrides or {})})


class PackServer:
    """Trainers of ``space``'s configurations under ``run`` (the fixed run fields of every trial), built on
    ``arrays`` (the decoded data set, or None: read from the source), trained in packs of at most
    ``pack_size``. ``validate_epochs``: validate only after these epochs (None: every epoch)."""

    def __init__(self, space: SearchSpace, run: dict[str, Any], arrays: dict[str, Any] | None, pack_size: int,
                 validate_epochs: tuple[int, ...] | None = None):
        self.space, self.run, self.arrays = space, run, arrays
        self.pack_size = max(1, int(pack_size))
        self.validate_epochs = validate_epochs
        self.trainers: dict[str, Trainer] = {}
        self.tokens: dict[str, str | None] = {}  # which start of a trial each trainer belongs to
        self.packs: dict[frozenset, Pack] = {}  # kept from one epoch to the next, under their members' names
        self.data: dict[tuple, DataBundle] = {}
        self.kinds = PackKinds()  # which kinds fuse, in packs of how many, and the notes saying why not
        self.fused_epochs = 0  # member-epochs trained in packs
        self.alone_epochs = 0

    # ------------------------------------------------------------------ members

    def config_of(self, params: dict[str, Any], overrides: dict[str, Any] | None = None) -> TrainConfig:
        """The run config of a trial's ``params`` (its searched values) with ``overrides`` of the run fields."""
        return trial_config(self.space, self.run, params, overrides)

    def join(self, member: str, params: dict[str, Any], overrides: dict[str, Any] | None = None,
             state: bytes | None = None, token: str | None = None) -> dict[str, Any]:
        """Build ``member``'s trainer (from ``state``, a checkpoint's bytes, when given; a member joining again
        starts over from what it brings); ``token`` names this start of the trial (see :meth:`leave`). Returns
        what its trial reports beside every epoch."""
        started = time.perf_counter()
        self.leave(member)
        config = self.config_of(params, overrides)
        key = tuple(getattr(config, f) for f in DATA_FIELDS)
        data = self.data.get(key)
        trainer = build_trainer(config, data=data, arrays=None if data is not None else self.arrays)
        self.data.setdefault(key, trainer.data)
        restored: dict[str, Any] = {}
        if state is not None:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "trainer.pt"
                path.write_bytes(state)
                trainer.load_checkpoint(path)
            restored = {"restored_epoch": trainer.epoch,
                        "restored_memory": ProxyMemory.fingerprint(trainer.selector.memory.state_dict())}
        self.trainers[member], self.tokens[member] = trainer, token
        proxy = trainer.proxy_summary()
        startup = time.perf_counter() - started - (proxy["proxy_seconds"] if proxy.get("proxy_computed") else 0.0)
        return {"startup_seconds": startup, "device": str(trainer.device), "done": trainer.done, **proxy, **restored}

    def leave(self, member: str, token: str | None = None, any_start: bool = True) -> bool:
        """Forget ``member`` (written back and taken out of its pack first, if any): whichever start of the trial
        it holds when ``any_start``, else only the start named ``token`` (a message about an earlier start of a
        trial that joined again since is ignored). Returns whether it was forgotten."""
        if member not in self.trainers or not (any_start or (token is not None and self.tokens.get(member) == token)):
            return False
        self._take_out([member])
        data = self.trainers.pop(member).data
        self.tokens.pop(member, None)
        if not any(t.data is data for t in self.trainers.values()):  # its copies on the device go with the last
            for split in (data.train, data.val, data.test):
                split.drop_copies()
        return True

    def done(self, member: str) -> bool:
        """Whether ``member`` trained all its epochs."""
        return self.trainers[member].done

    def state(self, member: str) -> bytes:
        """``member``'s checkpoint (its trainer's, written back from its pack first), as bytes."""
        trainer = self.trainers[member]
        for members, pack in self.packs.items():
            if member in members:
                pack.sync([m for m in pack.members if m.trainer is trainer])
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "trainer.pt"
            trainer.save_checkpoint(path)
            return path.read_bytes()

    # ------------------------------------------------------------------ training

    def train(self, members: list[str]) -> dict[str, dict[str, Any] | BaseException]:
        """One epoch of each of ``members``: its record, or the error that ended its training."""
        results: dict[str, dict[str, Any] | BaseException] = {}
        for group in self.groups(members):
            try:
                results.update(self._train_group(group))
            except Exception as exc:  # noqa: BLE001 - this group's trials fail with it; the other groups go on
                for key in [k for k in self.packs if not k.isdisjoint(group)]:
                    del self.packs[key]  # not written back: its members leave with the error
                results.update({m: exc for m in group})
        return results

    @property
    def notes(self) -> list[str]:
        """Why a kind of pack trains otherwise than asked (:attr:`PackKinds.notes`)."""
        return self.kinds.notes

    def _train_group(self, group: list[str]) -> dict[str, dict[str, Any] | BaseException]:
        """One epoch of ``group`` (one kind): as one pack where its kind fuses in packs that large, else in smaller
        packs or alone; a pack refused before its first step changed anything is refused for its kind
        (:meth:`PackKinds.refuse`) and its members train as the kind now allows."""
        first = self.trainers[group[0]]
        size = self.kinds.size(first, len(group))
        if size == len(group) > 1:
            try:
                return self._train_pack(group)
            except CannotFuse as exc:
                self._take_out(group)
                self.kinds.refuse(first, exc, len(group))
                size = self.kinds.size(first, len(group))
        if size > 1:
            results: dict[str, dict[str, Any] | BaseException] = {}
            for start in range(0, len(group), size):
                results.update(self._train_group(group[start:start + size]))
            return results
        return {member: self._train_alone(member) for member in group}

    def groups(self, members: list[str]) -> list[list[str]]:
        """``members`` in packs of at most :attr:`pack_size`: equal configurations but for the per-member
        hyper-parameters, the same number of samples and the same validation this epoch (a member whose number
        is known only once its epoch is planned trains alone); in the order of their names, so the same members
        form the same packs from one epoch to the next."""
        by_key: dict[tuple, list[str]] = {}
        for member in sorted(members):
            trainer = self.trainers[member]
            trainer.validate_each_epoch = self.validate_epochs is None or trainer.epoch + 1 in self.validate_epochs
            size = trainer.selector.epoch_size(trainer.epoch)  # None (InfoBatch's pruning): known once planned
            key = (pack_key(trainer.config), size if size is not None else member, trainer.validate_each_epoch)
            by_key.setdefault(key, []).append(member)
        groups = []
        for group in by_key.values():
            most = max(1, self.kinds.limits.get(pack_key(self.trainers[group[0]].config), self.pack_size))
            groups += [group[i:i + most] for i in range(0, len(group), most)]
        return groups

    def _train_pack(self, group: list[str]) -> dict[str, dict[str, Any] | BaseException]:
        members = frozenset(group)
        pack = self.packs.get(members)
        if pack is None:  # a kept pack holding them all and others: the others taken out, it goes on
            holding = next((k for k in self.packs if members < k), None)
            if holding is not None:
                self._take_out(sorted(holding - members))
                pack = self.packs.get(members)
        if pack is None:
            self._take_out(group)
            pack = self.packs[members] = Pack([self.trainers[m] for m in group], checked=True)  # kind checked
        names = {id(self.trainers[m]): m for m in group}
        records = pack.train_epoch()
        self.fused_epochs += len(group)
        results: dict[str, dict[str, Any] | BaseException] = {names[id(t)]: r for t, r in records.items()}
        for trainer, error in pack.failed.items():
            results[names[id(trainer)]] = error
        if pack.failed:  # the pack went on without them: it is another pack now
            del self.packs[members]
            if pack.members:
                self.packs[frozenset(names[id(m.trainer)] for m in pack.members)] = pack
            pack.failed.clear()
        return results

    def _train_alone(self, member: str) -> dict[str, Any] | BaseException:
        self._take_out([member])
        self.alone_epochs += 1
        try:
            return self.trainers[member].train_epoch()
        except TrainingDiverged as exc:
            return exc

    def _take_out(self, members: list[str]) -> None:
        """Take ``members`` out of the kept packs (each written back, :meth:`Pack.remove`); the others stay in
        their packs, which go on; a pack left empty is closed."""
        for key in [k for k in self.packs if not k.isdisjoint(members)]:
            pack = self.packs.pop(key)
            stay = key.difference(members)
            if stay:
                pack.remove([self.trainers[m] for m in key.intersection(members)])
                self.packs[frozenset(stay)] = pack
            else:
                pack.close()

    def summary(self) -> dict[str, Any]:
        """What this server trained how: member-epochs in packs and alone, and why a kind did not fuse if one
        did not."""
        return {"fused_epochs": self.fused_epochs, "alone_epochs": self.alone_epochs, "notes": list(self.notes)}


def say_if_nothing_fused(summary: dict[str, Any], size: int) -> dict[str, Any]:
    """``summary`` (a :meth:`PackServer.summary`, or the sum of several) with a note where packs of ``size``
    were asked for and no two configurations trained together, without a reason said already."""
    from asp_tune.pack import PER_MEMBER

    if size > 1 and summary.get("alone_epochs") and not summary.get("fused_epochs") and not summary.get("notes"):
        summary["notes"] = [*summary.get("notes", []), "no two trials trained together: trials pack only where "
                            f"they differ in nothing but {', '.join(PER_MEMBER)} and train the same samples in an "
                            "epoch"]
    return summary


def set_threads(threads: int) -> None:
    torch.set_num_threads(max(1, int(threads)))
