"""A token-sequence classifier (an EmbeddingBag over synthetic "reviews") on proxy data.

Each review is 40 tokens from a 2,000-word vocabulary; 50 words lean positive and 50 negative, and
the label is which kind occurs more often (ties dropped).

    python examples/text_classifier.py
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

import asp_tune
from common import compare

VOCAB, LENGTH, EPOCHS = 2000, 40, 8


class Reviews(Dataset):
    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        tokens = torch.randint(0, VOCAB, (2 * n, LENGTH), generator=g)
        score = ((tokens < 50).sum(1) - ((tokens >= 50) & (tokens < 100)).sum(1))
        keep = score != 0
        self.tokens, self.targets = tokens[keep][:n], (score[keep][:n] > 0).long()

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.tokens[i], self.targets[i]


train_set, test_set = Reviews(20000, 0), Reviews(4000, 1)


class BagOfWords(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.EmbeddingBag(VOCAB, 32)
        self.head = nn.Linear(32, 2)

    def forward(self, tokens):
        return self.head(self.embed(tokens))


def train(ratio: float, strategy: str = "auto", seed: int = 0) -> tuple[float, float]:
    torch.manual_seed(seed)
    model = BagOfWords()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    proxy = asp_tune.ProxyData(train_set, epochs=EPOCHS, ratio=ratio, strategy=strategy, seed=seed)
    loader = proxy.loader(batch_size=256)
    for epoch in range(EPOCHS):
        proxy.set_epoch(epoch)
        for idx, (tokens, labels) in loader:
            logits = model(tokens)
            loss = proxy.update(idx, F.cross_entropy(logits, labels, reduction="none"), logits=logits, targets=labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = float((model(test_set.tokens).argmax(1) == test_set.targets).float().mean())
    return accuracy, proxy.describe()["data_passes"] / EPOCHS


if __name__ == "__main__":
    torch.set_num_threads(2)
    compare("token-sequence classifier (EmbeddingBag), 20,000 reviews of 40 tokens", train)
