"""Our Hyperband scheduler: a trial whose pause was still being saved when its bracket finished is stopped,
not left PAUSED with the search waiting for it (Ray's own scheduler passes it over)."""

from __future__ import annotations

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from asp_tune.tune.algorithms import Context, get_algorithm
from asp_tune.tune.hyperband import Hyperband


class Controller:
    """What a scheduler sees of Tune's controller: the trials, and stopping one."""

    def __init__(self, scheduler):
        self.trials: list[Trial] = []
        self.scheduler = scheduler

    def get_trials(self) -> list[Trial]:
        return self.trials

    def get_live_trials(self) -> list[Trial]:
        return [t for t in self.trials if t.status not in (Trial.TERMINATED, Trial.ERROR)]

    def stop_trial(self, trial: Trial) -> None:  # as Tune does: the scheduler hears of a paused trial's removal
        if trial.status in (Trial.PENDING, Trial.PAUSED):
            self.scheduler.on_trial_remove(self, trial)
        trial.set_status(Trial.TERMINATED)


def race(scheduler) -> list[str]:
    """The trials' statuses after the race: a trial's pause lands after its bracket finished."""
    controller = Controller(scheduler)
    for i in range(3):  # the first bracket: three trials straight to the last milestone
        trial = Trial("__fake", config={"i": i}, stub=True, trial_id=f"t{i}")
        controller.trials.append(trial)
        scheduler.on_trial_add(controller, trial)
        trial.set_status(Trial.RUNNING)
    first, saving, last = controller.trials
    assert scheduler.on_trial_result(controller, first, {"training_iteration": 9, "loss": 0.3}) == TrialScheduler.PAUSE
    first.set_status(Trial.PAUSED)
    assert scheduler.on_trial_result(controller, saving, {"training_iteration": 9, "loss": 0.2}) == TrialScheduler.PAUSE
    # the last trial finishes the bracket while the second's pause is still being saved (it is RUNNING)
    assert scheduler.on_trial_result(controller, last, {"training_iteration": 9, "loss": 0.1}) == TrialScheduler.STOP
    last.set_status(Trial.TERMINATED)
    assert first.status == Trial.TERMINATED  # stopped by Ray's scheduler: it was PAUSED in time
    saving.set_status(Trial.PAUSED)  # its save lands now, in a finished bracket
    assert scheduler.choose_trial_to_run(controller) is None
    return [t.status for t in controller.trials]


def settings() -> dict:
    return {"time_attr": "training_iteration", "max_t": 9, "reduction_factor": 3, "metric": "loss", "mode": "min"}


def test_a_trial_paused_after_its_bracket_finished_is_stopped():
    assert race(Hyperband(**settings())) == [Trial.TERMINATED] * 3


def test_the_hyperband_algorithm_uses_this_scheduler():
    built = get_algorithm("hyperband").build(Context(metric="val_accuracy", mode="max", epochs=9, seed=0))
    assert type(built.scheduler) is Hyperband


def test_a_hyperband_scheduler_handed_in_runs_as_ours_with_its_settings_and_a_subclass_as_given():
    from ray.tune.schedulers import HyperBandScheduler

    from asp_tune.tune.algorithms import compose

    ctx = Context(metric="val_accuracy", mode="max", epochs=9, seed=0)
    theirs = HyperBandScheduler(**{**settings(), "max_t": 27})
    built, _ = compose(theirs, None, ctx)
    assert type(built.scheduler) is Hyperband and type(theirs) is HyperBandScheduler  # theirs keeps its class
    assert (built.scheduler._max_t_attr, built.scheduler._eta, built.scheduler.metric) == (27, 3, "loss")
    assert race(compose(HyperBandScheduler(**settings()), None, ctx)[0].scheduler) == [Trial.TERMINATED] * 3

    class Own(HyperBandScheduler):
        pass

    own = Own(**settings())
    assert compose(own, None, ctx)[0].scheduler is own


class Interrupted(Exception):
    pass


class Tune(Controller):
    """Tune's loop, one trial at a time, each report written to the trial's ``result.json``: it runs what the
    scheduler chooses until told to pause or stop, and can be interrupted after a given number of reports."""

    def __init__(self, scheduler, folder, scores, max_t):
        super().__init__(scheduler)
        from types import SimpleNamespace

        self.folder, self.scores, self.max_t, self.clock = folder, scores, max_t, 0
        self.search_alg = SimpleNamespace(searcher=SimpleNamespace(on_pause=lambda trial_id: None,
                                                                   on_unpause=lambda trial_id: None))

    def _set_trial_status(self, trial, status):
        trial.set_status(status)

    def stop_trial(self, trial):
        if trial.status == Trial.RUNNING:
            self.scheduler.on_trial_complete(self, trial, {})
            trial.set_status(Trial.TERMINATED)
        else:
            super().stop_trial(trial)

    def reports(self, trial) -> list[dict]:
        import json

        file = self.folder / trial.trial_id / "result.json"
        return [json.loads(line) for line in file.read_text().splitlines()] if file.exists() else []

    def run(self, interrupt_after: int | None = None) -> None:
        import json

        while (trial := self.scheduler.choose_trial_to_run(self)) is not None:
            trial.set_status(Trial.RUNNING)
            epoch = max((r["training_iteration"] for r in self.reports(trial)), default=0)
            while epoch < self.max_t:  # a trial restored at its end completes at once, as the trainable returns
                epoch += 1
                self.clock += 1
                result = {"training_iteration": epoch, "loss": self.scores[trial.trial_id] / epoch, "time": self.clock}
                (self.folder / trial.trial_id).mkdir(exist_ok=True)
                with open(self.folder / trial.trial_id / "result.json", "a") as f:
                    f.write(json.dumps(result) + "\n")
                if interrupt_after is not None and self.clock >= interrupt_after:
                    raise Interrupted
                decision = self.scheduler.on_trial_result(self, trial, result)
                if decision == TrialScheduler.PAUSE:
                    trial.set_status(Trial.PAUSED)
                elif decision == TrialScheduler.STOP or epoch == self.max_t:
                    self.stop_trial(trial)
                else:
                    continue
                break
            else:
                self.stop_trial(trial)

    def outcome(self) -> dict[str, tuple[str, int]]:
        return {t.trial_id: (t.status, len(self.reports(t))) for t in self.trials}


def search(scheduler, folder, interrupt_after=None, n=17, max_t=9):
    """A 17-trial search (one Hyperband band at max_t 9, eta 3); interrupted, it is resumed as Ray resumes one:
    a new scheduler unpickled from the one the search was built with, the trials added in the order of their
    last report, those unfinished as PENDING."""
    import random

    import cloudpickle

    built = cloudpickle.dumps(scheduler)  # Ray's tuner.pkl: the scheduler before any trial
    rng = random.Random(0)
    scores = {f"t{i:02d}": rng.uniform(1, 2) for i in range(n)}
    tune = Tune(scheduler, folder, scores, max_t)
    for i in range(n):
        trial = Trial("__fake", config={"i": i}, stub=True, trial_id=f"t{i:02d}", experiment_tag=f"{i + 1}_i={i}")
        tune.trials.append(trial)
        scheduler.on_trial_add(tune, trial)
    try:
        tune.run(interrupt_after)
        return tune.outcome()
    except Interrupted:
        pass
    resumed = Tune(cloudpickle.loads(built), folder, scores, max_t)
    for trial in sorted(tune.trials, key=lambda t: max([r["time"] for r in tune.reports(t)], default=0), reverse=True):
        if trial.status not in (Trial.TERMINATED, Trial.ERROR):
            trial.set_status(Trial.PENDING)
        resumed.trials.append(trial)
        resumed.scheduler.on_trial_add(resumed, trial)
    resumed.run()
    return resumed.outcome()


@pytest.mark.parametrize("interrupt_after", [4, 16, 30, 45])
@pytest.mark.parametrize("kind", ["hyperband", "bohb"])
def test_a_resumed_hyperband_search_stops_and_trains_the_trials_the_uninterrupted_one_does(kind, interrupt_after,
                                                                                         tmp_path, monkeypatch):
    """Ray restores a Hyperband scheduler as built, its brackets empty, and adds the restored trials in the order
    of their last report: its own put them in other brackets, halved other trials and (BOHB) waited forever
    behind a finished one. Ours places them as they were made and replays their reports: the resumed search
    stops the same trials after the same epochs as the uninterrupted one."""
    from ray.tune.schedulers import HyperBandForBOHB, HyperBandScheduler

    from asp_tune.tune import hyperband
    from asp_tune.tune.hyperband import BohbHyperband

    monkeypatch.setattr(hyperband, "trial_folder", lambda trial: tmp_path / "cut" / trial.trial_id)
    ours, theirs = {"hyperband": (Hyperband, HyperBandScheduler), "bohb": (BohbHyperband, HyperBandForBOHB)}[kind]
    (tmp_path / "whole").mkdir()
    (tmp_path / "cut").mkdir()
    whole = search(ours(**settings()), tmp_path / "whole")
    assert sum(1 for status, epochs in whole.values() if epochs == 9) >= 3 and {s for s, _ in whole.values()} == {
        Trial.TERMINATED}
    assert search(ours(**settings()), tmp_path / "cut", interrupt_after) == whole


def test_ray_s_own_hyperband_schedulers_resume_otherwise(tmp_path, monkeypatch):
    """What the test above guards against: Ray's schedulers, resumed the same way, end elsewhere."""
    from ray.tune.schedulers import HyperBandForBOHB, HyperBandScheduler

    for i, theirs in enumerate((HyperBandScheduler, HyperBandForBOHB)):
        (tmp_path / f"w{i}").mkdir()
        (tmp_path / f"c{i}").mkdir()
        assert search(theirs(**settings()), tmp_path / f"c{i}", 16) != search(theirs(**settings()), tmp_path / f"w{i}")


def test_the_bohb_algorithm_and_one_handed_in_use_our_scheduler():
    from ray.tune.schedulers import HyperBandForBOHB

    from asp_tune.tune.algorithms import compose
    from asp_tune.tune.hyperband import BohbHyperband

    ctx = Context(metric="loss", mode="min", epochs=40, seed=0)
    assert type(get_algorithm("bohb").build(ctx).scheduler) is BohbHyperband
    assert type(compose(HyperBandForBOHB(**{**settings(), "max_t": 40}), None, ctx)[0].scheduler) is BohbHyperband


def test_a_resumed_asha_records_the_reports_its_trials_made_before_the_interrupt(tmp_path):
    """Ray restores ASHA as it was built (its rungs empty): a resumed 30-trial search trained 8 trials to the end
    where the uninterrupted one trained 5. Each trial added with reports has them replayed into its bracket."""
    import json
    from types import SimpleNamespace

    from asp_tune.tune.asha import ResumableASHA

    def trial(name: str, scores: list[float]) -> SimpleNamespace:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "result.json").write_text("".join(json.dumps({"training_iteration": i + 1, "val_accuracy": s}) + "\n"
                                                    for i, s in enumerate(scores)))
        return SimpleNamespace(trial_id=name, local_path=str(folder), path=None, status=Trial.TERMINATED)

    asha = get_algorithm("asha").build(Context(9, grace_period=1, reduction_factor=3, metric="val_accuracy",
                                               mode="max")).scheduler
    assert isinstance(asha, ResumableASHA)
    for name, scores in (("a", [0.9, 0.92, 0.95]), ("b", [0.8]), ("c", [0.85]), ("d", [0.7])):
        asha.on_trial_add(None, trial(name, scores))
    rungs = dict(asha._brackets[0]._rungs)
    assert rungs[1] == {"a": 0.9, "b": 0.8, "c": 0.85, "d": 0.7} and rungs[3] == {"a": 0.95}
    late = SimpleNamespace(trial_id="e", local_path=str(tmp_path / "none"), path=None, status=Trial.PENDING)
    asha.on_trial_add(None, late)  # a trial without reports: nothing replayed
    # its first rung's score below the records' cut (the top third) stops it, as it would have uninterrupted
    assert asha.on_trial_result(None, late, {"training_iteration": 1, "val_accuracy": 0.8}) == TrialScheduler.STOP


def test_a_resumed_bohb_search_replays_the_halving_of_a_bracket_that_never_filled(tmp_path, monkeypatch):
    """20 trials: the second band's first bracket holds 2 of its 9, and BOHB halves it once nothing else runs.
    The replay halved only full brackets: resumed after 80 or 82 reports, a kept trial trained past its milestone
    again and another went to the end."""
    from asp_tune.tune import hyperband
    from asp_tune.tune.hyperband import BohbHyperband

    def run(tag, cut):
        (tmp_path / tag).mkdir()
        monkeypatch.setattr(hyperband, "trial_folder", lambda trial: tmp_path / tag / trial.trial_id)
        return search(BohbHyperband(**settings()), tmp_path / tag, cut, n=20)

    whole = run("whole", None)
    assert run("c80", 80) == whole and run("c82", 82) == whole


def restored(scheduler_class, tmp_path, monkeypatch, reports: dict[str, list[float]], finished=(), **kwargs):
    """A scheduler as Ray resumes it (unpickled from its state before any trial), given restored trials with
    these losses per epoch (their ``result.json``), the ``finished`` ones TERMINATED, the rest PENDING; its
    placement done (Tune asked what to run). Returns (scheduler, Tune, the searcher's calls)."""
    import json

    import cloudpickle

    from asp_tune.tune import hyperband

    monkeypatch.setattr(hyperband, "trial_folder", lambda trial: tmp_path / trial.trial_id)
    scheduler = cloudpickle.loads(cloudpickle.dumps(scheduler_class(**settings(), **kwargs)))
    tune = Tune(scheduler, tmp_path, {}, 9)
    calls: list[tuple[str, str]] = []
    tune.search_alg.searcher.on_pause = lambda trial_id: calls.append(("pause", trial_id))
    tune.search_alg.searcher.on_unpause = lambda trial_id: calls.append(("unpause", trial_id))
    for i, (name, losses) in enumerate(reports.items()):
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text("".join(
            json.dumps({"training_iteration": e + 1, "loss": v}) + "\n" for e, v in enumerate(losses)))
        trial = Trial("__fake", config={}, stub=True, trial_id=name, experiment_tag=f"{i + 1}_x")
        trial.set_status(Trial.TERMINATED if name in finished else Trial.PENDING)
        tune.trials.append(trial)
        scheduler.on_trial_add(tune, trial)
    scheduler.choose_trial_to_run(tune)
    return scheduler, tune, calls


def test_bohb_s_searcher_learns_which_restored_trials_wait_and_which_run(tmp_path, monkeypatch):
    """BOHB's searcher state is saved with Tune's, which can predate a halving the replay makes: a kept trial
    it still counted paused let it hand out configurations beyond max_concurrent."""
    from asp_tune.tune.hyperband import BohbHyperband

    # BOHB's first bracket: 9 trials to milestone 1, the best 3 kept to milestone 3; two reached it
    losses = {f"t{i}": [1 + i / 10] for i in range(9)}
    losses |= {"t0": [1.0, 0.9, 0.8], "t1": [1.1, 1.0, 0.9], "t2": [1.2, 1.1]}
    _, tune, calls = restored(BohbHyperband, tmp_path, monkeypatch, losses, finished={f"t{i}" for i in range(3, 9)})
    status = {t.trial_id: t.status for t in tune.trials}
    assert (status["t0"], status["t1"], status["t2"]) == (Trial.PAUSED, Trial.PAUSED, Trial.PENDING)
    assert sorted(calls) == [("pause", "t0"), ("pause", "t1"), ("unpause", "t2")]


def test_a_resumed_bracket_whose_last_trials_go_on_leaves_out_the_trials_that_ended(tmp_path, monkeypatch):
    """``stop_last_trials=False`` (a user's HyperBandScheduler, run as ours): at the last milestone the bracket
    is never finished; the replay kept a trial that had ended in it, and Ray's next halving raised on it."""
    from asp_tune.tune.hyperband import FINISHED

    losses = {"t0": [1.0] * 9, "t1": [1.1] * 9, "t2": [1.2] * 9}  # the first bracket: three trials to 9 epochs
    scheduler, tune, _ = restored(Hyperband, tmp_path, monkeypatch, losses, finished={"t0"}, stop_last_trials=False)
    bracket = scheduler._trial_info[tune.trials[0]][0]
    assert [t.trial_id for t in bracket._live_trials] == ["t1", "t2"]
    assert not any(t.status in FINISHED for t in bracket._live_trials)


@pytest.mark.parametrize("kind", ["hyperband", "bohb"])
def test_a_trial_paused_below_its_milestone_runs_again_where_nothing_else_can(kind, tmp_path, monkeypatch):
    """Resumed from Ctrl-C, a restored trial was paused as it started, before any report: below its milestone,
    never in the bracket's list to unpause, it was never chosen again and Tune spun at full CPU forever."""
    from asp_tune.tune.hyperband import BohbHyperband

    scheduler_class = {"hyperband": Hyperband, "bohb": BohbHyperband}[kind]
    losses = {"t0": [1.0, 0.9], "t1": [1.1] * 9, "t2": [1.2] * 9}  # the first bracket: to 9 epochs, two done
    scheduler, tune, _ = restored(scheduler_class, tmp_path, monkeypatch, losses, finished={"t1", "t2"})
    paused = tune.trials[0]
    paused.set_status(Trial.PAUSED)
    assert scheduler.choose_trial_to_run(tune) is paused
