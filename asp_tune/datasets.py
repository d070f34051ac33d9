"""Data sets by name, decoded once into uint8 image tensors with seeded train/val/test splits.

Library code never assumes where data lives: every loader takes a path. ``digits`` ships with
scikit-learn (offline default); ``cifar10``/``cifar100`` come from torchvision (downloaded for
users online), an image-folder tree (``train/<class>/*.jpg``, ``test/<class>/*.jpg``) or a
``.tar.gz`` archive of one; ``image_folder`` reads any such tree. Decoded arrays are cached.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from asp_tune.atomic import atomic_write
from asp_tune.constraints import check_value
from asp_tune.errors import AspTuneError, ConfigError, DataError, UserCodeError
from asp_tune.imports import resolve
from asp_tune.registry import DATASETS

#: PIL modes decoded as one grey channel (colour and palette images become RGB); integer modes ``I;16*`` and
#: ``I`` and float ``F`` are rescaled to 8 bits with their data set (:func:`_deep_to_8bit`).
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")
#: Part of the decoded-data cache key: a cache written by an older decoder is not reused.
DECODE_VERSION = 6  # 3: images below a class folder; 4: dot-files skipped; 5: deep grey scaled per data set;
#                      6: a class's images in the order of their paths below it (nested folders: folder = archive)
#: An image above this many pixels is no training image (a decompression bomb, a scan): refused undecoded.
MAX_IMAGE_PIXELS = 50_000_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
TEST_SPLIT_SEED = 12345  # fixed: the test split never depends on the run's seed
#: More classes than this per training sample are label ids, not classes (and would build that many names).
MAX_CLASSES_PER_SAMPLE = 10


#: What a data set's inputs are: uint8 ``(N, C, H, W)`` images (normalised per channel, augmented in
#: training), float features ``(N, ...)`` (standardised per feature, never augmented) or integer token
#: sequences ``(N, L, ...)`` (fed as they are).
INPUT_KINDS = ("image", "features", "tokens")


def input_kind(inputs: torch.Tensor) -> str:
    """``image``, ``features`` or ``tokens`` for a tensor of inputs (see :data:`INPUT_KINDS`)."""
    if inputs.dtype == torch.uint8 and inputs.dim() == 4:
        return "image"
    if inputs.is_floating_point():
        return "features"
    if inputs.dtype in (torch.int64, torch.int32, torch.int16, torch.int8):
        return "tokens"
    raise DataError(f"inputs of dtype {inputs.dtype} and shape {tuple(inputs.shape)}: allowed uint8 (N, C, H, W) "
                    "images, float features or integer token sequences")


@dataclass
class ImageArrays:
    """Inputs (``images``: uint8 ``(N, C, H, W)`` images, float features or integer sequences, see
    :data:`INPUT_KINDS`) and targets (``labels``): int64 class labels ``(N,)``, or float regression
    targets ``(N,)`` or ``(N, k)``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, indices: np.ndarray | torch.Tensor) -> "ImageArrays":
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return ImageArrays(self.images[idx], self.labels[idx])

    def on(self, device: torch.device | str) -> "ImageArrays":
        """These arrays on ``device``, copied there once: every feeder built on them (a pack's K trainers, a
        worker's trials) shares that copy. Kept while these arrays live; never pickled."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:0" are one device, one copy
            device = torch.device("cuda", torch.cuda.current_device())
        if self.images.device == device and self.labels.device == device:
            return self
        copies = self.__dict__.setdefault("_copies", {})
        if str(device) not in copies:
            copies[str(device)] = ImageArrays(self.images.to(device), self.labels.to(device))
        return copies[str(device)]

    def drop_copies(self) -> None:
        """Forget the device copies :meth:`on` made (their memory goes once no feeder holds them)."""
        self.__dict__.pop("_copies", None)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_copies"}


@dataclass
class DataBundle:
    """Train / validation / test splits plus what is needed to feed them."""

    name: str
    classes: list[str]
    train: ImageArrays
    val: ImageArrays
    test: ImageArrays
    crop_padding: int = 0
    flip_p: float = 0.0
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        k = len(self.classes)
        if self.has_classes and k < 2:
            raise DataError(f"data set '{self.name}' has {k} class(es); at least 2 are needed")
        if not self.has_classes and (self.train.labels.dim() not in (1, 2) or k):
            raise DataError(f"data set '{self.name}': float targets must have shape (N,) or (N, k) and no class "
                            f"names, got {tuple(self.train.labels.shape)} and {k} classes")
        shape = None
        kind = input_kind(self.train.images)
        for split in ("train", "val", "test"):
            arr: ImageArrays = getattr(self, split)
            if arr.images.dim() < 2:
                raise DataError(f"{self.name}/{split}: inputs must have a sample dimension and at least one more, "
                                f"got shape {tuple(arr.images.shape)}")
            if input_kind(arr.images) != kind:
                raise DataError(f"{self.name}/{split}: {input_kind(arr.images)} inputs ({arr.images.dtype}), but the "
                                f"training split holds {kind} ({self.train.images.dtype})")
            if arr.images.shape[0] != arr.labels.shape[0]:
                raise DataError(f"{self.name}/{split}: {arr.images.shape[0]} images but "
                                f"{arr.labels.shape[0]} labels")
            if arr.labels.is_floating_point() == self.has_classes or \
                    arr.labels.shape[1:] != self.train.labels.shape[1:]:
                raise DataError(f"{self.name}/{split}: targets {arr.labels.dtype} {tuple(arr.labels.shape[1:])}, "
                                f"but the training split holds {self.train.labels.dtype} "
                                f"{tuple(self.train.labels.shape[1:])}")
            if shape is not None and tuple(arr.images.shape[1:]) != shape:
                raise DataError(f"{self.name}/{split}: image shape {tuple(arr.images.shape[1:])} "
                                f"differs from {shape}")
            shape = tuple(arr.images.shape[1:])
            if self.has_classes and len(arr) and (int(arr.labels.min()) < 0 or int(arr.labels.max()) >= k):
                raise DataError(
                    f"{self.name}/{split}: labels out of range [{int(arr.labels.min())}, "
                    f"{int(arr.labels.max())}]; allowed 0..{k - 1} for {k} classes"
                )
        if len(self.train) == 0:
            raise DataError(f"data set '{self.name}' has an empty training split")
        if kind != "image" and (self.crop_padding or self.flip_p):
            raise DataError(f"{self.name}: random crop and flip are for images only; these are {kind} "
                            f"{tuple(self.train.images.shape[1:])} (crop_padding={self.crop_padding}, "
                            f"flip_p={self.flip_p})")
        if not self.mean and kind == "image":
            imgs = self.train.images.float().div(255)
            self.mean = tuple(imgs.mean(dim=(0, 2, 3)).tolist())
            self.std = tuple(imgs.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
        elif not self.mean and kind == "features":  # standardised per feature
            flat = self.train.images.flatten(1).double()
            self.mean = tuple(flat.mean(dim=0).tolist())
            self.std = tuple(flat.std(dim=0, unbiased=False).clamp_min(1e-6).tolist() if len(self.train) > 1
                             else [1.0] * flat.shape[1])

    @property
    def kind(self) -> str:
        """``image``, ``features`` or ``tokens`` (:data:`INPUT_KINDS`)."""
        return input_kind(self.train.images)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample's input."""
        return tuple(self.train.images.shape[1:])

    @property
    def has_classes(self) -> bool:
        """Whether the targets are class labels (integers); float targets are regression values."""
        return not self.train.labels.is_floating_point()

    @property
    def num_classes(self) -> int:
        """The network's number of outputs: the classes, or the values per regression target."""
        if self.has_classes:
            return len(self.classes)
        return 1 if self.train.labels.dim() == 1 else int(self.train.labels.shape[1])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of images; other inputs as ``(features, 1, 1)`` (what the built-in builders take)."""
        shape = self.input_shape
        if self.kind == "image":
            return shape  # type: ignore[return-value]
        return (int(np.prod(shape)), 1, 1)

    def describe(self) -> str:
        shape = "x".join(str(s) for s in self.input_shape)
        kind = "" if self.kind == "image" else f" {self.kind}"
        targets = f"{self.num_classes} classes" if self.has_classes else \
            f"{self.num_classes} regression target{'s' if self.num_classes > 1 else ''}"
        return (f"{self.name}: {len(self.train)} train / {len(self.val)} val / {len(self.test)} test, "
                f"{targets}, {shape}{kind}")


# ----------------------------------------------------------------------------- splits

def stratified_split(labels: np.ndarray, held_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, held): ``round(held_fraction * N)`` held, classes in proportion (float
    regression targets: a seeded random split)."""
    rng = np.random.default_rng(seed)
    if labels.dtype.kind == "f":
        order = rng.permutation(labels.shape[0])
        total = int(round(held_fraction * labels.shape[0]))
        return np.sort(order[total:]), np.sort(order[:total])
    classes, counts = np.unique(labels, return_counts=True)
    total = int(round(held_fraction * labels.size))
    quota = held_fraction * counts
    held_counts = np.floor(quota).astype(int)
    # largest remainders get the rest, so the total is exact
    for i in np.argsort(-(quota - held_counts), kind="stable")[: total - held_counts.sum()]:
        held_counts[i] += 1
    kept, held = [], []
    for c, n_held in zip(classes, held_counts):
        idx = rng.permutation(np.flatnonzero(labels == c))
        held.append(idx[:n_held])
        kept.append(idx[n_held:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` indices drawn with class proportions kept (seeded)."""
    if size >= labels.shape[0]:
        return np.arange(labels.shape[0])
    _, held = stratified_split(labels, size / labels.shape[0], seed)
    return held


# ----------------------------------------------------------------------------- decoding

def _deep_grey(im: Any, name: str, image_size: int | None) -> np.ndarray:
    """A high-depth grey image (``I;16*``, ``I``, ``F``) as its own values, ``(H, W, 1)``: uint16 for integers
    (0..65535), float32 for floats (finite, >= 0); :func:`_deep_to_8bit` scales a data set's together."""
    from PIL import Image

    values = np.asarray(im)
    if im.mode == "F":
        if not np.isfinite(values).all() or (values.size and float(values.min()) < 0):
            found = "not all finite" if not np.isfinite(values).all() else f"from {float(values.min()):.4g}"
            raise DataError(f"{name}: float pixels {found}; allowed values in [0, 1] or [0, 255]: save it as an 8- "
                            "or 16-bit image")
        deep = values.astype(np.float32)
    else:
        values = values.astype(np.int64)
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0 or high > 65535:
            raise DataError(f"{name}: {im.mode} pixels from {low} to {high}; allowed 0..65535 (16 bits): save it as "
                            "an 8- or 16-bit image")
        deep = values.astype(np.uint16)
    if image_size is not None and deep.shape != (image_size, image_size):
        resized = np.asarray(Image.fromarray(deep.astype(np.float32), "F").resize((image_size, image_size),
                                                                                   Image.BILINEAR))
        deep = resized.astype(np.float32) if deep.dtype == np.float32 else np.rint(resized).astype(np.uint16)
    return deep[:, :, None]


def _deep_to_8bit(images: list[np.ndarray], where: str) -> list[np.ndarray]:
    """A data set's images as uint8, its high-depth grey ones (:func:`_deep_grey`) on one scale for them all, never
    one per image: integers shifted by the bits the data set's largest value needs beyond 8 (8-bit values stored in
    16 bits kept, 12-bit data shifted by 4, 16-bit by 8), floats x 255 when none exceeds 1, else kept when none
    exceeds 255 (else refused)."""
    ints = [im for im in images if im.dtype == np.uint16]
    floats = [im for im in images if im.dtype == np.float32]
    shift = max(0, int(max(int(im.max()) for im in ints if im.size)).bit_length() - 8) if ints else 0
    high = max((float(im.max()) for im in floats if im.size), default=0.0)
    if high > 255:
        raise DataError(f"{where}: float pixels up to {high:.4g}; allowed values in [0, 1] or [0, 255]: save them as "
                        "8- or 16-bit images")
    factor = 255.0 if high <= 1 else 1.0
    out = []
    for im in images:
        if im.dtype == np.uint16:
            im = (im >> shift).astype(np.uint8)
        elif im.dtype == np.float32:
            im = np.rint(im * factor).astype(np.uint8)
        out.append(im)
    return out


def _decode(data: bytes | str | Path, image_size: int | None, name: str = "") -> np.ndarray:
    """One image as uint8 ``(H, W, C)``: ``C`` 1 for grey modes, 3 otherwise, resized to ``image_size`` square; a
    high-depth grey one as its own values (:func:`_deep_grey`), for :func:`_deep_to_8bit`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
            if im.size[0] * im.size[1] > MAX_IMAGE_PIXELS:  # checked before a pixel is decoded
                raise DataError(f"{name or data}: an image of {im.size[0]} x {im.size[1]} pixels, above the "
                                f"{MAX_IMAGE_PIXELS // 10**6} million a training image may have; remove it or "
                                "shrink it")
            if im.mode == "F" or im.mode.startswith("I"):  # convert("L") would clip every value above 255
                return _deep_grey(im, str(name or data), image_size)  # scaled with the data set's others
            im = im.convert("L" if im.mode in GREY_MODES else "RGB")  # grey images keep their one channel
            if image_size is not None and im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.BILINEAR)
            array = np.asarray(im, dtype=np.uint8)
            return array[:, :, None] if array.ndim == 2 else array
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{name or data}: not a readable image ({type(exc).__name__}); "
                        "remove it or fix the file") from None


def decoding_progress(items, desc: str, total: int | None = None):
    """A progress bar over images being decoded, on a terminal only (silent in logs and tests)."""
    import sys

    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=total, unit="img", file=sys.stderr, disable=None, leave=False,
                mininterval=0.5)


#: The folders of an image tree: ``train`` and ``test`` are read; ``val`` is said and left (validation is carved
#: from train by ``val_fraction``).
IMAGE_SPLITS = ("train", "test", "val")


def _split_class(folders: tuple[str, ...]) -> tuple[str, str] | None:
    """The (split, class) a folder (its path's parts) lies in: ``train/cat`` and ``train/cat/indoor`` ->
    ("train", "cat"); None above a class folder, outside a split, or at or below a hidden (dot) folder. The
    split is the last ``train``/``test``/``val`` above the class folder."""
    above = [i for i, part in enumerate(folders[:-1]) if part in IMAGE_SPLITS]
    if not above or any(part.startswith(".") for part in folders[above[-1]:]):
        return None
    return folders[above[-1]], folders[above[-1] + 1]


def _split_member(name: str) -> tuple[str, str] | None:
    """``.../train/cat/0001.jpg`` -> ("train", "cat"), also for an image in a folder below its class
    (``train/cat/indoor/0001.jpg``, as torchvision's ImageFolder reads it); ``val`` too; None for anything else,
    dot-files (macOS ``._0001.jpg``, ``.DS_Store``) and hidden folders included."""
    parts = Path(name).parts
    if len(parts) < 3 or not name.lower().endswith(IMAGE_SUFFIXES) or parts[-1].startswith("."):
        return None
    return _split_class(parts[:-1])


def _stack(decoded: dict[str, list[np.ndarray]], where: str) -> dict[str, np.ndarray]:
    """Each split's images as ``(N, C, H, W)``: one channel when every image of the data set is grey, three
    when any is colour (the grey ones are then repeated over the three channels); all splits one size."""
    colour = any(im.shape[2] == 3 for images in decoded.values() for im in images)
    if colour:
        decoded = {split: [np.repeat(im, 3, axis=2) if im.shape[2] == 1 else im for im in images]
                   for split, images in decoded.items()}
    sizes = sorted({im.shape[:2] for images in decoded.values() for im in images})
    if len(sizes) > 1:
        shown = ", ".join(f"{h}x{w}" for h, w in sizes[:3]) + (" ..." if len(sizes) > 3 else "")
        raise DataError(f"{where}: its images (train and test) come in {len(sizes)} sizes ({shown}); set image_size "
                        "to resize them all to N x N (train's --image-size N, a space's fixed image_size, or "
                        "TrainConfig(image_size=N))")
    return {f"{split}_x": np.stack(images).transpose(0, 3, 1, 2).copy() for split, images in decoded.items()}


def _collect(items: list[tuple[str, str, str, Callable[[], np.ndarray]]], where: str,
             folders: set[tuple[str, str]] = frozenset()) -> dict[str, np.ndarray]:
    """items: (split, class, path, decode) -> arrays for train/test (sorted by class, then path). ``folders``: the
    (split, class) folders seen; a train one without images is an error (its class would vanish), and a test one
    of a class train has (the test set would lack it)."""
    if not items:
        raise DataError(f"{where}: no images found in the layout train/<class>/<image> "
                        f"(suffixes {', '.join(IMAGE_SUFFIXES)})")
    trained = {cls for split, cls, _, _ in items if split == "train"}  # a test class train lacks is said below
    empty = sorted({f"{split}/{cls}" for split, cls in folders if split == "train" or (split == "test" and cls in trained)}
                   - {f"{split}/{cls}" for split, cls, _, _ in items})
    if empty:
        raise DataError(f"{where}: class folder{'s' if len(empty) > 1 else ''} without images: "
                        f"{', '.join(empty[:10])}{' ...' if len(empty) > 10 else ''} (image suffixes "
                        f"{', '.join(IMAGE_SUFFIXES)}); add images or remove the folder")
    classes = sorted({cls for split, cls, _, _ in items if split == "train"})
    if not classes:
        raise DataError(f"{where}: no 'train/<class>/' folders found")
    index = {c: i for i, c in enumerate(classes)}
    left = [split for split, cls, _, _ in items if split == "val"]
    if left:
        warnings.warn(f"{where}: {len(left)} images under val/ are not read: validation is carved from train/ "
                      "(val_fraction); move them into train/<class>/ to train or validate on them", stacklevel=3)
    unknown = sorted({cls for split, cls, _, _ in items if split == "test" and cls not in index})
    if unknown:
        count = sum(1 for split, cls, _, _ in items if split == "test" and cls not in index)
        warnings.warn(f"{where}: {count} test images of class{'es' if len(unknown) > 1 else ''} "
                      f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} that train/ lacks are left out "
                      "(a network cannot learn a class it never trains on)", stacklevel=3)
    out: dict[str, np.ndarray] = {"classes": np.asarray(classes)}
    decoded: dict[str, list[np.ndarray]] = {}
    for split in ("train", "test"):
        chosen = sorted(((cls, name, dec) for s, cls, name, dec in items if s == split and cls in index),
                        key=lambda t: (t[0], t[1]))
        if not chosen:
            continue
        decoded[split] = [dec() for _, _, dec in decoding_progress(chosen, f"decoding {split}", len(chosen))]
        out[f"{split}_y"] = np.asarray([index[cls] for cls, _, _ in chosen], dtype=np.int64)
    splits = list(decoded)  # train and test on one scale (high-depth grey images)
    scaled = _deep_to_8bit([im for split in splits for im in decoded[split]], where)
    for split in splits:
        decoded[split], scaled = scaled[:len(decoded[split])], scaled[len(decoded[split]):]
    out.update(_stack(decoded, where))
    return out


def read_image_folder(root: Path, image_size: int | None = None) -> dict[str, np.ndarray]:
    """Decode ``root/train/<class>/*`` (and ``root/test/<class>/*`` if present)."""
    items, folders = [], set()
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_dir():
            folders.add(_split_class(relative.parts))
            continue
        key = _split_member(str(relative))
        if key is not None:
            items.append((key[0], key[1], relative.as_posix(), lambda p=path: _decode(p, image_size)))
    return _collect(items, str(root), folders - {None})


def read_image_archive(path: Path, image_size: int | None = None) -> dict[str, np.ndarray]:
    """Decode an image-folder tree stored in a (gzipped) tar archive, in one pass. Its class folders are those
    its entries show (an archive may hold no entry for an empty folder)."""
    items, folders = [], set()
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in decoding_progress(tar, f"decoding {path.name} (once; cached)"):
                parts = Path(member.name).parts
                folders.add(_split_class(parts if member.isdir() else parts[:-1]))
                if not member.isfile():
                    continue
                key = _split_member(member.name)
                if key is None:
                    continue
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                img = _decode(data, image_size, f"{path}:{member.name}")
                items.append((key[0], key[1], Path(member.name).as_posix(), lambda a=img: a))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot read archive {path}: {exc}") from exc
    return _collect(items, str(path), folders - {None})


def default_cache_dir() -> Path:
    """``$ASP_TUNE_CACHE`` (default ``~/.cache/asp_tune``): decoded data sets and proxy scores."""
    return Path(os.environ.get("ASP_TUNE_CACHE") or Path.home() / ".cache" / "asp_tune").expanduser()


def decoded_mismatch(arrays: dict[str, np.ndarray]) -> str | None:
    """Why decoded arrays (a cache's) cannot be a data set's, or None: arrays missing, inputs and labels of
    different lengths, labels outside the classes, inputs that are not uint8 images."""
    if not {"classes", "train_x", "train_y"} <= set(arrays):
        return "it lacks arrays"
    for split in ("train", "test"):
        if f"{split}_x" not in arrays:
            continue
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.dtype != np.uint8 or x.ndim != 4 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            return f"its {split} split holds {x.dtype} {x.shape} images and {y.dtype} {y.shape} labels"
        if y.size and (y.min() < 0 or y.max() >= len(arrays["classes"])):
            return f"its {split} labels go past its {len(arrays['classes'])} classes"
    return None


def cached_decode(source: Path, image_size: int | None, cache_dir: Path | None) -> dict[str, np.ndarray]:
    """Decode an image folder or archive once; later calls read a ``.npz`` cache."""
    st = source.stat()
    identity = f"{source.resolve()}|{st.st_size}|{st.st_mtime_ns}|{image_size}|{DECODE_VERSION}"
    if source.is_dir():  # a folder's own time does not change when a file deep inside it does (nor its folders)
        identity += "|" + "|".join(f"{p.relative_to(source)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                                   if p.is_file() else f"{p.relative_to(source)}/"
                                   for p in sorted(source.rglob("*")))
    key = hashlib.sha1(identity.encode()).hexdigest()[:16]
    cache = (cache_dir or default_cache_dir()) / f"{source.name}-{key}.npz"
    if cache.exists():
        try:
            with open(cache, "rb") as handle, np.load(handle, allow_pickle=False) as z:  # closed if unreadable too
                arrays = {k: z[k] for k in z.files}
            problem = decoded_mismatch(arrays)
            if problem is None:
                return arrays
        except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
            problem = f"{type(exc).__name__}: {exc}"  # TypeError: a plain .npy there, no archive
        warnings.warn(f"decoded-data cache {cache} is damaged ({problem}); rebuilding it from {source}",
                      stacklevel=2)  # the rebuilt cache replaces it atomically below
    reader = read_image_folder if source.is_dir() else read_image_archive
    arrays = reader(source, image_size)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, lambda handle: np.savez(handle, **arrays))  # a fresh name: no link followed
    except (OSError, AspTuneError) as exc:  # a read-only or full cache only costs decode time
        warnings.warn(f"decoded-data cache {cache} not written ({exc}); the data will be decoded again next time",
                      stacklevel=2)
    return arrays


# ----------------------------------------------------------------------------- loaders

def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (values 0..16) and their labels, read from the file scikit-learn ships
    without importing scikit-learn (a second a process); through ``load_digits`` where that file is not."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    for folder in (spec.submodule_search_locations or []) if spec else []:
        shipped = Path(folder, "datasets", "data", "digits.csv.gz")
        if shipped.is_file():
            rows = np.loadtxt(shipped, delimiter=",")
            return rows[:, :-1].reshape(-1, 8, 8), rows[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target.astype(np.int64)


def _load_digits(data_dir: str | None, **_: object) -> dict[str, np.ndarray]:
    pixels, labels = _digits()
    images = np.clip(pixels * 16.0, 0, 255).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    keep, test = stratified_split(labels, 0.2, TEST_SPLIT_SEED)
    return {
        "classes": np.asarray([str(i) for i in range(10)]),
        "train_x": images[keep], "train_y": labels[keep],
        "test_x": images[test], "test_y": labels[test],
    }


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _load_image_source(data_dir: str | None, image_size: int | None = None,
                       cache_dir: Path | None = None, what: str = "image_folder") -> dict[str, np.ndarray]:
    if data_dir is None:
        raise ConfigError("data_dir", None, f"a folder (train/<class>/...) or .tar.gz archive for '{what}'")
    source = Path(data_dir)
    if not source.exists():
        raise DataError(f"data_dir {str(source)!r} does not exist")
    if not (source.is_dir() or _is_archive(source)):
        raise DataError(f"data_dir {str(source)!r} is neither a folder nor a .tar.gz/.tgz/.tar archive")
    return cached_decode(source, image_size, cache_dir)


def _load_cifar(num_classes: int) -> Callable[..., dict[str, np.ndarray]]:
    name = f"cifar{num_classes}"

    def load(data_dir: str | None, download: bool = False, cache_dir: Path | None = None,
             **_: object) -> dict[str, np.ndarray]:
        if data_dir is not None:
            src = Path(data_dir)
            if _is_archive(src) or (src.is_dir() and (src / "train").is_dir()):
                arrays = _load_image_source(data_dir, 32, cache_dir, name)
                if len(arrays["classes"]) != num_classes:
                    raise DataError(f"{data_dir}: found {len(arrays['classes'])} classes, "
                                    f"{name} has {num_classes}")
                return arrays
        import torchvision

        cls = torchvision.datasets.CIFAR10 if num_classes == 10 else torchvision.datasets.CIFAR100
        root = data_dir or str(default_cache_dir() / "torchvision")
        local = ("--data-dir (a space's data_dir) with an image-folder tree or .tar.gz archive "
                 "(train/<class>/*.jpg)")
        try:
            train = cls(root, train=True, download=download)
            test = cls(root, train=False, download=download)
        except RuntimeError as exc:
            raise DataError(f"{name} not found under {root!r}: set download to true to fetch it (train's "
                            f"--download true; a space's fixed download: true), or give {local}") from exc
        except OSError as exc:  # a download that failed (no network, a refused or broken connection), or a file
            if not download:
                raise DataError(f"cannot read {name} under {root!r}: {exc}") from None
            raise DataError(f"{name} could not be downloaded into {root!r} ({getattr(exc, 'reason', exc)}); "
                            f"without the internet, give {local}") from None
        return {
            "classes": np.asarray(train.classes),
            "train_x": np.asarray(train.data).transpose(0, 3, 1, 2).copy(),
            "train_y": np.asarray(train.targets, dtype=np.int64),
            "test_x": np.asarray(test.data).transpose(0, 3, 1, 2).copy(),
            "test_y": np.asarray(test.targets, dtype=np.int64),
        }

    return load


@dataclass(frozen=True)
class DatasetSpec:
    loader: Callable[..., dict[str, np.ndarray]]
    crop_padding: int
    flip_p: float
    takes_folder: bool = True  # reads --data-dir (digits ships with scikit-learn: it takes none)


# The specs the registry (asp_tune.registry.DATASETS) names.
DIGITS = DatasetSpec(_load_digits, crop_padding=1, flip_p=0.0, takes_folder=False)
#: A data set of the user's (a registered loader or an import path): no augmentation unless asked.
USER_DATA = DatasetSpec(lambda *a, **k: {}, crop_padding=0, flip_p=0.0)
CIFAR10 = DatasetSpec(_load_cifar(10), crop_padding=4, flip_p=0.5)
CIFAR100 = DatasetSpec(_load_cifar(100), crop_padding=4, flip_p=0.5)
IMAGE_FOLDER = DatasetSpec(
    lambda data_dir, image_size=None, cache_dir=None, **_: _load_image_source(data_dir, image_size, cache_dir),
    crop_padding=4, flip_p=0.5)


#: How many times a data set was read from its source in this process (tests check sharing).
READS = {"count": 0}


def read_dataset(name: str, data_dir: str | None = None, *, download: bool = False, image_size: int | None = None,
                 cache_dir: str | Path | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """The decoded arrays of a registered data set (``classes``, ``train_x/y``, ``test_x/y``), before
    any split: what a search loads once and shares with all its trials. ``image_size``: the square size every
    image of an image folder is resized to (none: they keep theirs)."""
    entry = resolve(DATASETS, name, "dataset")
    if image_size is not None and (not isinstance(entry, DatasetSpec) or entry in (DIGITS, CIFAR10, CIFAR100)):
        raise ConfigError("image_size", image_size, f"none: '{name}' has images of one size already (image_size "
                                                    "resizes the images of image_folder: dataset image_folder with "
                                                    "the same data_dir reads this archive or folder too)")
    READS["count"] += 1
    if not isinstance(entry, DatasetSpec):
        return user_arrays(entry, name, data_dir, seed)
    if data_dir is not None and not entry.takes_folder:
        raise ConfigError("data_dir", data_dir, f"none: '{name}' takes no folder (it ships with its library)")
    arrays = entry.loader(data_dir, download=download, image_size=image_size,
                          cache_dir=Path(cache_dir) if cache_dir else None)
    if "test_x" not in arrays:  # a folder without test/: hold out a fixed 10% as test
        keep, held = stratified_split(arrays["train_y"], 0.1, TEST_SPLIT_SEED)
        arrays = {**arrays, "test_x": arrays["train_x"][held], "test_y": arrays["train_y"][held],
                  "train_x": arrays["train_x"][keep], "train_y": arrays["train_y"][keep]}
    return arrays


def _stratified_part(x: np.ndarray, y: np.ndarray, size: int | None, seed: int, field: str,
                     what: str) -> tuple[np.ndarray, np.ndarray]:
    """``size`` samples of ``(x, y)`` in class proportions (all of them for None)."""
    if size is None:
        return x, y
    if size > y.shape[0]:
        raise ConfigError(field, size, f"at most {y.shape[0]} (the {what})")
    pick = stratified_subset(y, size, seed)
    return x[pick], y[pick]


def load_dataset(
    name: str,
    data_dir: str | None = None,
    *,
    val_fraction: float = 0.1,
    subset: int | None = None,
    test_subset: int | None = None,
    seed: int = 0,
    download: bool = False,
    image_size: int | None = None,
    cache_dir: str | Path | None = None,
    arrays: dict[str, np.ndarray] | None = None,
) -> DataBundle:
    """Load a registered data set and split off a seeded, stratified validation set.

    ``subset`` keeps that many training samples (before the validation split), ``test_subset``
    that many test samples; both stratified. The test split is fixed by the data set, never by
    ``seed``, and is only used for final reporting. ``arrays`` (from :func:`read_dataset`, e.g.
    shared through Ray's object store) skips reading the source again.
    """
    entry = resolve(DATASETS, name, "dataset")
    from asp_tune.config import TrainConfig

    for field, value in (("val_fraction", val_fraction), ("subset", subset), ("test_subset", test_subset)):
        check_value(TrainConfig, field, value)
    if arrays is None:
        arrays = read_dataset(name, data_dir, download=download, image_size=image_size, cache_dir=cache_dir,
                              seed=seed)
    if "bundle" in arrays:  # the loader returned the splits itself
        return arrays["bundle"]
    spec = entry if isinstance(entry, DatasetSpec) else USER_DATA
    classes = [str(c) for c in arrays.get("classes", ())]
    x, y = _stratified_part(arrays["train_x"], arrays["train_y"], subset, seed, "subset", f"training samples of '{name}'")
    tx, ty = _stratified_part(arrays["test_x"], arrays["test_y"], test_subset, TEST_SPLIT_SEED, "test_subset",
                              f"test samples of '{name}'")
    train_idx, val_idx = stratified_split(y, val_fraction, seed)
    if len(y) < 3:
        raise DataError(f"data set '{name}' has {len(y)} training sample{'s' if len(y) != 1 else ''}"
                        f"{' in its subset' if subset is not None else ''}; at least 3 are needed (2 to train on, "
                        "1 to validate)")
    if len(val_idx) == 0 and val_fraction > 0:  # 0: no validation split, asked for
        raise ConfigError("val_fraction", val_fraction, f"a fraction that holds out at least one of the {y.shape[0]} "
                                                        f"training samples for validation (at least {1 / len(y):.2g})")
    if len(train_idx) < 2:  # one sample cannot train (batch norm needs two)
        raise ConfigError("val_fraction", val_fraction, f"a fraction that leaves at least 2 of the {y.shape[0]} "
                                                        f"training samples{' (subset)' if subset is not None else ''} "
                                                        f"to train on (at most {len(y) - 2}/{len(y)})")
    def as_arrays(xs: np.ndarray, ys: np.ndarray) -> ImageArrays:
        xs, ys = np.ascontiguousarray(xs), np.asarray(ys, dtype=np.float32 if ys.dtype.kind == "f" else np.int64)
        # shared arrays (Ray's object store) are read-only: the few that are not already copies get one
        return ImageArrays(torch.from_numpy(xs if xs.flags.writeable else xs.copy()),
                           torch.from_numpy(ys if ys.flags.writeable else ys.copy()))

    return DataBundle(
        name=name, classes=classes,
        train=as_arrays(x[train_idx], y[train_idx]),
        val=as_arrays(x[val_idx], y[val_idx]),
        test=as_arrays(tx, ty),
        crop_padding=spec.crop_padding, flip_p=spec.flip_p,
    )


def load_dataset_for(config, arrays: dict[str, np.ndarray] | None = None) -> DataBundle:
    """:func:`load_dataset` with the data fields of a run's config (``TrainConfig``: dataset,
    data_dir, val_fraction, subset, test_subset, seed, download, image_size)."""
    return load_dataset(config.dataset, config.data_dir, val_fraction=config.val_fraction, subset=config.subset,
                        test_subset=config.test_subset, seed=config.seed, download=config.download,
                        image_size=config.image_size, arrays=arrays)


# ----------------------------------------------------------------------------- users' own data


def _as_array(values: Any, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.dtype == object or array.ndim == 0:
        raise DataError(f"{what}: an array of numbers, got {type(values).__name__} of dtype {array.dtype}")
    if array.dtype.kind == "f":
        if array.dtype.itemsize > 4 and array.size:  # NaN ignored here, refused by name in _pair
            low, high = np.fmin.reduce(array, axis=None), np.fmax.reduce(array, axis=None)
            top = np.finfo(np.float32).max
            if (np.isfinite(high) and high > top) or (np.isfinite(low) and low < -top):
                raise DataError(f"{what}: values from {low:.3g} to {high:.3g}, beyond float32's range (+-{top:.3g}) "
                                "that training computes in: scale them")
        return array.astype(np.float32, copy=False)
    if array.dtype.kind in "iu" and array.dtype != np.uint8:
        return array.astype(np.int64, copy=False)
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    return array


def _plain(value: Any) -> Any:
    """A label as NumPy reads it: a tensor (a 0-dim one too) as its array, anything else as it is."""
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


def _item_input(value: Any, what: str) -> np.ndarray:
    """One item's input as an array; a PIL image (height, width[, channels]) as uint8 ``(C, H, W)``, as a
    torchvision data set without a transform gives it."""
    if hasattr(value, "mode") and hasattr(value, "getbands"):  # a PIL image, without importing PIL
        array = np.asarray(value.convert("RGB") if value.mode not in ("L", "RGB") else value, dtype=np.uint8)
        return array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))
    return _as_array(value, what)


def _from_dataset(dataset: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of a map-style ``Dataset`` whose items are ``(input, label)`` (its size estimated from
    the first item before the rest are read)."""
    from asp_tune.sizes import check_memory

    try:
        size = len(dataset)
        if size < 1:
            raise DataError(f"{what}: the Dataset holds no samples")
        first = _item_input(dataset[0][0], what)
        check_memory(2 * size * max(first.nbytes, 1), f"{what} ({size:,} samples of {first.nbytes:,} bytes)",
                     "dataset", what)
        items = [dataset[i] for i in range(size)]
        inputs = np.stack([_item_input(x, what) for x, _ in items])
        labels = _as_array(np.asarray([_plain(y) for _, y in items]), f"{what} labels")
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what}: a Dataset of (input, label) items ({exc})") from None
    return inputs, labels


def _non_finite_rows(values: np.ndarray, rows: int = 4096) -> np.ndarray:
    """Which samples (first axis) of ``values`` hold a NaN or an infinity, read ``rows`` samples at a time (no
    copy of the whole array, whatever its strides)."""
    return np.concatenate([~np.isfinite(values[i:i + rows]).reshape(len(values[i:i + rows]), -1).all(axis=1)
                           for i in range(0, len(values), rows)]) if len(values) else np.zeros(0, bool)


def _pair(value: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        x, y = _as_array(value[0], f"{what} inputs"), _as_array(value[1], f"{what} labels")
    elif hasattr(value, "__getitem__") and hasattr(value, "__len__"):
        x, y = _from_dataset(value, what)
    else:
        raise DataError(f"{what}: (X, y) arrays or a Dataset with labels, got {type(value).__name__}")
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError(f"{what}: no samples (the inputs have shape {x.shape})")
    from asp_tune.sizes import check_memory

    check_memory(2 * (x.nbytes + y.nbytes), f"{what} ({x.shape[0]:,} samples, {x.dtype} {x.shape})", "dataset",
                 what)
    if not ((y.ndim == 1 and y.dtype.kind in "iu") or (y.ndim in (1, 2) and y.dtype.kind == "f")):
        raise DataError(f"{what}: labels must be integers of shape (N,) (classification) or floats of shape (N,) "
                        f"or (N, k) (regression), got {y.dtype} {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{what}: {x.shape[0]} inputs but {y.shape[0]} labels")
    if x.dtype == np.uint8 and x.ndim == 4 and x.shape[3] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        raise DataError(f"{what}: uint8 images of shape {x.shape} look channels-last (N, H, W, C); images are "
                        "read as (N, C, H, W): give x.transpose(0, 3, 1, 2)")
    for part, values in (("inputs", x), ("labels", y)):
        if values.dtype.kind in "fc":
            bad = _non_finite_rows(values)
            if bad.any():  # else the first epoch's loss is NaN, and the learning rate would be blamed
                raise DataError(f"{what}: {int(bad.sum()):,} of {values.shape[0]:,} samples have NaN or infinite "
                                f"{part} (the first: sample {int(np.argmax(bad))}); drop or fill them")
    return x, (y.astype(np.int64) if y.dtype.kind in "iu" else y.astype(np.float32))


def user_arrays(loader: Any, name: str, data_dir: str | None, seed: int = 0) -> dict[str, Any]:
    """The arrays of a user's loader (a registered function or an import path).

    The loader is called with the keyword arguments it accepts of ``data_dir`` and ``seed`` (all of
    them if it takes ``**kwargs``) and returns ``(X, y)`` arrays of any dtype and shape, a mapping
    with ``train`` and optionally ``test`` (and ``classes``) of that form, a ``Dataset`` of
    ``(input, label)`` items, or a :class:`DataBundle` (used as it is). Without a test split a
    fixed, stratified 20% of the samples is held out as test (as ``digits`` holds out; an image folder
    without ``test/`` holds out 10%).
    """
    import inspect

    given = {"data_dir": data_dir, "seed": seed}
    try:
        params = inspect.signature(loader).parameters
    except (TypeError, ValueError):
        params = {}
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in given.items() if takes_all or k in params}
    if data_dir is not None and "data_dir" not in kwargs:
        raise ConfigError("data_dir", data_dir, f"none: the loader of '{name}' takes no data_dir")
    try:
        out = loader(**kwargs)
    except AspTuneError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's loader: named, with its traceback
        raise UserCodeError(name, "loading the data", exc) from exc
    if isinstance(out, DataBundle):
        return {"bundle": out}
    classes = None
    if isinstance(out, dict):
        if "train" not in out:
            raise DataError(f"{name}: the loader's mapping needs a 'train' entry (and optionally 'test', 'classes')")
        classes = out.get("classes")
        train_x, train_y = _pair(out["train"], f"{name}/train")
        test = _pair(out["test"], f"{name}/test") if out.get("test") is not None else None
    else:
        train_x, train_y = _pair(out, name)
        test = None
    if test is None:
        keep, held = stratified_split(train_y, 0.2, TEST_SPLIT_SEED)
        test = (train_x[held], train_y[held])
        train_x, train_y = train_x[keep], train_y[keep]
    if train_y.dtype.kind == "f":  # regression: values, not classes
        return {"classes": np.asarray([], dtype=str), "train_x": train_x, "train_y": train_y, "test_x": test[0],
                "test_y": test[1]}
    num_classes = int(max(train_y.max(), test[1].max() if len(test[1]) else 0)) + 1
    if int(min(train_y.min(), test[1].min() if len(test[1]) else 0)) < 0 or \
            num_classes > max(MAX_CLASSES_PER_SAMPLE * train_y.shape[0], 2):
        low = int(min(train_y.min(), test[1].min() if len(test[1]) else 0))
        why = (f"a label of {low} is below 0" if low < 0 else
               f"{num_classes:,} classes are more than {MAX_CLASSES_PER_SAMPLE} per training sample: label ids, "
               "not classes")
        raise DataError(f"{name}: class labels must be 0..K-1 ({why}); got labels from {low} to {num_classes - 1} "
                        f"for {train_y.shape[0]:,} samples (float labels are regression targets)")
    if classes is None:
        empty = num_classes - len(np.unique(train_y))
        if empty:
            warnings.warn(f"{name}: the labels run from 0 to {num_classes - 1}, so the network gets {num_classes} "
                          f"outputs, and {empty} of those classes have no training sample (labels are class "
                          "indices 0..K-1: map other ids to them)", stacklevel=2)
    classes = [str(c) for c in classes] if classes is not None else [str(i) for i in range(num_classes)]
    return {"classes": np.asarray(classes), "train_x": train_x, "train_y": train_y, "test_x": test[0],
            "test_y": test[1]}
