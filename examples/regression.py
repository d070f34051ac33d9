"""A regression net (scikit-learn's diabetes data, mean squared error) on proxy data: the loss is
the only statistic a regression has, so the strategy is ``loss`` (``auto`` would be the same).

    python examples/regression.py
"""

import torch
from sklearn.datasets import load_diabetes
from torch import nn
from torch.utils.data import TensorDataset

import asp_tune
from common import compare

x, y = load_diabetes(return_X_y=True)
x = torch.tensor((x - x.mean(0)) / x.std(0), dtype=torch.float32)
y = torch.tensor((y - y.mean()) / y.std(), dtype=torch.float32)
train_set, test_x, test_y = TensorDataset(x[:350], y[:350]), x[350:], y[350:]
EPOCHS = 60


def train(ratio: float, strategy: str = "loss", seed: int = 0) -> tuple[float, float]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    proxy = asp_tune.ProxyData(train_set, epochs=EPOCHS, ratio=ratio, strategy=strategy, seed=seed)  # float targets: no labels
    loader = proxy.loader(batch_size=32)
    for epoch in range(EPOCHS):
        proxy.set_epoch(epoch)
        for idx, (xb, yb) in loader:
            loss = proxy.update(idx, (model(xb).squeeze(1) - yb) ** 2)  # per-sample squared error
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        r2 = 1 - float(((model(test_x).squeeze(1) - test_y) ** 2).mean() / test_y.var())
    return r2, proxy.describe()["data_passes"] / EPOCHS


if __name__ == "__main__":
    torch.set_num_threads(2)
    compare("regression net (diabetes, MSE)", train, score="test R^2")
