"""The search's progress bar names its agreement fields and says once what they mean."""

from __future__ import annotations

from types import SimpleNamespace

from asp_tune.tune.progress import SearchProgress


def test_the_bar_says_what_its_agreement_fields_mean_and_shows_them(capsys):
    bar = SearchProgress(total=2, rungs=(1, 3), metric="val_accuracy", full_pairs=(3, 4))
    bar.setup()
    err = capsys.readouterr().err
    assert "[asp-tune] rung_tau: the lowest Kendall tau so far between two consecutive rungs' scores" in err
    assert "full_tau: the proxy's Kendall tau against full data's top rung so far (configurations; judged from 6)" \
        in err
    trials = [SimpleNamespace(trial_id=f"t{i}", status="RUNNING") for i in range(3)]
    for i, trial in enumerate(trials):
        for epoch, score in ((1, 0.1 * i), (3, 0.2 * i), (4, 0.9 - 0.2 * i)):
            bar.on_trial_result(0, trials, trial, {"epoch": epoch, "val_accuracy": score})
    postfix = bar._bar.postfix  # noqa: SLF001
    assert "rung_tau=+1.00(1->3)" in postfix and "full_tau=-1.00(3)" in postfix, postfix
    bar.on_experiment_end(trials)
    assert SearchProgress(total=1).legend() == ""


def test_trials_started_on_all_the_data_are_not_counted_as_the_proxy_s():
    """After the ratio was raised to 1, trials started on all the data paired their own full-data scores as the
    proxy's: the bar said full_tau=-1.00(3) where the summary had one configuration with both scores."""
    import pandas as pd

    from asp_tune.tune.collect import proxy_trust

    bar = SearchProgress(total=4, rungs=(1, 3), metric="val_accuracy", full_pairs=(3, 4))
    trials = [SimpleNamespace(trial_id=f"t{i}", status="RUNNING") for i in range(4)]
    histories = {}
    for i, trial in enumerate(trials):
        start = 0.3 if i < 2 else 1.0  # t2 and t3 started once the ratio was 1
        rows = [{"epoch": e, "val_accuracy": s, "start_ratio": start if e == 1 else None}
                for e, s in ((1, 0.1 * i), (3, 0.2 * i), (4, 0.9 - 0.2 * i))]
        for row in rows:
            bar.on_trial_result(0, trials, trial, {k: v for k, v in row.items() if v is not None})
        histories[trial.trial_id] = pd.DataFrame(rows)
    postfix = bar._bar.postfix  # noqa: SLF001
    assert "full_tau=-1.00(2)" in postfix, postfix  # t0 and t1 only
    record = proxy_trust((1, 3), histories)
    assert set(record.scores[1]) == set(record.scores[3]) == set(bar.trust.scores[1]) == {"t0", "t1"}
    # a search on full data (every trial started at 1) keeps them all: its rungs are its own to agree
    full = SearchProgress(total=2, rungs=(1, 3), metric="val_accuracy")
    for trial in trials[2:]:
        for row in histories[trial.trial_id].to_dict("records"):
            full.on_trial_result(0, trials, trial, {k: v for k, v in row.items() if v == v and v is not None})
    kept = proxy_trust((1, 3), {t: histories[t] for t in ("t2", "t3")})
    assert set(full.trust.scores[1]) == set(kept.scores[1]) == {"t2", "t3"}
    full.on_experiment_end(trials)
    bar.on_experiment_end(trials)


def test_the_bar_s_best_follows_the_search_s_mode():
    """A minimised metric's best is its lowest report (it showed the highest: 5.07 where the best was 0.22)."""
    trials = [SimpleNamespace(trial_id="t0", status="RUNNING")]
    for mode, best in (("min", "0.2200"), ("max", "5.0700")):
        bar = SearchProgress(total=1, metric="val_loss", mode=mode)
        for value in (5.07, 0.22, float("nan"), 1.5):
            bar.on_trial_result(0, trials, trials[0], {"epoch": 1, "val_loss": value})
        assert "best=" + best in bar._bar.postfix, bar._bar.postfix  # noqa: SLF001
        bar.on_experiment_end(trials)


def test_a_resumed_search_s_bar_counts_what_its_trials_did_before_the_interrupt(tmp_path):
    """Ray restores the bar as the search built it: a resumed search that finished closed at 9/30, its best and
    agreements over the resumed part only. And a trial a budget ended was never counted (4/12 with 5 ended)."""
    import json

    def trial(name: str, status: str, scores: list[float]) -> SimpleNamespace:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "result.json").write_text("".join(json.dumps({"epoch": e + 1, "training_iteration": e + 1,
                                                                "val_accuracy": s}) + "\n"
                                                    for e, s in enumerate(scores)))
        return SimpleNamespace(trial_id=name, status=status, local_path=str(folder), path=None)

    trials = [trial("a", "TERMINATED", [0.5, 0.7, 0.9]), trial("b", "ERROR", [0.2]),
              trial("c", "PENDING", [0.4, 0.6]), trial("d", "PENDING", [])]
    bar = SearchProgress(total=4, rungs=(1, 3))
    bar.on_step_begin(0, trials)
    bar.on_step_begin(1, trials)  # once
    assert bar._bar.n == 2 and bar.failed == 1 and bar.best == 0.9  # noqa: SLF001
    assert "rung_tau" in bar._bar.postfix  # noqa: SLF001
    trials[2].status = "TERMINATED"  # ended by a budget's stop_all: no on_trial_complete
    bar.on_experiment_end(trials)
    assert bar._bar.n == 3  # noqa: SLF001
