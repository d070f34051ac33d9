"""Our Hyperband scheduler: a trial whose pause was still being saved when its bracket finished is stopped,
not left PAUSED with the search waiting for it (Ray's own scheduler passes it over)."""

from __future__ import annotations

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


def resumed_bracket(scheduler) -> list[str | None]:
    """A resumed BOHB search: Tune adds the restored trials to the new scheduler, one finished before the kill,
    three to continue; these report past the bracket's milestone and pause. Which trial Tune is told to run,
    each time it asks (Tune asks again and again while nothing runs)."""
    from types import SimpleNamespace

    controller = Controller(scheduler)
    searcher = SimpleNamespace(on_pause=lambda trial_id: None, on_unpause=lambda trial_id: None)
    controller.search_alg = SimpleNamespace(searcher=searcher)
    controller.pause_trial = lambda trial, should_checkpoint=True: trial.set_status(Trial.PAUSED)
    finished = Trial("__fake", config={}, stub=True, trial_id="finished")
    finished.set_status(Trial.TERMINATED)  # as Tune restores it
    controller.trials.append(finished)
    scheduler.on_trial_add(controller, finished)
    for i in range(3):
        trial = Trial("__fake", config={"i": i}, stub=True, trial_id=f"t{i}")
        controller.trials.append(trial)
        scheduler.on_trial_add(controller, trial)
        trial.set_status(Trial.RUNNING)
    for i, trial in enumerate(controller.trials[1:]):
        if scheduler.on_trial_result(controller, trial, {"training_iteration": 9, "loss": 0.3 - i / 10}) == "PAUSE":
            trial.set_status(Trial.PAUSED)
    return [(chosen.trial_id if chosen else None) for chosen in
            (scheduler.choose_trial_to_run(controller) for _ in range(6))]


def test_a_resumed_bohb_search_goes_on_where_ray_s_scheduler_waits_forever():
    """Ray's ``HyperBandForBOHB`` put the finished trial in the new bracket, where it never reported: the bracket
    never reached its milestone, every other trial stayed PAUSED, and the resumed search never ended."""
    from ray.tune.schedulers import HyperBandForBOHB

    from asp_tune.tune.hyperband import BohbHyperband

    bohb = {**settings(), "max_t": 40}
    assert resumed_bracket(HyperBandForBOHB(**bohb)) == [None] * 6
    assert "t2" in resumed_bracket(BohbHyperband(**bohb))  # the best goes on; the others are stopped
    ctx = Context(metric="loss", mode="min", epochs=40, seed=0)
    assert type(get_algorithm("bohb").build(ctx).scheduler) is BohbHyperband
    from asp_tune.tune.algorithms import compose

    assert type(compose(HyperBandForBOHB(**bohb), None, ctx)[0].scheduler) is BohbHyperband  # one handed in


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
