"""Strategies and statistics as registered objects; one set of defaults; no import circle."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

import asp_tune
from asp_tune import ConfigError, ProxyData, ProxySelector, TrainConfig
from asp_tune.cli import main
from asp_tune.memory import register_statistic
from asp_tune.proxy_settings import ProxySettings
from asp_tune.registry import STATISTICS, STRATEGIES
from asp_tune.selection import SelectionRule
from asp_tune.static_proxies import entropy_histogram_probabilities
from asp_tune.strategies import EpochPlan, SubsetStrategy, make_strategy

PACKAGE = Path(asp_tune.__file__).resolve().parent


class EveryThird(SubsetStrategy):
    """A toy strategy defined outside the package: epoch e trains on the samples i with i % 3 == e % 3."""

    name = "every_third"

    @classmethod
    def from_settings(cls, settings):
        return cls()

    def plan(self, epoch: int) -> EpochPlan:
        idx = torch.arange(epoch % 3, self.run.num_samples, 3, device=self.run.device)
        return EpochPlan(epoch, idx[self._shuffled(idx.numel())], self.name, 1 / 3, 0.1)

    def epoch_size(self, epoch: int) -> int:
        return len(range(epoch % 3, self.run.num_samples, 3))


@pytest.fixture()
def every_third():
    asp_tune.register_strategy("every_third", EveryThird)  # after `import asp_tune`, from outside
    yield
    STRATEGIES.unregister("every_third")


def test_a_strategy_registered_from_outside_is_accepted_by_the_api_train_and_a_space(every_third, tmp_path, capsys):
    data = torch.utils.data.TensorDataset(torch.randn(30, 2), torch.arange(30) % 2)
    proxy = ProxyData(data, epochs=3, strategy="every_third")
    assert sorted(proxy.set_epoch(0).indices.tolist()) == list(range(0, 30, 3))
    assert sorted(proxy.set_epoch(1).indices.tolist()) == list(range(1, 30, 3))
    assert "every_third" in asp_tune.proxy_settings.metric_choices()
    out = tmp_path / "run"
    assert main(["train", "--metric", "every_third", "--epochs", "2", "--subset", "200", "--out", str(out),
                 "--quiet"]) == 0
    import pandas as pd

    epochs = pd.read_csv(out / "epochs.csv")
    assert list(epochs["metric_used"]) == ["every_third"] * 2 and epochs["ratio"].iloc[0] < 0.35
    from asp_tune.tune.settings import HpoSettings
    from asp_tune.tune.space import load_space

    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"name": "s", "fixed": {"epochs": 2, "subset": 200},
                                                    "params": {"lr": {"type": "grid", "values": [0.1]}}}))
    space = load_space(tmp_path / "s.yaml")  # what `asp-tune hpo --space s.yaml --metric every_third` runs
    search = HpoSettings(space=space, algo="random", ratio=0.5, metric="every_third").validate()
    assert search.trial_config().metric == "every_third"  # what each trial of `hpo --space` builds
    # and by import path, without registering
    by_path = HpoSettings(space=space, algo="random", ratio=0.5, metric="test_strategies:EveryThird")
    assert make_strategy(by_path.trial_config().metric).name == "every_third"


def test_an_unknown_strategy_and_a_bad_import_path_are_named_errors():
    with pytest.raises(ConfigError, match=r"invalid metric='nope': allowed one of 'random', 'loss'"):
        TrainConfig(metric="nope").validate()
    with pytest.raises(ConfigError, match=r"invalid metric='no_such_module:X': allowed an importable .*ModuleNotFound"):
        make_strategy("no_such_module:X")


def margin(view):
    top2 = view.log_p.exp().topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


@pytest.fixture()
def margin_statistic():
    register_statistic("margin", margin, needs=("logits",), description="top-1 minus top-2 probability")
    yield
    STATISTICS.unregister("margin")


def test_a_statistic_registered_from_outside_is_selectable_and_survives_a_checkpoint(margin_statistic, tmp_path):
    from asp_tune.trainer import Trainer

    cfg = TrainConfig(epochs=4, ratio=0.4, metric="margin", subset=300, first_epoch_full=True, unseen_first=False)
    assert "margin" in asp_tune.proxy_settings.metric_choices()
    trainer = Trainer(cfg)
    assert trainer.selector.memory.columns[-1] == "margin"
    trainer.train_epoch()
    trainer.train_epoch()
    values = trainer.selector.memory["margin"]
    assert values.min() >= 0 and values.max() <= 1 and values.abs().sum() > 0
    assert trainer.history[1]["metric_used"] == "margin"
    trainer.save_checkpoint(tmp_path / "c.pt")
    state = torch.load(tmp_path / "c.pt", weights_only=True)["selector"]["memory"]
    assert "margin" in state["latest_columns"]  # checkpoints name their columns
    again = Trainer(cfg)
    again.load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(again.selector.memory["margin"], values)
    assert again.train_epoch()["selected"] == trainer.train_epoch()["selected"]
    with_margin = Trainer(cfg.replace(metric="loss"))
    with_margin.save_checkpoint(tmp_path / "loss.pt")
    STATISTICS.unregister("margin")  # a run without the statistic refuses the checkpoint by name
    with pytest.raises(ValueError, match=r"columns .*'margin'.* differ"):
        Trainer(cfg.replace(metric="loss")).selector.load_state_dict(
            torch.load(tmp_path / "loss.pt", weights_only=True)["selector"])


def test_the_defaults_of_the_config_the_selector_the_api_and_the_rule_are_one():
    config, settings = TrainConfig(ratio=0.3), ProxySettings(ratio=0.3)
    selector = ProxySelector(100, 5, ratio=0.3, labels=torch.arange(100) % 2)
    api = ProxyData(torch.utils.data.TensorDataset(torch.randn(100, 2), torch.arange(100) % 2), 5, ratio=0.3)
    for name in (f.name for f in dataclasses.fields(ProxySettings)):
        assert getattr(config, name) == getattr(settings, name) == getattr(selector.settings, name) \
            == getattr(api.selector.settings, name), name
    rule = SelectionRule()
    for built in (selector.strategy, api.strategy, make_strategy("auto", config)):
        assert built.name == "loss" and built.rule == rule == SelectionRule.from_settings(config)
    assert rule == SelectionRule("calibrated", 1.0, 0.2, 0.3, True, True)  # the measured defaults
    # auto: full data at 1, loss at >= 0.2, a fixed random subset below
    assert [make_strategy("auto", ProxySettings(ratio=r)).name for r in (1.0, 0.5, 0.2, 0.1)] == \
        ["none", "loss", "loss", "fixed_random"]


def test_each_range_is_declared_once_and_checked_from_that_declaration():
    for field, value, allowed in (("top10_mass", 0.05, "[0.1, 1.0)"), ("uniform_floor", 1.5, "[0.0, 1.0]"),
                                  ("ratio", 0.0, "(0.0, 1.0]"), ("mixture_width", 0.0, "(0.0, inf)")):
        for make in (lambda: TrainConfig(**{field: value}).validate(),
                     lambda: ProxySelector(10, 2, **{field: value}),
                     lambda: ProxyData(list(range(10)), 2, **({field: value} if field != "ratio" else {"ratio": value}))):
            with pytest.raises(ConfigError) as error:
                make()
            assert str(error.value) == f"invalid {field}={value}: allowed a number in {allowed}"


def test_entropy_histogram_draws_inverse_to_the_density_of_the_entropy():
    """Na et al. 2021: p(x) ~ 1 / h(bin(x)); the crowded middle is thinned, both tails are kept."""
    entropy = torch.cat([torch.full((90,), 0.5), torch.tensor([0.0] * 5 + [1.0] * 5)])
    p = entropy_histogram_probabilities(entropy, bins=10)
    assert p[:90].sum() == pytest.approx(1 / 3) and p[90:].sum() == pytest.approx(2 / 3)  # 3 bins, equal mass
    assert p[0] == pytest.approx(1 / (3 * 90)) and p[-1] == pytest.approx(1 / (3 * 5))
    from asp_tune.static_proxies import ENTROPY_HISTOGRAM

    scores = type("S", (), {"score": lambda self, name: entropy})()
    chosen = ENTROPY_HISTOGRAM.choose(20, torch.zeros(100, dtype=torch.long), scores, torch.Generator().manual_seed(0))
    assert chosen.unique().numel() == 20 and int((chosen >= 90).sum()) == 10  # every tail sample: inclusion 1


def _imports(module: Path) -> set[str]:
    """The asp_tune and nas modules ``module`` imports at any level (functions too), and the ones it loads
    through ``importlib.import_module`` with a name written in that function (the command modules)."""
    found = set()
    tree = ast.parse(module.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(OURS):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(OURS)}
        elif isinstance(node, ast.FunctionDef) and any(
                isinstance(n, ast.Call) and getattr(n.func, "attr", getattr(n.func, "id", "")) == "import_module"
                for n in ast.walk(node)):
            found |= {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                      and n.value.startswith(OURS) and "." in n.value
                      and all(p.isidentifier() for p in n.value.split("."))}
    return found


OURS = ("asp_tune", "nas")


def test_the_package_import_graph_has_no_cycle():
    modules = {".".join(f.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): f
               for root in (PACKAGE, PACKAGE.parent / "nas") for f in root.rglob("*.py")}
    graph = {name: {m for m in _imports(f) if m in modules and m != name} for name, f in modules.items()}
    assert "asp_tune.tune.cli" in graph["asp_tune.cli"] and "nas.cli" in graph["asp_tune.cli"]  # importlib's too
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join(path + [dep])
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    data_layer = {"asp_tune.memory", "asp_tune.strategies", "asp_tune.proxy", "asp_tune.loop", "asp_tune.selection",
                  "asp_tune.static_proxies", "asp_tune.trainer", "asp_tune.datasets", "asp_tune.feeding"}
    for name in data_layer:  # the data layer knows nothing of Ray, NAS or the scoring model's trainer
        assert not any(m.startswith(("asp_tune.tune", "asp_tune.proxy_scores", "asp_tune.build", "asp_tune.cli"))
                       for m in graph[name]), name
