"""Feeding selected samples to the model in mini-batches that carry their sample indices.

Two paths with one interface, ``feeder.batches(indices, batch_size)`` yielding ``(x, y, idx)``
on the training device:

- :class:`DeviceFeeder`: the whole uint8 data set lives on the device; crop, flip and
  normalisation run batched on the device (no per-sample Python, no host round-trips).
- :class:`StreamFeeder`: any map-style ``Dataset`` read through a ``DataLoader`` whose
  :class:`SelectedIndexSampler` yields the epoch's selected indices; for data that does not fit.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from asp_tune.datasets import ImageArrays, input_kind
from asp_tune.device import restore_generator

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def batch_slices(count: int, batch_size: int, smallest: int = 1) -> list[slice]:
    """Consecutive slices of ``batch_size``; a trailing batch below a quarter of that joins the one
    before (never for a ``batch_size`` below 4, whose quarter is below one sample), as does one of
    fewer than ``smallest`` samples. A tiny last batch every epoch corrupts batch norm's running
    statistics: a proxy epoch of 450 samples in batches of 32 ended in 2 samples, and a ResNet-18
    evaluated at 0.11 accuracy instead of 0.86. The built-in trainer's feeders pass ``smallest=2``
    (batch norm cannot train on one sample: :data:`TRAINING_SMALLEST`); the loop API gives the batch
    size asked for, and its batches and ``steps_per_epoch`` both come from here."""
    bounds = list(range(0, count, batch_size)) + [count]
    last = bounds[-1] - bounds[-2] if len(bounds) > 2 else batch_size
    if 4 * last < batch_size or last < smallest:
        del bounds[-2]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


#: The smallest trailing batch the built-in trainer's feeders train on (batch norm cannot train on one sample).
TRAINING_SMALLEST = 2


def crop_offsets(count: int, padding: int, generator: torch.Generator | None,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Each of ``count`` images' crop offset (rows, columns) in ``[0, 2 * padding]``."""
    off_y = torch.randint(0, 2 * padding + 1, (count,), generator=generator, device=device)
    off_x = torch.randint(0, 2 * padding + 1, (count,), generator=generator, device=device)
    return off_y, off_x


def crop_at(images: torch.Tensor, padding: int, off_y: torch.Tensor, off_x: torch.Tensor) -> torch.Tensor:
    """The ``H x W`` windows of zero-padded ``(B, C, H, W)`` images at the given offsets."""
    b, c, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    device = images.device
    rows = off_y[:, None] + torch.arange(h, device=device)
    cols = off_x[:, None] + torch.arange(w, device=device)
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * padding))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random ``H x W`` crops of zero-padded ``(B, C, H, W)`` images, one offset per image."""
    if padding <= 0:
        return images
    return crop_at(images, padding, *crop_offsets(images.shape[0], padding, generator, images.device))


def flip_draws(count: int, p: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Which of ``count`` images to mirror, each with probability ``p``."""
    return torch.rand(count, generator=generator, device=device) < p


def flip_where(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` images mirrored horizontally where ``flip`` is true."""
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def random_flip(images: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each ``(B, C, H, W)`` image horizontally with probability ``p``."""
    if p <= 0:
        return images
    return flip_where(images, flip_draws(images.shape[0], p, generator, images.device))


def cutout_centres(count: int, h: int, w: int, generator: torch.Generator | None,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Each of ``count`` images' cutout centre: rows ``(count, 1)`` and columns ``(count, 1)``."""
    cy = torch.randint(0, h, (count, 1), generator=generator, device=device)
    cx = torch.randint(0, w, (count, 1), generator=generator, device=device)
    return cy, cx


def cutout_at(images: torch.Tensor, size: int, cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
    """Zero the ``size x size`` square (clipped at the border) centred at ``(cy, cx)`` in each image."""
    _, _, h, w = images.shape
    device = images.device
    lo, hi = size // 2, size - size // 2
    rows = torch.arange(h, device=device)[None, :]
    cols = torch.arange(w, device=device)[None, :]
    in_rows = (rows >= cy - lo) & (rows < cy + hi)
    in_cols = (cols >= cx - lo) & (cols < cx + hi)
    hole = in_rows[:, None, :, None] & in_cols[:, None, None, :]
    return images.masked_fill(hole, 0.0)


def random_cutout(images: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero one ``size x size`` square (clipped at the border) at a random centre in each image."""
    if size <= 0:
        return images
    b, _, h, w = images.shape
    return cutout_at(images, size, *cutout_centres(b, h, w, generator, images.device))


class Normalizer:
    """Inputs as the model sees them: uint8 images -> float ``(x / 255 - mean) / std`` per channel
    (optionally channels-last); float features -> ``(x - mean) / std`` per feature; token
    sequences unchanged (``kind``, :data:`asp_tune.datasets.INPUT_KINDS`)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device,
                 channels_last: bool = False, kind: str = "image"):
        self.kind = kind
        shape = (1, -1, 1, 1) if kind == "image" else (1, -1)
        self.mean = torch.tensor(mean, device=device).view(*shape) if len(mean) else None
        self.inv_std = 1.0 / torch.tensor(std, device=device).view(*shape) if len(std) else None
        self.channels_last = channels_last and kind == "image"

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.kind == "tokens":
            return inputs.long()
        if self.kind == "features":
            x = inputs.float()
            return x if self.mean is None else ((x.flatten(1) - self.mean) * self.inv_std).view_as(x)
        x = inputs.float()
        x = (x.clone() if x is inputs else x).div_(255.0).sub_(self.mean).mul_(self.inv_std)  # never the caller's
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


class Feeder(Protocol):
    num_samples: int

    def batches(self, indices: torch.Tensor | None, batch_size: int) -> Iterator[Batch]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class DeviceFeeder:
    """Device-resident data: inputs and labels moved once; image batches augmented on device
    (other inputs are never augmented)."""

    def __init__(self, arrays: ImageArrays, device: torch.device | str, mean: Sequence[float],
                 std: Sequence[float], crop_padding: int = 0, flip_p: float = 0.0,
                 augment: bool = True, channels_last: bool = False, seed: int = 0, cutout: int = 0):
        self.device = torch.device(device)
        kind = input_kind(arrays.images)
        augment = augment and kind == "image"
        self.cutout = cutout if augment else 0
        placed = arrays.on(self.device)  # one copy on the device, shared by the feeders of these arrays
        self.images, self.labels = placed.images, placed.labels
        self.num_samples = len(arrays)
        self.crop_padding = crop_padding if augment else 0
        self.flip_p = flip_p if augment else 0.0
        self.normalize = Normalizer(mean, std, self.device, channels_last, kind)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        #: what decides a batch besides its indices and random numbers (plain values: compared without the device)
        self.settings = (self.crop_padding, self.flip_p, self.cutout, kind, self.normalize.channels_last,
                         tuple(float(m) for m in mean), tuple(float(v) for v in std))

    def batches(self, indices: torch.Tensor | None, batch_size: int) -> Iterator[Batch]:
        if indices is None:
            indices = torch.arange(self.num_samples, device=self.device)
        indices = indices.to(self.device)
        for part in batch_slices(indices.numel(), batch_size, TRAINING_SMALLEST):
            idx = indices[part]
            x = self._augment(self.images.index_select(0, idx), self._draws(idx.numel()))
            yield x, self.labels.index_select(0, idx), idx

    def stacked_batches(self, others: Sequence["DeviceFeeder"], indices: Sequence[torch.Tensor],
                        batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]]:
        """The batches of this feeder and ``others`` (on the same arrays, with the same augmentation), each
        over its own ``indices`` (of one length), made at once: ``(x (K, B, ...), y (K, B, ...), [idx_k])``,
        where row k is the batch feeder k's :meth:`batches` gives (the same random numbers, drawn from its own
        generator). One gather and one augmentation for K batches instead of K. Raises ValueError (before any
        batch) for feeders that differ in their arrays or augmentation, or indices of different lengths."""
        feeders = [self, *others]
        if any(not isinstance(f, DeviceFeeder) or f.images is not self.images or f.labels is not self.labels
               or f.settings != self.settings for f in others):
            raise ValueError("stacked_batches needs feeders on the same arrays with the same augmentation")
        if len({i.numel() for i in indices}) != 1 or len(indices) != len(feeders):
            raise ValueError("stacked_batches needs one set of indices of one length for every feeder")
        return self._stacked(feeders, [i.to(self.device) for i in indices], batch_size)

    def _stacked(self, feeders: list["DeviceFeeder"], indices: list[torch.Tensor],
                 batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]]:
        for part in batch_slices(indices[0].numel(), batch_size, TRAINING_SMALLEST):
            idx = [i[part] for i in indices]
            rows = torch.cat(idx)
            draws = [f._draws(i.numel()) for f, i in zip(feeders, idx)]
            x = self._augment(self.images.index_select(0, rows), [torch.cat(d) for d in zip(*draws)])
            yield x.unflatten(0, (len(feeders), -1)), self.labels.index_select(0, rows).unflatten(
                0, (len(feeders), -1)), idx

    def _draws(self, count: int) -> list[torch.Tensor]:
        """One batch's random numbers from this feeder's generator, in the order :meth:`_augment` takes them."""
        draws: list[torch.Tensor] = []
        if self.crop_padding > 0:
            draws += crop_offsets(count, self.crop_padding, self.generator, self.device)
        if self.flip_p > 0:
            draws.append(flip_draws(count, self.flip_p, self.generator, self.device))
        if self.cutout > 0:
            draws += cutout_centres(count, *self.images.shape[-2:], self.generator, self.device)
        return draws

    def _augment(self, x: torch.Tensor, draws: Sequence[torch.Tensor]) -> torch.Tensor:
        """Crop, flip, normalise and cut out ``x`` with :meth:`_draws`' random numbers (one row per image)."""
        taken = iter(draws)
        if self.crop_padding > 0:
            x = crop_at(x, self.crop_padding, next(taken), next(taken))
        if self.flip_p > 0:
            x = flip_where(x, next(taken))
        x = self.normalize(x)
        if self.cutout > 0:
            x = cutout_at(x, self.cutout, next(taken), next(taken))
            if self.normalize.channels_last:  # masked_fill returns the default layout
                x = x.contiguous(memory_format=torch.channels_last)
        return x

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        restore_generator(self.generator, state["generator"])


class SelectedIndexSampler(Sampler):
    """Yields the items it was last given, in that order (set anew every epoch): sample indices,
    or, as a ``DataLoader``'s ``batch_sampler``, lists of them."""

    def __init__(self, indices: Sequence = ()):
        self.indices = list(indices)

    def set_indices(self, indices: torch.Tensor | Sequence) -> None:
        self.indices = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices)

    def __iter__(self) -> Iterator:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class _WithIndex(Dataset):
    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        x, y = self.dataset[i]
        return x, y, i


class ArrayImageDataset(Dataset):
    """Map-style view of :class:`ImageArrays` with per-sample CPU augmentation of images (stream path)."""

    def __init__(self, arrays: ImageArrays, mean: Sequence[float], std: Sequence[float],
                 crop_padding: int = 0, flip_p: float = 0.0, augment: bool = True):
        self.arrays = arrays
        kind = input_kind(arrays.images)
        augment = augment and kind == "image"
        self.crop_padding = crop_padding if augment else 0
        self.flip_p = flip_p if augment else 0.0
        self.normalize = Normalizer(mean, std, torch.device("cpu"), kind=kind)

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int):
        x = self.arrays.images[i:i + 1]
        x = random_flip(random_crop(x, self.crop_padding), self.flip_p)
        return self.normalize(x)[0], self.arrays.labels[i]


class StreamFeeder:
    """A ``DataLoader`` over any map-style data set, driven by :class:`SelectedIndexSampler`.

    The data set's own random draws (a crop, a flip, a torchvision transform drawing from torch's global
    generator) come from this feeder's ``sample_generator``: in the process (``num_workers=0``) each batch is
    loaded with the global generator set to it and put back after, and loader workers are seeded from
    ``generator``. So a run's augmentation is its own wherever it trains: beside other runs in one process (a
    pack, a pack worker), whatever they draw. (Python's ``random`` and NumPy's generators are not covered.)"""

    def __init__(self, dataset: Dataset, device: torch.device | str, num_workers: int = 0,
                 channels_last: bool = False, seed: int = 0, cutout: int = 0):
        self.device = torch.device(device)
        self.cutout = cutout
        self.dataset = _WithIndex(dataset)
        self.num_samples = len(self.dataset)
        self.num_workers = num_workers
        self.channels_last = channels_last
        self.sampler = SelectedIndexSampler()
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)
        self.sample_generator = torch.Generator()
        self.sample_generator.manual_seed(int(torch.randint(2 ** 62, (), generator=torch.Generator().manual_seed(seed))))
        #: the cutout's centres, drawn where the batch is (a GPU's own generator, not the global one other runs share)
        self.cutout_generator = self.generator
        if self.device.type != "cpu":
            self.cutout_generator = torch.Generator(device=self.device)
            self.cutout_generator.manual_seed(seed)

    def batches(self, indices: torch.Tensor | None, batch_size: int) -> Iterator[Batch]:
        order = (torch.arange(self.num_samples) if indices is None else indices.cpu()).tolist()
        self.sampler.set_indices([order[part] for part in batch_slices(len(order), batch_size, TRAINING_SMALLEST)])
        loader = DataLoader(self.dataset, batch_sampler=self.sampler,
                            num_workers=self.num_workers, generator=self.generator,
                            pin_memory=self.device.type == "cuda",
                            persistent_workers=False)
        for x, y, idx in self._own_draws(loader):
            x = x.to(self.device, non_blocking=True)
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.cutout:
                x = random_cutout(x, self.cutout, self.cutout_generator)
            yield x, y.to(self.device, non_blocking=True), idx.to(self.device, non_blocking=True)

    def _own_draws(self, loader: DataLoader) -> Iterator[Any]:
        """``loader``'s batches, those loaded in this process with torch's global generator set to
        :attr:`sample_generator` (its state carried on, the global one put back)."""
        if self.num_workers:
            yield from loader  # each worker is seeded from self.generator
            return
        batches = iter(loader)
        while True:
            with torch.random.fork_rng(devices=[]):
                torch.random.set_rng_state(self.sample_generator.get_state())
                batch = next(batches, None)
                self.sample_generator.set_state(torch.random.get_rng_state())
            if batch is None:
                return
            yield batch

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "sample_generator": self.sample_generator.get_state(),
                "cutout_generator": self.cutout_generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        restore_generator(self.generator, state["generator"])
        if "sample_generator" in state:  # a checkpoint of an older version drew from the global generator
            restore_generator(self.sample_generator, state["sample_generator"])
        if "cutout_generator" in state and self.cutout_generator is not self.generator:
            restore_generator(self.cutout_generator, state["cutout_generator"])
