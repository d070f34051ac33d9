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
