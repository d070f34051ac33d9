"""torchvision's ResNet-18 (weights=None) on images, with proxy data: scikit-learn's 8x8 digits,
upsampled to 16x16 and repeated over three channels, with a random-crop augmentation.

    python examples/image_resnet18.py
"""

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset
from torchvision.models import resnet18

import asp_tune
from common import compare

digits = load_digits()
images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
images = F.interpolate(images, size=16, mode="bilinear").repeat(1, 3, 1, 1)
labels = torch.tensor(digits.target)
train_set, test_x, test_y = TensorDataset(images[:1500], labels[:1500]), images[1500:], labels[1500:]
EPOCHS = 8


def augment(x: torch.Tensor) -> torch.Tensor:
    padded = F.pad(x, (2, 2, 2, 2))
    i, j = torch.randint(0, 5, (2,))
    return padded[:, :, i:i + 16, j:j + 16]


def train(ratio: float, strategy: str = "auto", seed: int = 0) -> tuple[float, float]:
    torch.manual_seed(seed)
    model = resnet18(weights=None, num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    proxy = asp_tune.ProxyData(train_set, epochs=EPOCHS, ratio=ratio, strategy=strategy, seed=seed)
    loader = proxy.loader(batch_size=32)
    for epoch in range(EPOCHS):
        proxy.set_epoch(epoch)
        model.train()
        for idx, (x, y) in loader:
            logits = model(augment(x))
            loss = proxy.update(idx, F.cross_entropy(logits, y, reduction="none"), logits=logits, targets=y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(test_x).argmax(1) == test_y).float().mean())
    return accuracy, proxy.describe()["data_passes"] / EPOCHS


if __name__ == "__main__":
    torch.set_num_threads(2)
    compare("torchvision resnet18(weights=None) on digits (16x16, 3 channels)", train)
