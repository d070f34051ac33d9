"""A tabular classifier (scikit-learn's make_classification), an MLP with AdamW, on proxy data.

    python examples/tabular_mlp.py
"""

import torch
import torch.nn.functional as F
from sklearn.datasets import make_classification
from torch import nn
from torch.utils.data import TensorDataset

import asp_tune
from common import compare

x, y = make_classification(n_samples=12000, n_features=40, n_informative=16, n_classes=4, random_state=0)
x = torch.tensor((x - x.mean(0)) / x.std(0), dtype=torch.float32)
y = torch.tensor(y)
train_set, test_x, test_y = TensorDataset(x[:10000], y[:10000]), x[10000:], y[10000:]
EPOCHS = 12


def train(ratio: float, strategy: str = "auto", seed: int = 0) -> tuple[float, float]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(40, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    proxy = asp_tune.ProxyData(train_set, epochs=EPOCHS, ratio=ratio, strategy=strategy, seed=seed)  # 1
    loader = proxy.loader(batch_size=128)  # 2
    for epoch in range(EPOCHS):
        proxy.set_epoch(epoch)
        for idx, (xb, yb) in loader:
            logits = model(xb)
            loss = proxy.update(idx, F.cross_entropy(logits, yb, reduction="none"), logits=logits, targets=yb)  # 3
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = float((model(test_x).argmax(1) == test_y).float().mean())
    return accuracy, proxy.describe()["data_passes"] / EPOCHS


if __name__ == "__main__":
    torch.set_num_threads(2)
    compare("tabular MLP (AdamW), 10,000 rows x 40 features, 4 classes", train)
