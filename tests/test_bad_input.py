"""Bad input, as a new user or someone sending a user a file would give it: one named error (exit 2), or for
a failure inside the user's own code one line naming the code and the step above that code's traceback
(exit 1); never a traceback of asp_tune's own, never a results folder left behind."""

from __future__ import annotations

import errno
import struct
import sys
import re
import textwrap
import zlib

import numpy as np
import pytest
import torch

from asp_tune import ConfigError, ProxyData
from asp_tune.cli import main

MODULE = textwrap.dedent('''
    import numpy as np
    from torch import nn

    WIDTH = 3


    def raises(input_shape, num_classes):
        raise ValueError("my builder is broken")


    def not_a_module(input_shape, num_classes):
        return 42


    def no_parameters(input_shape, num_classes):
        return nn.Flatten()


    def wrong_size(input_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(7, num_classes))


    def too_few_outputs(input_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 1))


    def consumes_random(input_shape, num_classes):
        import random

        random.random(), np.random.rand(), nn.Linear(2, 2)
        return 7


    def old_signature(num_classes):
        return nn.Linear(64, num_classes)


    class Net(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.layer = nn.Linear(64, width)

        def forward(self, x):
            return self.layer(x.flatten(1))


    def broken_loader(seed=0):
        raise RuntimeError("my loader is broken")


    def empty(seed=0):
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)


    def huge_labels(seed=0):
        rng = np.random.default_rng(0)
        return rng.normal(size=(100, 4)).astype(np.float32), np.arange(100) * 10_000_000


    def nan_inputs(seed=0):
        x = np.random.default_rng(0).normal(size=(200, 6)).astype(np.float32)
        x[5, 3] = x[40, 0] = np.nan
        return x, np.arange(200) % 2


    def infinite_targets(seed=0):
        return np.ones((200, 6), np.float32), np.where(np.arange(200) == 7, np.inf, 1.0)


    def beyond_float32(seed=0):
        x = np.random.default_rng(0).normal(size=(200, 6))
        x[9, 2] = 1e39
        return x, np.arange(200) % 2


    def integer_features(seed=0):
        rng = np.random.default_rng(0)
        return rng.integers(0, 100, (200, 6)), rng.integers(0, 2, 200)


    def features(seed=0):
        rng = np.random.default_rng(0)
        return rng.normal(size=(200, 6)).astype(np.float32), rng.integers(0, 2, 200)
''')


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixels: what a decompression bomb looks like unopened."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + \
        chunk(b"IEND", b"")


@pytest.fixture()
def here(tmp_path, monkeypatch):
    (tmp_path / "bad_models.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("bad_models", None)


TRAIN = ["train", "--epochs", "1", "--quiet", "--out", "out"]

CASES = [  # (flags, exit code, what stderr says)
    (["--model", "bad_models:raises"], 1, "building the network with bad_models:raises failed (ValueError: my builder"),
    (["--model", "bad_models:not_a_module"], 2, "a builder that returns a torch.nn.Module (it returned int)"),
    (["--model", "bad_models:no_parameters"], 2, "every layer has at least one unit"),
    (["--model", "bad_models:wrong_size"], 1, "the first training batch with bad_models:wrong_size failed"),
    (["--model", "bad_models:WIDTH"], 2, "a callable builder(input_shape, num_classes, **model_args)"),
    (["--model", "bad_models:old_signature"], 2, "cannot be called so"),
    (["--model", "bad_models:Net"], 2, "not the network's class"),
    (["--dataset", "bad_models:broken_loader"], 1, "loading the data with bad_models:broken_loader failed"),
    (["--dataset", "bad_models:empty"], 2, "no samples"),
    (["--dataset", "bad_models:huge_labels"], 2, "class labels must be 0..K-1 (990,000,001 classes are more than 10 per "
                                                  "training sample: label ids, not classes)"),
    (["--dataset", "bad_models:integer_features"], 2, "integer inputs are fed as token sequences"),
    (["--dataset", "bad_models:nan_inputs"], 2, "bad_models:nan_inputs: 2 of 200 samples have NaN or infinite inputs "
                                                "(the first: sample 5); drop or fill them"),
    (["--dataset", "bad_models:beyond_float32"], 2, "beyond float32's range (+-3.4e+38) that training computes in"),
    (["--dataset", "bad_models:infinite_targets"], 2, "1 of 200 samples have NaN or infinite labels (the first: "
                                                      "sample 7)"),
    (["--model-args", '{"hidden": 0}'], 2, "every layer has at least one unit"),
    (["--model-args", '{"hidden": -3}'], 2, "invalid model_args={'hidden': -3}"),
    (["--lr", "1e308"], 2, "invalid lr=1e+308"),
    (["--config", "list.json"], 2, "a summary.json holding a mapping"),
    (["--config", "deep.json"], 2, "invalid config='deep.json'"),
    (["--dataset", "image_folder", "--data-dir", "bombs"], 2, "not a readable image (DecompressionBombError)"),
    (["--dataset", "image_folder", "--data-dir", "large"], 2, "above the 50 million a training image may have"),
]


@pytest.mark.parametrize("flags, code, says", CASES, ids=[" ".join(c[0])[:40] for c in CASES])
def test_train_refuses_bad_input_by_name(here, capsys, flags, code, says):
    (here / "list.json").write_text("[1, 2]")
    (here / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    for folder, size in (("bombs", 30_000), ("large", 9_000)):
        for split, cls in (("train", "a"), ("train", "b"), ("test", "a"), ("test", "b")):
            (here / folder / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(3):
                (here / folder / split / cls / f"{i}.png").write_bytes(png_header(8, 8) if cls == "b" or i else
                                                                     png_header(size, size))
    assert main([*TRAIN, *flags]) == code
    err = capsys.readouterr().err
    assert says in err, err[-1500:]
    assert err.startswith("asp-tune train: error:") or err.splitlines()[1].startswith("asp-tune train: error:")
    if code == 1:  # the user's traceback follows the one line (through the user's file where it was the user's)
        assert "Traceback" in err and ("bad_models.py" in err or "the first training batch" in err)
        assert err.index("asp-tune train: error:") < err.index("Traceback")
    else:
        assert "Traceback" not in err
    assert not (here / "out").exists() and not list(here.glob(".out.*"))


def test_a_user_code_error_that_crossed_a_process_keeps_the_user_s_exception_and_its_traceback():
    """A Ray trial's error reaches the driver pickled: the one line still names the user's exception
    (it read 'failed ()' before), and the command line can still print that code's traceback."""
    import pickle

    from asp_tune.errors import UserCodeError

    try:
        raise RuntimeError("boom in forward\nsecond line")
    except RuntimeError as exc:
        error = UserCodeError("my_models:boom", "the first training batch", exc, "a hint")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) == ("the first training batch with my_models:boom failed "
                                       "(RuntimeError: boom in forward); a hint")
    assert copy.cause_traceback == error.cause_traceback
    assert copy.cause_traceback.startswith("Traceback") and 'raise RuntimeError("boom in forward' in copy.cause_traceback


def test_the_search_and_nas_commands_refuse_bad_input_before_anything_runs(here, capsys):
    (here / "s.yaml").write_text("name: s\nfixed: {dataset: digits, epochs: 2}\n"
                                 "params:\n  batch_size: {type: int, low: 1, high: 100000000000000000000}\n")
    assert main(["hpo", "--space", "s.yaml", "--out", "out"]) == 2
    assert "below 2**62" in capsys.readouterr().err
    (here / "ok.yaml").write_text("name: ok\nfixed: {dataset: digits, epochs: 2}\n"
                                  "params:\n  lr: {type: loguniform, low: 0.01, high: 0.1}\n")
    (here / "loop").symlink_to(here / "loop")
    assert main(["hpo", "--space", "ok.yaml", "--storage-path", "loop/x", "--out", "out"]) == 2
    assert "a folder path without a loop of links" in capsys.readouterr().err
    assert main(["hpo", "--space", "ok.yaml", "--algo", "tpe", "--optuna-storage", "/dev/null", "--out", "out"]) == 2
    assert "invalid optuna_storage='/dev/null'" in capsys.readouterr().err
    (here / "own.yaml").write_text("name: own\nfixed: {dataset: 'bad_models:features', model: 'bad_models:"
                                   "not_a_module', epochs: 2}\nparams:\n  lr: {type: loguniform, low: 0.01, high: 0.1}\n")
    assert main(["hpo", "--space", "own.yaml", "--out", "out"]) == 2  # the user's builder: checked before Ray
    assert "a builder that returns a torch.nn.Module (it returned int)" in capsys.readouterr().err
    (here / "few.yaml").write_text("name: few\nfixed: {dataset: 'bad_models:features', model: 'bad_models:"
                                   "too_few_outputs', epochs: 2}\nparams:\n  lr: {type: loguniform, low: 0.01, high: "
                                   "0.1}\n")
    assert main(["hpo", "--space", "few.yaml", "--out", "out"]) == 2  # too few outputs: before Ray, not every trial
    assert re.search(r"a network with \d+ outputs, one per class of this data: it gives 1", capsys.readouterr().err)
    import random

    from asp_tune.tune.builtin import check_own_network
    from asp_tune.tune.settings import HpoSettings

    sys.modules.pop("bad_models", None)
    (here / "gpu.yaml").write_text("name: gpu\nfixed: {dataset: 'bad_models:features', model: 'bad_models:"
                                   "consumes_random', epochs: 2}\nparams:\n  lr: {type: loguniform, low: 0.01, high: 0.1}\n")
    from asp_tune.tune.builtin import shared_arrays

    on_gpus = HpoSettings("gpu.yaml", gpus_per_trial=1).validate()  # a builder that may need what GPU trials have
    check_own_network(on_gpus, shared_arrays(on_gpus))  # is left to them: not built here
    before = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    with pytest.raises(ConfigError, match="a builder that returns a torch.nn.Module \\(it returned int\\)"):
        on_host = HpoSettings("gpu.yaml").validate()
        check_own_network(on_host, shared_arrays(on_host))
    assert random.getstate() == before[0] and (np.random.get_state()[1] == before[1]).all() \
        and torch.equal(torch.get_rng_state(), before[2])  # the driver's random states as they were
    assert main(["nas", "--dataset", "bad_models:features", "--epochs", "1", "--channels", "2", "--cells", "1",
                 "--candidates", "2", "--generations", "0", "--quiet", "--out", "out"]) == 2
    assert "images with class labels for a NAS search" in capsys.readouterr().err
    assert main(["nas-retrain", "--genotype", "x" * 100_000, "--out", "out"]) == 2  # no file has such a name
    assert "invalid genotype=" in capsys.readouterr().err
    assert not (here / "out").exists() and not list(here.glob(".out.*"))
    from asp_tune.tune.compare_settings import CorrelateSettings

    assert CorrelateSettings(metrics="auto,loss").validate().strategies == ["auto", "loss"]  # auto, as everywhere


def test_inspect_of_a_run_on_float_features_draws_what_fits(here, capsys):
    assert main(["train", "--dataset", "bad_models:features", "--epochs", "2", "--ratio", "0.5", "--quiet",
                 "--out", "run"]) == 0
    assert main(["inspect", "run", "--out", "pictures"]) == 0
    assert (here / "pictures" / "selection_frequency.png").is_file()
    assert not (here / "pictures" / "examples.png").exists()  # not images


def test_a_full_disk_under_train_is_one_named_error_and_the_next_run_works(here, capsys, monkeypatch):
    import pandas as pd

    real = pd.DataFrame.to_csv

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(args[0]) if args else "epochs.csv")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    assert main(TRAIN) == 2
    err = capsys.readouterr().err
    assert "no space left on the device; nothing was committed" in err and "Traceback" not in err
    assert not (here / "out").exists() and not list(here.glob(".out.*"))  # no lock, no staging folder
    monkeypatch.setattr(pd.DataFrame, "to_csv", real)
    assert main(TRAIN) == 0


def test_a_lock_that_a_full_disk_left_empty_does_not_block_the_next_run(here):
    import os
    import time

    lock = here / ".out.lock"
    lock.write_text("")  # a run that created its lock and could not write its owner
    old = time.time() - 120
    os.utime(lock, (old, old))
    assert main(TRAIN) == 0 and not lock.exists()


class _Grows(torch.utils.data.Dataset):
    def __init__(self):
        self.n = 50

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.zeros(3), 0


def _proxy(n: int = 50, **kw) -> ProxyData:
    data = torch.utils.data.TensorDataset(torch.randn(n, 3), torch.randint(0, 2, (n,)))
    return ProxyData(data, epochs=3, ratio=0.5, strategy="loss", **kw)


LOOP_CASES = [
    ("indices past the data", lambda p: p.update(torch.tensor([0, 99]), torch.ones(2)), "invalid indices='0..99'"),
    ("negative indices", lambda p: p.update(torch.tensor([-1, 2]), torch.ones(2)), "invalid indices='-1..2'"),
    ("float indices", lambda p: p.update(torch.tensor([0.0, 1.0]), torch.ones(2)), "integer sample indices"),
    ("one index short", lambda p: p.update(torch.tensor([0]), torch.ones(2)), "one per loss (2)"),
    ("integer losses", lambda p: p.update(torch.tensor([0, 1]), torch.ones(2, dtype=torch.long)),
     "floating-point per-sample losses"),
    ("a scalar loss", lambda p: p.update(torch.tensor([0, 1]), torch.tensor(1.0)), "reduction='none'"),
    ("logits of another batch", lambda p: p.update(torch.tensor([0, 1]), torch.ones(2), logits=torch.ones(3, 2),
                                                   targets=torch.tensor([0, 1])), "invalid logits='shape (3, 2)'"),
    ("targets of another batch", lambda p: p.update(torch.tensor([0, 1]), torch.ones(2), logits=torch.ones(2, 2),
                                                    targets=torch.tensor([0])), "invalid targets='shape (1,)'"),
    ("float targets beside logits", lambda p: p.update(torch.tensor([0, 1]), torch.ones(2), logits=torch.ones(2, 2),
                                                       targets=torch.ones(2)), "integer class labels"),
    ("a state of something else", lambda p: p.load_state_dict({"selector": 3}), "invalid state_dict='dict'"),
    ("a state of another size", lambda p: p.load_state_dict(_proxy(80).state_dict()),
     "it was saved for 80 samples, not 50"),
    ("zero batch size", lambda p: p.steps_per_epoch(0), "invalid batch_size=0"),
]


@pytest.mark.parametrize("case, call, says", LOOP_CASES, ids=[c[0] for c in LOOP_CASES])
def test_the_loop_api_names_a_bad_call(case, call, says):
    proxy = _proxy()
    proxy.set_epoch(0)
    with pytest.raises(ConfigError, match=None) as err:
        call(proxy)
    assert says in str(err.value)


def test_the_loop_api_names_bad_arguments_and_allocates_nothing_per_epoch():
    import tracemalloc

    with pytest.raises(ConfigError, match="invalid device='tpu'"):
        _proxy(device="tpu")
    with pytest.raises(ConfigError, match="invalid seed=1180591620717411303424"):
        _proxy(seed=2**70)
    grows = _Grows()
    proxy = ProxyData(grows, epochs=3, ratio=0.5)
    proxy.set_epoch(0)
    grows.n = 60
    with pytest.raises(ConfigError, match="invalid dataset='60 samples'.*the 50 samples"):
        proxy.set_epoch(1)
    tracemalloc.start()
    huge = _proxy()
    huge = ProxyData(torch.utils.data.TensorDataset(torch.randn(50, 3)), epochs=10**9, ratio=0.3)
    huge.set_epoch(0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50 * 2**20  # a billion epochs: nothing is made per epoch
