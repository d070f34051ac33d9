"""The settings an Optuna study's trials were trained with, kept in the study (no Ray, no torch).

A study outlives a call: it is resumed from storage, or joined by a later search of the same name. Each call
keeps its settings (what a trial trains with, less the values the space searches) in the study's user
attribute :data:`RUN_ATTR`, by a tag that each of its trials keeps in its own user attribute of that name.
Trials of other tags were trained otherwise (other epochs, model, ratio, strategy, ...): a call into a study
that holds some is warned, naming what differs, and their values are compared with no other tag's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from typing import Any

#: The study's user attribute that keeps the run settings of its trials, by tag; each trial keeps its tag in
#: its own user attribute of the same name.
RUN_ATTR = "asp_tune_run"


def trained_settings(space: Any, config: Any, **more: Any) -> dict[str, Any]:
    """``config`` (the TrainConfig of one trial of ``space``) as the JSON its study keeps, without the fields
    the space searches (``model_args.NAME``: that key alone) and those that do not change what a trial learns
    (:data:`~asp_tune.config.SETTINGS_FREE_IN_A_STUDY`: device, data folder, evaluation batch, ...): what every
    trial of the run trains with; with ``more`` (the search's own settings) beside."""
    from asp_tune.config import SETTINGS_FREE_IN_A_STUDY

    learnt = {k: v for k, v in dataclasses.asdict(config).items() if k not in SETTINGS_FREE_IN_A_STUDY}
    text = json.loads(json.dumps({**learnt, **more}, default=str))
    for p in space.params:
        *parents, last = p.name.split(".")
        holder = text
        for key in parents:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(holder, dict):
            holder.pop(last, None)
    return text


def settings_tag(text: dict[str, Any]) -> str:
    """A short hash of settings (:func:`trained_settings`), the same in every process."""
    return hashlib.sha256(json.dumps(text, sort_keys=True).encode()).hexdigest()[:12]


def check_settings(study: Any, text: dict[str, Any], notes: list[str], stacklevel: int = 3) -> str:
    """Keep ``text`` (the settings of this call's trials) in ``study`` under its tag, returned for the trials to
    keep; warn (and note) while the study holds trials trained with other settings, naming the settings that
    differ, as every later call into it does."""
    text = json.loads(json.dumps(text, default=str))  # as the study's storage keeps it
    tag = settings_tag(text)
    kept = study.user_attrs.get(RUN_ATTR)
    by_tag = isinstance(kept, dict) and all(isinstance(v, dict) for v in kept.values())
    legacy = kept if isinstance(kept, dict) and not by_tag and kept != text else None  # an older asp_tune's
    kept = dict(kept) if by_tag else {}
    others = {t.user_attrs.get(RUN_ATTR) for t in study.trials} - {tag, None}
    if others or (legacy is not None and study.trials):
        earlier = [kept.get(o, {}) for o in sorted(others)] if others else [legacy]
        # a setting an older record did not keep is not named: it may not have differed
        changed = dict.fromkeys(sorted(k for before in earlier for k in before.keys() & text.keys()
                                       if before[k] != text[k]))
        held = sum(1 for t in study.trials if t.user_attrs.get(RUN_ATTR) in others) or len(study.trials)
        notes.append(f"{held} of this study's trials were trained with other settings "
                     f"({', '.join(changed) + ' differ' if changed else 'not all of them kept'}): their values "
                     "and this call's are not comparable")
        warnings.warn(notes[-1], stacklevel=stacklevel)
    study.set_user_attr(RUN_ATTR, {**kept, tag: text})
    return tag
