"""HPO search spaces as YAML: typed parameters plus fixed settings, validated once.

```yaml
name: digits_mlp
fixed:            # any TrainConfig field
  dataset: digits
  model: mlp
  epochs: 10
params:
  lr: {type: loguniform, low: 0.01, high: 0.5}
  momentum: {type: uniform, low: 0.5, high: 0.99}
  batch_size: {type: int, low: 32, high: 256}      # inclusive
  label_smoothing: {type: choice, values: [0.0, 0.1]}
  flip_p: {type: grid, values: [0.25, 0.5, 0.75]}   # every value, crossed with the rest
```
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from asp_tune.config import MODEL_ARGS, TrainConfig, with_params
from asp_tune.errors import ConfigError

PARAM_TYPES = ("loguniform", "uniform", "int", "choice", "grid")
#: Fields an HPO run controls itself (from its flags), so a space may not set them.
RUN_FIELDS = ("ratio", "ratio_schedule", "metric", "seed", "device")



@dataclass(frozen=True)
class Param:
    name: str
    type: str
    low: float | None = None
    high: float | None = None
    values: tuple[Any, ...] = ()


@dataclass(frozen=True)
class SearchSpace:
    name: str
    fixed: dict[str, Any]
    params: tuple[Param, ...]

    @property
    def has_grid(self) -> bool:
        return any(p.type == "grid" for p in self.params)

    @property
    def grid_only(self) -> bool:
        """Every searched parameter is a grid (or none is searched): the space is its configurations, each
        one trial, with nothing drawn at random that a repeat would draw otherwise."""
        return all(p.type == "grid" for p in self.params)

    def grid_size(self) -> int:
        size = 1
        for p in self.params:
            if p.type == "grid":
                size *= len(p.values)
        return size

    def grid_configs(self) -> list[dict[str, Any]]:
        """Every configuration of an all-grid/choice space (choices are crossed too)."""
        for p in self.params:
            if p.type not in ("grid", "choice"):
                raise ConfigError(f"params.{p.name}.type", p.type, "grid or choice for an exhaustive grid")
        names = [p.name for p in self.params]
        return [dict(zip(names, combo)) for combo in itertools.product(*(p.values for p in self.params))]

    def to_tune(self) -> dict[str, Any]:
        """Ray Tune domains for the searched parameters."""
        from ray import tune

        space: dict[str, Any] = {}
        for p in self.params:
            if p.type == "loguniform":
                space[p.name] = tune.loguniform(p.low, p.high)
            elif p.type == "uniform":
                space[p.name] = tune.uniform(p.low, p.high)
            elif p.type == "int":
                space[p.name] = tune.randint(int(p.low), int(p.high) + 1)
            elif p.type == "choice":
                space[p.name] = tune.choice(list(p.values))
            else:
                space[p.name] = tune.grid_search(list(p.values))
        return space

    def to_configspace(self, seed: int = 0):
        """A ConfigSpace for BOHB; grid parameters become categorical (BOHB has no grid)."""
        import ConfigSpace as CS

        cs = CS.ConfigurationSpace(seed=seed)
        for p in self.params:
            if p.type in ("loguniform", "uniform"):
                hp = CS.UniformFloatHyperparameter(p.name, lower=p.low, upper=p.high, log=p.type == "loguniform")
            elif p.type == "int":
                hp = CS.UniformIntegerHyperparameter(p.name, lower=int(p.low), upper=int(p.high))
            else:
                hp = CS.CategoricalHyperparameter(p.name, choices=list(p.values))
            cs.add(hp)
        return cs

    def first_params(self) -> dict[str, Any]:
        """Every parameter at its low end (a range's ``low``, a list's first value): the configuration a search
        checks and measures before its trials."""
        return {p.name: (p.low if p.type in RANGE_TYPES else p.values[0]) for p in self.params}

    def extreme_params(self, names: Any, limit: int = 16,
                       largest: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Configurations that take the parameters ``names`` to their ends (a range's low and high, each listed
        value), the rest at :meth:`first_params`: every combination where there are at most ``limit``, else each
        parameter's ends alone and one combination of them all: each at its end that ``largest`` (given the
        configurations of one parameter's ends, the one that weighs most) picks, or at its last end."""
        first = self.first_params()
        ends = {p.name: _ends(p) for p in self.params if p.name in names}
        if math.prod(len(v) for v in ends.values()) <= limit:
            return [{**first, **dict(zip(ends, combo))} for combo in itertools.product(*ends.values())]
        alone = {name: [{**first, name: value} for value in values] for name, values in ends.items()}
        heaviest = {name: (largest(configs) if largest else configs[-1])[name] for name, configs in alone.items()}
        return [c for configs in alone.values() for c in configs] + [{**first, **heaviest}]

    def sizing_configs(self, run: dict[str, Any],
                       measure: Callable[[TrainConfig], float | None] | None = None) -> list[TrainConfig]:
        """The trial configurations that bound a pack's memory: the space's parameters that change what a pack
        holds (all but the per-member ones: network arguments, batch size, optimiser, ...) at their ends
        (:meth:`extreme_params`, ``measure``: a configuration's footprint in bytes, None where unknown, which
        picks each parameter's heaviest end when there are too many combinations to take them all), one
        configuration per pack kind, the first configuration's first; ``run``: the run's own fields."""
        from asp_tune.pack import PER_MEMBER, pack_key

        def config(params: dict[str, Any]) -> TrainConfig | None:
            try:
                return self.train_config(params, **run)
            except ConfigError:  # a combination its trials refuse by name when drawn
                return None

        def largest(options: list[dict[str, Any]]) -> dict[str, Any]:
            weights = [(measure(c) if c is not None and measure else None) for c in map(config, options)]
            known = [(w, i) for i, w in enumerate(weights) if w is not None]
            return options[max(known)[1]] if known else options[-1]

        sizing = [p.name for p in self.params if p.name.split(".", 1)[0] not in PER_MEMBER]
        configs: dict[tuple, TrainConfig] = {}
        for params in [self.first_params(), *self.extreme_params(sizing, largest=largest)]:
            made = config(params)
            if made is not None:
                configs.setdefault(pack_key(made), made)
        return list(configs.values())

    def train_config(self, params: dict[str, Any], **run: Any) -> TrainConfig:
        """The TrainConfig of one trial: fixed settings, sampled params (``model_args.NAME`` ones go into
        the builder's keyword arguments; NumPy scalars a searcher handed out as Python values), then the
        run's own flags."""
        values = {**with_params(self.fixed, plain_values(params)), **run}
        if "milestones" in values:
            values["milestones"] = tuple(values["milestones"])
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in values.items() if k in known}).validate()


def plain_values(value: Any) -> Any:
    """``value`` (a configuration, or anything in one) with every NumPy scalar (array) as its Python number or
    bool (list): ConfigSpace's (BOHB's) choices are NumPy scalars, which a checkpoint loaded with
    ``weights_only`` refuses and a JSON record writes as a string."""
    if isinstance(value, dict):
        return {k: plain_values(v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return type(value)(*(plain_values(v) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(plain_values(v) for v in value)
    return value.tolist() if type(value).__module__ == "numpy" and hasattr(value, "tolist") else value  # arrays too


def _ends(p: Param) -> tuple[Any, ...]:
    if p.type in RANGE_TYPES:
        return (int(p.low), int(p.high)) if p.type == "int" else (p.low, p.high)
    return tuple(p.values)


#: Integer bounds a Ray sampler (NumPy's int64 generator) can draw between.
MAX_INT_BOUND = 2**62
RANGE_TYPES = ("loguniform", "uniform", "int")


def _parse_fixed(data: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    fixed = data.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise ConfigError("fixed", fixed, "a mapping of TrainConfig fields")
    for key in fixed:
        if key not in fields:
            raise ConfigError(f"fixed.{key}", key, "a TrainConfig field: " + ", ".join(sorted(fields)))
        if key in RUN_FIELDS:
            raise ConfigError(f"fixed.{key}", fixed[key], f"not settable in a space ({', '.join(RUN_FIELDS)} "
                                                           "come from the command's flags)")
    return fixed


def _raw_params(data: dict[str, Any]) -> dict[str, Any]:
    """The ``params`` mapping, with a nested ``model_args: {NAME: {...}}`` flattened to ``model_args.NAME``."""
    raw = data.get("params") or {}
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("params", raw, "a non-empty mapping of parameter -> {type, ...}")
    nested = raw.get("model_args")
    if isinstance(nested, dict) and "type" not in nested:  # params: {model_args: {width: {...}}}
        raw = {name: spec for key, value in raw.items()  # in the order written
               for name, spec in ({f"{MODEL_ARGS}{k}": v for k, v in nested.items()}.items()
                                  if key == "model_args" else ((key, value),))}
    return raw


def _parse_param(pname: str, spec: Any, fields: dict[str, Any], fixed: dict[str, Any]) -> Param:
    where = f"params.{pname}"
    if pname.startswith(MODEL_ARGS):
        if not pname[len(MODEL_ARGS):].isidentifier():
            raise ConfigError(where, pname, "model_args.NAME with NAME a keyword argument of the builder")
    elif pname not in fields:
        raise ConfigError(where, pname, "a TrainConfig field: " + ", ".join(sorted(fields)))
    if pname in RUN_FIELDS or pname in fixed:
        raise ConfigError(where, pname, "a field not fixed and not one of " + ", ".join(RUN_FIELDS))
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(where, spec, "a mapping with 'type' and its arguments")
    ptype = spec["type"]
    if ptype not in PARAM_TYPES:
        raise ConfigError(f"{where}.type", ptype, PARAM_TYPES)
    extra = set(spec) - ({"type", "low", "high"} if ptype in RANGE_TYPES else {"type", "values"})
    if extra:
        raise ConfigError(f"{where}", sorted(extra)[0], "keys type, low, high" if ptype in RANGE_TYPES
                          else "keys type, values")
    if ptype not in RANGE_TYPES:
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.values", values, "a non-empty list")
        return Param(pname, ptype, values=tuple(values))
    low, high = spec.get("low"), spec.get("high")
    for bound, v in (("low", low), ("high", high)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ConfigError(f"{where}.{bound}", v, "a finite number")
        if ptype == "int" and not (isinstance(v, int) and abs(v) < MAX_INT_BOUND):
            raise ConfigError(f"{where}.{bound}", v, "an integer of magnitude below 2**62 (what Ray's sampler draws)")
    if not low < high:
        raise ConfigError(f"{where}.high", high, f"a number > low ({low})")
    if ptype == "loguniform" and low <= 0:
        raise ConfigError(f"{where}.low", low, "a number > 0 for loguniform")
    return Param(pname, ptype, low=low, high=high)


def _check_corners(space: SearchSpace, raw_params: dict[str, Any]) -> None:
    """Both ends of every range and every listed value must make a valid TrainConfig (one parameter varied
    at a time from the low corner), so no trial fails on a value the space allows."""
    low = space.first_params()
    samples = [low] + [{**low, p.name: value} for p in space.params
                       for value in ((p.high,) if p.type in RANGE_TYPES else p.values[1:])]
    for sample in samples:
        try:
            if space.train_config(sample).val_fraction == 0:  # allowed for nas-retrain alone
                raise ConfigError("val_fraction", 0.0, "a fraction in (0, 1): a search scores every trial on a "
                                                       "held-out split")
        except ConfigError as exc:
            where = f"params.{exc.field}" if exc.field in raw_params else f"fixed.{exc.field}"
            raise ConfigError(where, exc.value, exc.allowed) from None


def parse_space(data: Any, name: str = "space") -> SearchSpace:
    """Validate a search-space mapping; errors name the offending field."""
    if not isinstance(data, dict):
        raise ConfigError(name, type(data).__name__, "a mapping with keys name, fixed, params")
    unknown = set(data) - {"name", "fixed", "params", "description"}
    if unknown:
        raise ConfigError(f"{name}: key", sorted(unknown)[0], ["name", "description", "fixed", "params"])
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    fixed = _parse_fixed(data, fields)
    raw_params = _raw_params(data)
    params = tuple(_parse_param(pname, spec, fields, fixed) for pname, spec in raw_params.items())
    space_name = data.get("name", name)
    if not (isinstance(space_name, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", space_name)):
        raise ConfigError("name", space_name, "letters, digits, '.', '_' and '-' (at most 100, not starting with "
                                              "'.'): it names the experiment's folder")
    space = SearchSpace(space_name, dict(fixed), params)
    _check_corners(space, raw_params)
    return space


MAX_SPACE_BYTES = 1_000_000


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader without its two traps for a configuration file: a key given twice (the last
    would silently win) and aliases (``*name``: nested, they make a few lines expand to gigabytes)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a search space",
                                              event.start_mark)
        return super().compose_node(parent, index)


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a YAML search space."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("space", str(path), "an existing YAML file (see search_spaces/)")
    if path.stat().st_size > MAX_SPACE_BYTES:
        raise ConfigError("space", str(path), f"a YAML file of at most {MAX_SPACE_BYTES // 1000} kB (a search space "
                                              "is a few lines)")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except UnicodeDecodeError as exc:
        raise ConfigError("space", str(path), f"a UTF-8 text file (byte {exc.start} is not UTF-8)") from None
    except yaml.YAMLError as exc:
        raise ConfigError("space", str(path), f"valid YAML ({exc.__class__.__name__}: {exc})") from None
    from asp_tune.imports import add_code_folder

    add_code_folder(path.resolve().parent)  # import paths in it resolve from its folder, then the current one
    space = parse_space(data, name=path.stem)
    data_dir = space.fixed.get("data_dir")
    if isinstance(data_dir, str) and "://" not in data_dir and not Path(data_dir).expanduser().is_absolute():
        # a relative data_dir means: relative to this YAML file, wherever the command runs from
        resolved = str((path.resolve().parent / data_dir).resolve())
        space = SearchSpace(space.name, {**space.fixed, "data_dir": resolved}, space.params)
    return space
