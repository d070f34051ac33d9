"""The pack worker's state without Ray: trials joining, training an epoch at a time in packs, leaving, their
checkpoints; each member's records those of its trainer alone."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from asp_tune.build import build_trainer
from asp_tune.registry import MODELS
from asp_tune.trainer import TrainingDiverged
from asp_tune.tune.pack_server import PackServer
from asp_tune.tune.space import parse_space

SPACE = {"name": "tiny", "fixed": {"dataset": "digits", "model": "mlp", "epochs": 4, "subset": 600, "batch_size": 64,
                                   "model_args": {"hidden": 32}},
         "params": {"lr": {"type": "loguniform", "low": 0.02, "high": 0.3},
                    "momentum": {"type": "uniform", "low": 0.5, "high": 0.9}}}
RUN = {"ratio": 0.4, "ratio_schedule": "constant", "metric": "loss", "seed": 5, "device": "cpu", "epochs": 4}
PARAMS = [{"lr": 0.03 * (i + 1), "momentum": 0.5 + 0.1 * i} for i in range(4)]


def server(space: dict = SPACE, size: int = 4, validate=None) -> PackServer:
    return PackServer(parse_space(space), RUN, None, size, validate_epochs=validate)


def alone(srv: PackServer, params: dict, epochs: int) -> list[dict]:
    trainer = build_trainer(srv.config_of(params))
    return [trainer.train_epoch() for _ in range(epochs)]


def same(a: dict, b: dict) -> None:
    assert a["epoch"] == b["epoch"] and a["selected"] == b["selected"]
    assert math.isclose(a["train_loss"], b["train_loss"], rel_tol=1e-5)
    assert a["val_accuracy"] == pytest.approx(b["val_accuracy"], abs=1e-9)


def test_members_joining_at_different_epochs_train_in_one_pack_and_follow_their_runs_alone():
    srv = server()
    for i, p in enumerate(PARAMS):
        srv.join(f"t{i}", p)
    got: dict[str, list] = {f"t{i}": [] for i in range(4)}
    for asked in (["t0", "t1", "t2"], ["t0", "t1", "t2"], ["t0", "t1", "t2", "t3"], ["t0", "t1", "t2", "t3"]):
        for member, record in srv.train(asked).items():
            got[member].append(record)
    assert srv.fused_epochs >= 9 and srv.notes == []
    for i, p in enumerate(PARAMS):
        ours = got[f"t{i}"]
        for a, b in zip(alone(srv, p, len(ours)), ours):
            same(a, b)
    assert srv.done("t0") and not srv.done("t3")


def test_a_member_checkpoint_from_the_pack_continues_like_the_run_alone():
    srv = server()
    for i, p in enumerate(PARAMS[:3]):
        srv.join(f"t{i}", p)
    srv.train(["t0", "t1", "t2"])
    srv.train(["t0", "t1", "t2"])
    state = srv.state("t1")  # written back from the kept pack
    later = [srv.train(["t0", "t1", "t2"])["t1"] for _ in range(2)]
    other = server()
    info = other.join("again", PARAMS[1], state=state)
    assert info["restored_epoch"] == 2 and info["restored_memory"]
    resumed = [other.train(["again"])["again"] for _ in range(2)]
    for a, b in zip(later, resumed):
        same(a, b)


def test_a_diverging_member_leaves_and_the_others_finish_as_without_it():
    srv = server()
    for i, p in enumerate([*PARAMS[:2], {"lr": 1e6, "momentum": 0.9}]):
        srv.join(f"t{i}", p)
    errors = {}
    records: dict[str, list] = {"t0": [], "t1": []}
    for _ in range(4):
        asked = [m for m in ("t0", "t1", "t2") if m not in errors]
        for member, out in srv.train(asked).items():
            if isinstance(out, BaseException):
                errors[member] = out
            else:
                records[member].append(out)
    assert list(errors) == ["t2"] and isinstance(errors["t2"], TrainingDiverged)
    for i in range(2):
        for a, b in zip(alone(srv, PARAMS[i], 4), records[f"t{i}"]):
            same(a, b)


def test_configurations_with_different_network_shapes_land_in_different_packs():
    space = {**SPACE, "params": {**SPACE["params"], "model_args": {"hidden": {"type": "grid", "values": [16, 32]}}}}
    srv = server(space)
    for i in range(4):
        srv.join(f"t{i}", {**PARAMS[i], "model_args.hidden": 16 if i % 2 else 32})
    groups = srv.groups(["t0", "t1", "t2", "t3"])
    assert sorted(map(sorted, groups)) == [["t0", "t2"], ["t1", "t3"]]
    out = srv.train(["t0", "t1", "t2", "t3"])
    assert all(isinstance(r, dict) for r in out.values()) and srv.fused_epochs == 4


def test_packs_hold_at_most_the_pack_size_and_validate_only_where_asked():
    srv = server(size=3, validate=(2,))
    for i, p in enumerate(PARAMS):
        srv.join(f"t{i}", p)
    assert sorted(map(len, srv.groups(["t0", "t1", "t2", "t3"]))) == [1, 3]
    first = srv.train(["t0", "t1", "t2", "t3"])
    second = srv.train(["t0", "t1", "t2", "t3"])
    assert all(r["val_loss"] != r["val_loss"] for r in first.values())  # NaN: not validated
    assert all(r["val_loss"] == r["val_loss"] for r in second.values())


class DataDependent(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.layer = nn.Linear(int(torch.tensor(input_shape).prod()), num_classes)

    def forward(self, x):
        out = self.layer(x.flatten(1))
        return out if out.sum() > 0 else -out


def test_a_network_that_cannot_be_fused_trains_each_member_alone_with_one_note():
    MODELS.register("branchy_pack_test", lambda input_shape, num_classes: DataDependent(input_shape, num_classes))
    try:
        srv = server({**SPACE, "fixed": {**SPACE["fixed"], "model": "branchy_pack_test", "model_args": {}}})
        for i, p in enumerate(PARAMS[:3]):
            srv.join(f"t{i}", p)
        for _ in range(2):
            out = srv.train(["t0", "t1", "t2"])
        assert srv.kinds.refused and srv.fused_epochs == 0 and srv.alone_epochs == 6
        assert len(srv.notes) == 1 and "cannot run vectorised" in srv.notes[0]
        for a, b in zip(alone(srv, PARAMS[0], 2), [None, out["t0"]]):
            if b is not None:
                same(a, b)
    finally:
        MODELS.unregister("branchy_pack_test")


class Branching(nn.Module):
    """A small MLP that branches on its data in training and evaluation (``"always"``), in evaluation only (a
    pack trains it, then cannot validate it), or never."""

    def __init__(self, input_shape, num_classes, branch: str = "never"):
        super().__init__()
        self.branch = branch
        self.body, self.head = nn.Linear(int(torch.tensor(input_shape).prod()), 16), nn.Linear(16, num_classes)

    def forward(self, x):
        h = torch.relu(self.body(x.flatten(1)))
        if (self.branch == "always" or (self.branch == "evaluation" and not self.training)) and h.sum() > 0:
            h = h * 1.0
        return self.head(h)


def kinds_server(kinds: dict[str, str]) -> PackServer:
    """A server whose members ``name: branch`` (two of each kind, in the order of their names) joined."""
    space = {**SPACE, "fixed": {**SPACE["fixed"], "model": "branching_pack_test", "model_args": {}},
             "params": {**SPACE["params"], "model_args": {"branch": {"type": "grid",
                                                                     "values": ["never", "always", "evaluation"]}}}}
    srv = server(space)
    for i, (name, branch) in enumerate(kinds.items()):
        srv.join(name, {**PARAMS[i % 2], "model_args.branch": branch})
    return srv


def test_each_kind_is_checked_before_it_trains_and_one_refused_refuses_only_itself():
    """Only the first kind met was checked: a later kind that cannot evaluate vectorised failed all its trials
    after an epoch in a pack, and a first kind refused turned fusion off for every kind."""
    MODELS.register("branching_pack_test", lambda input_shape, num_classes, branch="never":
                    Branching(input_shape, num_classes, branch))
    try:
        later = kinds_server({"a0": "never", "a1": "never", "b0": "evaluation", "b1": "evaluation"})
        out = later.train(["a0", "a1", "b0", "b1"])
        assert all(isinstance(r, dict) for r in out.values()), out
        assert later.fused_epochs == 2 and later.alone_epochs == 2
        assert len(later.notes) == 1 and "data-dependent control flow" in later.notes[0]
        assert "of Branching {'branch': 'evaluation'} at batch size 64 trains alone" in later.notes[0]
        same(alone(later, {**PARAMS[0], "model_args.branch": "evaluation"}, 1)[0], out["b0"])
        first = kinds_server({"a0": "always", "a1": "always", "b0": "never", "b1": "never"})
        for _ in range(2):
            out = first.train(["a0", "a1", "b0", "b1"])
        assert first.fused_epochs == 4 and first.alone_epochs == 4  # the plain kind still fuses
        assert len(first.notes) == 1 and "{'branch': 'always'}" in first.notes[0]
        assert set(first.packs) == {frozenset({"b0", "b1"})}
    finally:
        MODELS.unregister("branching_pack_test")


def test_a_pack_out_of_memory_at_its_first_step_is_split_not_refused_as_unfusable(monkeypatch):
    from asp_tune.pack import Pack

    forward = Pack._forward

    def short_of_memory(most):
        def limited(self, *args, **kwargs):
            if len(self.members) > most:
                raise torch.OutOfMemoryError(f"out of memory: {len(self.members)} members")
            return forward(self, *args, **kwargs)
        return limited

    monkeypatch.setattr(Pack, "_forward", short_of_memory(2))
    srv = server()
    for i, p in enumerate(PARAMS):
        srv.join(f"t{i}", p)
    got = [srv.train(["t0", "t1", "t2", "t3"]) for _ in range(2)]
    assert srv.fused_epochs == 8 and srv.alone_epochs == 0 and srv.kinds.refused == {}
    assert len(srv.notes) == 1 and srv.notes[0].startswith("packs of MLP {'hidden': 32} at batch size 64 hold at "
                                                           "most 2: a pack of 4 ran out of memory at its first step")
    assert "(memory, not a network that cannot be fused)" in srv.notes[0]
    assert sorted(map(sorted, srv.packs)) == [["t0", "t1"], ["t2", "t3"]]
    for i in (0, 3):
        for a, b in zip(alone(srv, PARAMS[i], 2), [g[f"t{i}"] for g in got]):
            same(a, b)
    monkeypatch.setattr(Pack, "_forward", short_of_memory(1))  # not even two: alone, said to be memory
    srv = server()
    for i, p in enumerate(PARAMS[:2]):
        srv.join(f"t{i}", p)
    assert all(isinstance(r, dict) for r in srv.train(["t0", "t1"]).values())
    assert srv.alone_epochs == 2 and "ran out of memory" in srv.notes[0]
    assert srv.notes[0].endswith("(memory, not a network that cannot be fused); each configuration of MLP "
                                 "{'hidden': 32} at batch size 64 trains alone")


def test_a_member_that_leaves_is_taken_out_and_its_pack_goes_on_as_a_rebuilt_one_would():
    """The pack was closed and rebuilt whenever one member left (a copy, traces and restacking each time)."""
    kept, rebuilt = server(), server()
    for srv in (kept, rebuilt):
        for i, p in enumerate(PARAMS[:3]):
            srv.join(f"t{i}", p)
        srv.train(["t0", "t1", "t2"])
        srv.leave("t1")
    pack = kept.packs[frozenset({"t0", "t2"})]
    for p in rebuilt.packs.values():
        p.close()
    rebuilt.packs.clear()  # built again from its trainers
    for _ in range(2):
        a, b = kept.train(["t0", "t2"]), rebuilt.train(["t0", "t2"])
        assert kept.packs[frozenset({"t0", "t2"})] is pack
        for m in ("t0", "t2"):
            assert (a[m]["train_loss"], a[m]["val_loss"]) == (b[m]["train_loss"], b[m]["val_loss"])
    kept.train(["t0"])  # alone this epoch: taken out, t2 stays in the pack
    assert set(kept.packs) == {frozenset({"t2"})} and kept.packs[frozenset({"t2"})] is pack


def test_a_member_that_leaves_takes_its_trainer_and_its_pack_is_written_back():
    srv = server()
    for i, p in enumerate(PARAMS[:3]):
        srv.join(f"t{i}", p)
    srv.train(["t0", "t1", "t2"])
    kept = srv.trainers["t0"]
    srv.leave("t1")
    assert "t1" not in srv.trainers and set(srv.packs) == {frozenset({"t0", "t2"})}  # the others stay packed
    srv.train(["t0", "t2"])
    assert kept.epoch == 2
    data = kept.data
    placed = data.train.on("meta")  # a device copy (a GPU's, on a GPU machine) the trainers' feeders share
    srv.leave("t0")
    assert data.train.on("meta") is placed  # t2 still trains on it
    srv.leave("t2")
    assert "_copies" not in data.train.__dict__  # the last trainer on it gone: so are its device copies
    assert srv.data  # the host copy stays for the next trial to join


def test_auto_packs_only_where_the_saving_beats_starting_the_trials_processes():
    from asp_tune.pack import PackChoice
    from asp_tune.tune.builtin import expected_epochs, worth_packing
    assert expected_epochs(27, 9, (1, 3), 3) == 27 * 1 + 9 * 2 + 3 * 6
    assert expected_epochs(8, 5, None, 3) == 40
    fast = PackChoice(16, "packs of 16: measured", alone_step_s=4e-3, pack_step_s=1e-3)
    small = worth_packing(fast, 3 * 45, 2)  # milliseconds saved against seconds of start-up
    assert small.size == 1 and "would save about" in small.reason and "33 more processes" in small.reason
    assert "(32 trials at once in 2 pack workers)" in small.reason
    few = worth_packing(PackChoice(4, "packs of 4: measured", alone_step_s=4e-3, pack_step_s=1e-3), 3 * 45, 2,
                        trials=4)  # a search of 4 trials never starts more than 4
    assert "to start 5 more processes (4 trials at once in 1 pack worker)" in few.reason
    big = worth_packing(fast, 10_000 * 45, 2)
    assert big.size == 16 and "saved against" in big.reason


def test_pack_auto_says_what_it_chose_when_it_chose_one_trial_per_process(capsys):
    from asp_tune.tune.builtin import job_from_settings
    from asp_tune.tune.settings import HpoSettings

    job = job_from_settings(HpoSettings(space=parse_space(SPACE), algo="random", num_samples=1, pack="auto"))
    assert job.packs is None
    assert "[asp-tune] --pack auto: one configuration" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the worker's gathering (no Ray)

def worker(size: int = 4, gather_s: float = 5.0):
    from asp_tune.tune.pack_ray import _Worker

    return _Worker({"space": parse_space(SPACE), "run": RUN, "pack_size": size}, None, 1, None, None, gather_s)


def run_async(coroutine):
    import asyncio

    return asyncio.run(asyncio.wait_for(coroutine, 60))


def test_the_worker_trains_once_every_trial_it_holds_asked_or_one_left():
    import asyncio

    async def scenario():
        w = worker()
        await w.join("a", PARAMS[0], None, None, "ta")
        await w.join("b", PARAMS[1], None, None, "tb")
        await w.join("c", PARAMS[2], None, None, "tc")
        first = asyncio.ensure_future(w.epoch("a"))
        await asyncio.sleep(0.05)
        assert not first.done()  # waits for b and c
        second = asyncio.ensure_future(w.epoch("b"))
        await asyncio.sleep(0.05)
        assert not first.done()
        await w.leave([["c", "tc"]], False)  # paused by its scheduler: a and b go on without it
        a, b = await first, await second
        assert a["record"]["epoch"] == b["record"]["epoch"] == 1 and "c" not in w.server.trainers
        assert w.server.fused_epochs == 2

    run_async(scenario())


def test_the_worker_answers_after_the_gathering_time_and_answers_every_trial_when_training_fails():
    import asyncio

    async def scenario():
        w = worker(gather_s=0.2)
        await w.join("a", PARAMS[0], None, None, "ta")
        await w.join("b", PARAMS[1], None, None, "tb")
        alone = await w.epoch("a")  # b never asks: a trains alone after 0.2 s
        assert alone["record"]["epoch"] == 1 and w.active == {"a"}
        w.server.train = lambda members: (_ for _ in ()).throw(RuntimeError("out of memory"))
        answers = await asyncio.gather(w.epoch("a"), w.epoch("b"))
        assert all(x["error"] == "RuntimeError: out of memory" for x in answers)
        assert w.server.trainers == {} and w.pending == {}

    run_async(scenario())


def test_a_packed_trial_fails_with_its_training_s_own_error_as_a_trial_alone_does():
    """trials.csv read 'RunFailed: TrainingDiverged: training loss became nan ...' for a packed trial."""
    import asyncio

    from asp_tune.tune.collect import error_line
    from asp_tune.tune.pack_ray import error_answer, member_error

    bad = {"lr": 1e6, "momentum": 0.9}

    async def scenario():
        w = worker()
        await w.join("a", PARAMS[0], None, None, "ta")
        await w.join("b", bad, None, None, "tb")
        return await asyncio.gather(w.epoch("a"), w.epoch("b"))

    good, failed = run_async(scenario())
    assert "record" in good
    with pytest.raises(TrainingDiverged) as unpacked:
        build_trainer(server().config_of(bad)).train_epoch()
    assert error_line(member_error(failed)) == error_line(unpacked.value)
    assert error_line(unpacked.value).startswith("TrainingDiverged: training loss became nan at epoch 1")

    class Local(Exception):  # not rebuilt where the trial runs: named in a RunFailed
        pass

    assert error_line(member_error({"error": "Local: gone"})) == "RunFailed: Local: gone"
    assert error_line(member_error(error_answer(Local("gone")))) == "RunFailed: Local: gone"


def test_a_trial_joins_once_a_slot_is_free_and_a_stale_leave_spares_its_next_start():
    import asyncio

    async def scenario():
        w = worker(size=1)
        await w.join("a", PARAMS[0], None, None, "a1")
        waiting = asyncio.ensure_future(w.join("b", PARAMS[1], None, None, "b1"))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # one pack's worth of trials holds a trainer at once
        await w.leave([["a", "a1"]], False)
        await waiting
        assert set(w.server.trainers) == {"b"}
        await w.leave([["b", "b1"]], False)
        await w.join("b", PARAMS[1], None, None, "b2")  # b joined again (resumed) before ...
        await w.leave([["b", "b1"]], False)  # ... the message about its earlier start arrived
        assert "b" in w.server.trainers

    run_async(scenario())


@pytest.mark.parametrize("algo", ["hyperband", "bohb"])
def test_a_packed_search_takes_an_algorithm_that_pauses_trials(algo):
    from asp_tune.tune.builtin import pack_choice
    from asp_tune.tune.settings import HpoSettings

    from asp_tune.errors import ConfigError

    s = HpoSettings(space=parse_space(SPACE), algo=algo, pack=4, num_samples=8, max_concurrent=2).validate()
    assert s.pack == "4" and pack_choice(s, None).size == 4
    # no limit on trials at once: all 9 start together, so 2 packs of 4 cannot hold them
    with pytest.raises(ConfigError, match=r"invalid pack='4'.*at least 5 with --algo .* all 9 trials"):
        HpoSettings(space=parse_space(SPACE), algo=algo, pack=4, num_samples=9, max_concurrent=2).validate()


def test_the_membership_callback_tells_the_pool_who_paused_and_who_ended_and_looks_for_no_pool_twice(monkeypatch):
    import pickle
    from types import SimpleNamespace

    import ray

    from asp_tune.tune.pack_ray import PackMembership, pool_name

    def trial(trial_id: str, status: str, token: str | None = None):
        return SimpleNamespace(trial_id=trial_id, status=status, last_result={"pack_token": token} if token else {})

    told: list = []
    pool = SimpleNamespace(leave=SimpleNamespace(remote=lambda entries, finished: told.append((entries, finished))))
    looked: list = []
    control_plane_away = [True]

    def get_actor(name):
        looked.append(name)
        if name != pool_name("packed"):
            raise ValueError(name)
        if control_plane_away[0]:
            control_plane_away[0] = False
            raise TimeoutError("GCS")
        return pool

    monkeypatch.setattr(ray, "get_actor", get_actor)
    packed = PackMembership("packed")
    packed.on_step_end(1, [trial("a", "RUNNING"), trial("b", "RUNNING"), trial("c", "RUNNING")])
    packed.on_step_end(2, [trial("a", "PAUSED", "a0"), trial("b", "RUNNING"), trial("c", "RUNNING")])
    assert told == []  # the pool could not be reached: nothing told, and it is looked for again
    packed.on_step_end(3, [trial("a", "RUNNING"), trial("b", "RUNNING"), trial("c", "RUNNING")])
    packed.on_step_end(4, [trial("a", "PAUSED", "a1"), trial("b", "RUNNING"), trial("c", "RUNNING")])
    packed.on_trial_complete(5, [], trial("b", "TERMINATED", "b1"))  # finished, or stopped by its scheduler
    packed.on_trial_complete(6, [], trial("a", "TERMINATED", "a1"))  # stopped while it was paused
    packed.on_trial_error(7, [], trial("c", "ERROR", "c1"))
    assert told == [([["a", "a1"]], False), ([["b", "b1"]], True), ([["a", "a1"]], True), ([["c", "c1"]], True)]
    assert looked == [pool_name("packed")] * 2

    plain = PackMembership("plain")  # a search without packs: one look for its pool per run of the driver
    for step, status in enumerate(["RUNNING", "PAUSED", "RUNNING", "PAUSED"]):
        plain.on_step_end(step, [trial("t", status)])
    plain.on_trial_complete(5, [], trial("t", "TERMINATED"))
    assert looked[2:] == [pool_name("plain")]
    resumed = pickle.loads(pickle.dumps(plain))  # kept in Tune's state: a resumed search (maybe packed) looks again
    resumed.on_trial_complete(1, [], trial("t", "TERMINATED"))
    assert looked[2:] == [pool_name("plain")] * 2
    old = PackMembership.__new__(PackMembership)  # pickled before ``absent`` existed
    old.__dict__.update({"pool": pool_name("plain"), "handle": None, "running": set()})
    old.on_trial_complete(1, [], trial("t", "TERMINATED"))
    assert looked[2:] == [pool_name("plain")] * 3


def test_auto_packs_a_search_that_pauses_trials_only_where_its_packs_hold_every_trial(monkeypatch):
    from asp_tune.pack import PackChoice
    from asp_tune.tune import builtin
    from asp_tune.tune.settings import HpoSettings

    monkeypatch.setattr(builtin, "auto_pack_size", lambda *a, **k: PackChoice(16, "packs of 16: measured"))
    held = HpoSettings(space=parse_space(SPACE), algo="hyperband", pack="auto", num_samples=32).validate()
    assert builtin.pack_choice(held, None).size == 16
    many = HpoSettings(space=parse_space(SPACE), algo="hyperband", pack="auto", num_samples=40).validate()
    choice = builtin.pack_choice(many, None)
    assert choice.size == 1 and "all 40 trials together" in choice.reason and "packs of 16 x 2" in choice.reason
    asha = HpoSettings(space=parse_space(SPACE), algo="asha", pack="auto", num_samples=40).validate()
    assert builtin.pack_choice(asha, None).size == 16  # its searcher keeps --pack x --max-concurrent at once
