"""An Optuna study whose objective trains on proxy data, pruned by Optuna's HyperbandPruner, finished on
full data.

Each trial trains the tabular MLP of ``tabular_mlp.py`` on 30% of the data per epoch, reports its
validation accuracy after every epoch (its step: the epochs trained, which the pruner's resource counts)
and stops when the pruner says so. ``first_epoch_full=False``: a trial that is pruned early never pays
for a full pass over the data (never-seen samples first). Then ``asp_tune.tune.audit_study`` trains the
study's best 3 completed trials on all the data and the pick is the best there. A study of 18 or more
completed trials would also have some drawn at random and the proxy's rank agreement with full data
measured (6 configurations with both scores are needed): this one's last line says it was not.

    python examples/optuna_search.py
"""

import optuna
import torch
import torch.nn.functional as F
from torch import nn

import asp_tune
import asp_tune.tune
from tabular_mlp import test_x, test_y, train_set

EPOCHS, RATIO = 8, 0.3
val_x, val_y = test_x[:1000], test_y[:1000]


def train(params: dict, ratio: float, seed: int, trial: optuna.Trial | None = None) -> float:
    """Train the MLP with ``params`` on ``ratio`` of the data per epoch; its last validation accuracy."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(40, params["width"]), nn.ReLU(), nn.Linear(params["width"], 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=params["lr"])
    strategy = "auto" if ratio < 1 else "none"
    proxy = asp_tune.ProxyData(train_set, epochs=EPOCHS, ratio=ratio, strategy=strategy, first_epoch_full=False,
                               seed=seed)
    loader = proxy.loader(batch_size=128)
    for epoch in range(EPOCHS):
        proxy.set_epoch(epoch)
        for idx, (x, y) in loader:
            logits = model(x)
            loss = proxy.update(idx, F.cross_entropy(logits, y, reduction="none"), logits=logits, targets=y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            accuracy = float((model(val_x).argmax(1) == val_y).float().mean())
        if trial is not None:
            trial.set_user_attr("data_passes", proxy.describe()["data_passes"])
            trial.report(accuracy, epoch + 1)  # the step: epochs trained, as max_resource counts them
            if trial.should_prune():
                raise optuna.TrialPruned()
    return accuracy


def objective(trial: optuna.Trial) -> float:
    params = {"lr": trial.suggest_float("lr", 1e-4, 3e-1, log=True), "width": trial.suggest_int("width", 16, 256, log=True)}
    return train(params, RATIO, trial.number, trial)


if __name__ == "__main__":
    torch.set_num_threads(2)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # a fixed name: HyperbandPruner puts trials in brackets by a hash of the study name, so the run repeats
    study = optuna.create_study(study_name="asp_tune_example", direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=0),
                                pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=EPOCHS))
    study.optimize(objective, n_trials=16)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    passes = sum(t.user_attrs.get("data_passes", 0) for t in study.trials)
    print(f"proxy: best {study.best_value:.4f} with {study.best_params}; {len(pruned)} of 16 trials pruned; "
          f"{passes:.1f} data passes in all (full data, no pruning: {16 * EPOCHS})")
    audit = asp_tune.tune.audit_study(study, lambda params: train(params, 1.0, seed=0))
    print(f"full data: best {audit.best_full_score:.4f} with {audit.best_params} ({len(audit.table)} trials trained "
          f"on full data, {len(audit.table) * EPOCHS} data passes; pick changed: {audit.pick_changed}); {audit.line()}")
