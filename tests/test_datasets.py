import re
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from asp_tune import ConfigError, DataBundle, DataError, ImageArrays, load_dataset


def test_digits_are_scikit_learns_read_without_importing_it():
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from asp_tune.datasets import _digits

    pixels, labels = _digits()
    d = load_digits()
    assert np.array_equal(pixels, d.images) and np.array_equal(labels, d.target) and labels.dtype == np.int64
    probe = ("import sys; from asp_tune.datasets import read_dataset; read_dataset('digits'); "
             "print('sklearn' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_digits_splits_are_seeded_stratified_and_disjoint():
    a = load_dataset("digits", seed=0)
    b = load_dataset("digits", seed=0)
    c = load_dataset("digits", seed=1)
    assert a.num_classes == 10 and a.image_shape == (1, 8, 8)
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert torch.equal(a.val.labels, b.val.labels) and torch.equal(a.val.images, b.val.images)
    assert not torch.equal(a.val.images, c.val.images)
    assert torch.equal(a.test.images, c.test.images)  # the test split never depends on the seed
    counts = torch.bincount(a.val.labels, minlength=10)
    assert counts.min() >= 14 and counts.max() <= 19


def test_subset_option():
    d = load_dataset("digits", subset=300, test_subset=100, val_fraction=0.2)
    assert len(d.train) + len(d.val) == 300 and len(d.val) == 60 and len(d.test) == 100


def _write_tree(root, classes=("cat", "dog", "emu"), per_class=6, test_per_class=2, size=8):
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for ci, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                arr = np.full((size, size, 3), 40 * ci, np.uint8) + rng.integers(0, 10, (size, size, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i:04d}.png")


def test_image_folder_and_archive_give_the_same_arrays(tmp_path):
    root = tmp_path / "tree"
    _write_tree(root)
    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="tree")
    d1 = load_dataset("image_folder", str(root), val_fraction=0.34)
    d2 = load_dataset("image_folder", str(archive), val_fraction=0.34)
    assert d1.classes == ["cat", "dog", "emu"] == d2.classes
    assert len(d1.train) + len(d1.val) == 18 and len(d1.test) == 6
    assert torch.equal(d1.train.images, d2.train.images) and torch.equal(d1.test.labels, d2.test.labels)
    # PNG is lossless: class 2 images sit around 80..89
    assert 80 <= d1.test.images[d1.test.labels == 2].float().mean() <= 90
    # a second load reads the cache
    d3 = load_dataset("image_folder", str(archive), val_fraction=0.34)
    assert torch.equal(d3.train.images, d2.train.images)


def test_images_below_a_class_folder_are_read_and_what_is_left_out_is_said(tmp_path):
    """Nested images were skipped, a val/ folder and test-only classes dropped, all without a word."""
    from asp_tune.datasets import read_image_archive, read_image_folder

    root = tmp_path / "tree"
    _write_tree(root)
    (root / "train" / "cat" / "indoor").mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "train" / "cat" / "indoor" / f"n{i}.png")
    for split, cls, n in (("val", "dog", 4), ("test", "fox", 5)):
        (root / split / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / split / cls / f"{i}.png")
    with pytest.warns(UserWarning) as said:
        arrays = read_image_folder(root)
    assert list(arrays["classes"]) == ["cat", "dog", "emu"]
    assert np.bincount(arrays["train_y"]).tolist() == [9, 6, 6] and len(arrays["test_y"]) == 6
    lines = [str(w.message) for w in said]
    assert any("4 images under val/ are not read" in line for line in lines)
    assert any("5 test images of class fox that train/ lacks are left out" in line for line in lines)
    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="data")
    with pytest.warns(UserWarning):
        packed = read_image_archive(archive)
    assert np.bincount(packed["train_y"]).tolist() == [9, 6, 6]


def test_missing_and_unreadable_data(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("image_folder", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="data_dir"):
        load_dataset("image_folder", None)
    bad = tmp_path / "broken.tar.gz"
    bad.write_bytes(b"not an archive at all")
    with pytest.raises(DataError, match="cannot read archive"):
        load_dataset("image_folder", str(bad))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_dataset("image_folder", str(empty))
    with pytest.raises(DataError, match="not found under"):
        load_dataset("cifar10", str(empty))


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ConfigError, match="dataset='mnist'.*'cifar10'.*'digits'"):
        load_dataset("mnist")


def test_labels_out_of_range_are_rejected():
    imgs = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    good = ImageArrays(imgs, torch.tensor([0, 1, 0, 1]))
    bad = ImageArrays(imgs, torch.tensor([0, 1, 2, 1]))
    with pytest.raises(DataError, match=r"labels out of range \[0, 2\]; allowed 0..1 for 2 classes"):
        DataBundle("toy", ["a", "b"], bad, good, good)
    with pytest.raises(DataError, match="uint8"):
        DataBundle("toy", ["a", "b"], ImageArrays(imgs.float(), good.labels), good, good)


def test_class_ids_that_leave_classes_without_a_training_sample_are_said():
    import warnings

    from asp_tune.datasets import user_arrays

    x = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    stray = np.arange(200) % 3
    stray[10] = 1000  # one stray id: 1001 outputs, 997 of them for no class the data has
    with pytest.warns(UserWarning, match=r"mine: the labels run from 0 to 1000, so the network gets 1001 outputs, "
                                         r"and 99[78] of those classes have no training sample"):
        assert len(user_arrays(lambda: (x, stray), "mine", None)["classes"]) == 1001
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        user_arrays(lambda: (x, np.arange(200) % 3), "mine", None)  # every class has samples: nothing said
        named = {"train": (x, stray), "classes": [f"c{i}" for i in range(1001)]}
        user_arrays(lambda: named, "mine", None)  # the classes named by the loader: as it says


@pytest.mark.slow
@pytest.mark.shared_data
def test_shared_cifar10_archive(shared_data):
    d = load_dataset("cifar10", str(shared_data / "cifar10-jpg.tar.gz"), subset=2000, test_subset=1000)
    assert d.classes[:3] == ["airplane", "automobile", "bird"] and d.num_classes == 10
    assert d.image_shape == (3, 32, 32)
    assert len(d.train) + len(d.val) == 2000 and len(d.test) == 1000
    np.testing.assert_allclose(d.mean, (0.4913, 0.4821, 0.4465), atol=0.02)


# ----------------------------------------------------------------------------- non-image data


def _tabular_bundle(n: int = 600):
    import torch
    from sklearn.datasets import make_classification

    from asp_tune.datasets import DataBundle, ImageArrays

    x, y = make_classification(n_samples=n, n_features=12, n_informative=6, n_classes=3, random_state=0)
    x = torch.tensor(x * 50 + 7, dtype=torch.float32)  # far from standardised: the bundle must do it
    y = torch.tensor(y)
    part = lambda a, b: ImageArrays(x[a:b], y[a:b])  # noqa: E731
    return DataBundle("tab", ["a", "b", "c"], part(0, 400), part(400, 500), part(500, n))


def test_float_features_train_without_augmentation_and_standardised():
    import torch

    from asp_tune import TrainConfig, Trainer

    data = _tabular_bundle()
    assert data.kind == "features" and data.input_shape == (12,) and len(data.mean) == 12
    trainer = Trainer(TrainConfig(epochs=15, ratio=1.0, lr=0.05), data=data)
    x, _, _ = next(trainer.train_feeder.batches(torch.arange(400), 400))
    assert abs(float(x.mean())) < 1e-4 and float(x.std()) == pytest.approx(1.0, abs=0.01)  # no crop, no flip
    assert trainer.fit()["final_test_accuracy"] > 0.7
    with pytest.raises(ConfigError, match=r"invalid crop_padding=2: allowed 0 or none: 'tab' holds features"):
        Trainer(TrainConfig(epochs=1, crop_padding=2), data=data)


def test_token_sequences_are_fed_as_integers_and_image_defaults_are_refused():
    import torch
    from torch import nn

    from asp_tune import TrainConfig, Trainer
    from asp_tune.datasets import DataBundle, DataError, ImageArrays

    g = torch.Generator().manual_seed(0)
    seqs = torch.randint(0, 30, (300, 10), generator=g)
    labels = (seqs == 3).any(1).long()
    part = lambda a, b: ImageArrays(seqs[a:b], labels[a:b])  # noqa: E731
    data = DataBundle("seq", ["no", "yes"], part(0, 200), part(200, 250), part(250, 300))
    assert data.kind == "tokens" and data.mean == ()
    model = nn.Sequential(nn.EmbeddingBag(30, 16), nn.Linear(16, 2))
    trainer = Trainer(TrainConfig(epochs=2, ratio=0.5, metric="loss"), data=data, model=model)
    x, _, _ = next(trainer.train_feeder.batches(torch.arange(5), 5))
    assert x.dtype == torch.long and torch.equal(x, seqs[:5])
    trainer.fit()
    with pytest.raises(DataError, match="random crop and flip are for images only"):
        DataBundle("seq", ["no", "yes"], part(0, 200), part(200, 250), part(250, 300), crop_padding=4)


def test_grey_images_keep_their_channel_and_a_mixed_folder_becomes_colour(tmp_path):
    rng = np.random.default_rng(0)
    grey = tmp_path / "grey"
    for split, n in (("train", 6), ("test", 2)):
        for cls in ("a", "b"):
            (grey / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), mode="L").save(grey / split / cls / f"{i}.png")
    data = load_dataset("image_folder", str(grey), val_fraction=0.25)
    assert data.image_shape == (1, 8, 8) and len(data.mean) == 1
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(grey / "train" / "a" / "colour.png")
    mixed = load_dataset("image_folder", str(grey), val_fraction=0.25)
    assert mixed.image_shape == (3, 8, 8)
    row = mixed.train.images[(mixed.train.labels == 1).nonzero()[0, 0]]
    assert torch.equal(row[0], row[1]) and torch.equal(row[1], row[2])  # the grey ones repeated over RGB
    # the cache noticed the file added deep inside the folder (its key lists every file)


def test_arrays_go_to_a_device_once_and_travel_without_their_copies():
    import pickle

    arrays = ImageArrays(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.arange(4))
    assert arrays.on("cpu") is arrays  # already there: no copy
    placed = arrays.on("meta")  # another device (CUDA on a GPU machine): copied once, then shared
    assert placed.images.device.type == "meta" and placed.labels.device.type == "meta"
    assert arrays.on(torch.device("meta")) is placed
    again = pickle.loads(pickle.dumps(arrays))  # Ray's object store: the arrays, not their device copies
    assert "_copies" not in again.__dict__ and torch.equal(again.labels, arrays.labels)
    assert again.on("meta") is not placed


# ----------------------------------------------------------------------------- reviewed defects of the image reader


def test_16_bit_grey_images_keep_their_values_scaled_to_8_bits(tmp_path):
    """A 16-bit PNG (mode I;16) was clipped by convert('L') to 255 everywhere: a blank white data set."""
    root = tmp_path / "tree"
    for split, n in (("train", 4), ("test", 1)):
        for ci, cls in enumerate(("a", "b")):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                levels = np.array([[0, 257 * 10], [257 * (100 + ci), 65535]], np.uint16)  # 8-bit 0, 10, 100, 255
                Image.fromarray(levels).save(root / split / cls / f"{i}.png")
    assert Image.open(root / "train" / "a" / "0.png").mode == "I;16"
    d = load_dataset("image_folder", str(root), val_fraction=0.25)
    assert d.image_shape == (1, 2, 2)
    assert d.train.images[d.train.labels == 0][0, 0].tolist() == [[0, 10], [100, 255]]
    assert d.test.images[d.test.labels == 1][0, 0].tolist() == [[0, 10], [101, 255]]


def test_high_depth_grey_images_share_one_scale_per_data_set_or_are_refused_by_name(tmp_path):
    """Each image's top 8 bits made 8-bit values stored in 16 bits (a mask, a careless save) all 0, and 12-bit
    microscopy 16 grey levels; a float image was scaled by its own maximum."""
    from asp_tune.datasets import _decode, _deep_to_8bit

    def tiff(name, values):
        path = tmp_path / name
        Image.fromarray(values).save(path, "TIFF")
        return path

    def scaled(*arrays):
        return [im[..., 0].tolist() for im in _deep_to_8bit([_decode(tiff(f"{i}.tif", a), None)
                                                             for i, a in enumerate(arrays)], "set")]

    assert scaled(np.array([[0, 50, 255]], np.int32)) == [[[0, 50, 255]]]  # 8-bit values in a 32-bit image: kept
    assert scaled(np.array([[0, 1000, 4095]], np.int32)) == [[[0, 62, 255]]]  # 12-bit: shifted by 4
    assert scaled(np.array([[0, 25700]], np.int32), np.array([[255, 65535]], np.int32)) == [[[0, 100]], [[0, 255]]]
    assert scaled(np.array([[0.0, 0.5]], np.float32), np.array([[1.0, 0.25]], np.float32)) == [[[0, 128]], [[255, 64]]]
    assert scaled(np.array([[0.0, 0.5]], np.float32), np.array([[7.4, 200.0]], np.float32)) == [[[0, 0]], [[7, 200]]]
    for name, values, said in (("big.tif", np.array([[0, 70000]], np.int32), "from 0 to 70000; allowed 0..65535"),
                               ("neg.tif", np.array([[-1.0, 0.5]], np.float32), "allowed values in [0, 1] or [0, 255]"),
                               ("nan.tif", np.array([[np.nan, 0.5]], np.float32), "not all finite")):
        with pytest.raises(DataError, match=f"{name}.*{re.escape(said)}"):
            _decode(tiff(name, values), None)
    with pytest.raises(DataError, match=r"set: float pixels up to 300; allowed values in \[0, 1\] or \[0, 255\]"):
        scaled(np.array([[0.0, 300.0]], np.float32))


def test_an_empty_class_folder_is_named_not_dropped(tmp_path):
    """train/zebra/ or test/cat/ without images vanished: a class fewer, or a test set missing a class."""
    for split, cls in (("train", "zebra"), ("test", "cat")):
        root = tmp_path / f"{split}-{cls}"
        _write_tree(root)
        folder = root / split / cls
        folder.mkdir(exist_ok=True)
        for image in folder.iterdir():
            image.unlink()
        (folder / "notes.txt").write_text("not an image")
        with pytest.raises(DataError, match=f"class folder without images: {split}/{cls} "):
            load_dataset("image_folder", str(root))
        archive = tmp_path / f"{split}-{cls}.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(root, arcname="tree")
        with pytest.raises(DataError, match=f"{archive}: class folder without images: {split}/{cls} "):
            load_dataset("image_folder", str(archive))
        (folder / "notes.txt").unlink()  # an archive's empty folder is an entry of its own
        with tarfile.open(archive, "w") as tar:
            tar.add(root, arcname="tree")
        assert f"tree/{split}/{cls}" in tarfile.open(archive).getnames()
        with pytest.raises(DataError, match=f"class folder without images: {split}/{cls} "):
            load_dataset("image_folder", str(archive))


def test_an_empty_folder_added_after_decoding_is_not_hidden_by_the_cache(tmp_path):
    root = tmp_path / "tree"
    _write_tree(root)
    assert load_dataset("image_folder", str(root), cache_dir=tmp_path / "cache").num_classes == 3
    (root / "train" / "zebra").mkdir()
    with pytest.raises(DataError, match="train/zebra"):
        load_dataset("image_folder", str(root), cache_dir=tmp_path / "cache")


def test_dot_files_such_as_macos_resource_forks_are_skipped(tmp_path):
    """A tar from macOS holds ._0001.png AppleDouble files: the whole data set failed to decode."""
    import io

    root = tmp_path / "tree"
    _write_tree(root)
    (root / "train" / "cat" / "._0001.png").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)
    (root / "train" / ".ipynb_checkpoints").mkdir()  # a hidden folder is no class
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "train" / ".ipynb_checkpoints" / "x.png")
    archive = tmp_path / "mac.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="tree")
        junk = b"\x00\x05\x16\x07" + b"\x00" * 60
        info = tarfile.TarInfo("tree/train/dog/._0001.png")
        info.size = len(junk)
        tar.addfile(info, io.BytesIO(junk))
    for source in (root, archive):
        d = load_dataset("image_folder", str(source), val_fraction=0.34)
        assert d.classes == ["cat", "dog", "emu"] and len(d.train) + len(d.val) == 18


def test_images_of_different_sizes_name_the_image_size_flag_and_it_resizes_them(tmp_path):
    """The error said 'pass image_size', which nothing on the command line could; test images of another size
    than train's were refused by a different message."""
    from asp_tune.config import TrainConfig
    from asp_tune.datasets import load_dataset_for

    mixed, test_differs = tmp_path / "mixed", tmp_path / "test_differs"
    _write_tree(mixed)
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(mixed / "train" / "cat" / "big.png")
    _write_tree(test_differs)
    for image in (test_differs / "test").rglob("*.png"):
        Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(image)
    for root in (mixed, test_differs):
        with pytest.raises(DataError, match=r"come in 2 sizes .*set image_size .*train.s --image-size N, a space.s fixed image_size"):
            load_dataset("image_folder", str(root))
        config = TrainConfig(dataset="image_folder", data_dir=str(root), image_size=16).validate()
        d = load_dataset_for(config)
        assert d.image_shape == (3, 16, 16) and d.test.images.shape[1:] == (3, 16, 16)
    with pytest.raises(ConfigError, match="image_size"):
        TrainConfig(image_size=2).validate()
    with pytest.raises(ConfigError, match="image_size=16.*'digits' has images of one size already"):
        load_dataset("digits", image_size=16)


def test_image_size_is_part_of_the_decoded_cache_key_and_an_old_config_takes_its_default(tmp_path):
    from asp_tune.config import TrainConfig

    root = tmp_path / "tree"
    _write_tree(root)
    cache = tmp_path / "cache"
    assert load_dataset("image_folder", str(root), image_size=8, cache_dir=cache).image_shape == (3, 8, 8)
    assert load_dataset("image_folder", str(root), image_size=12, cache_dir=cache).image_shape == (3, 12, 12)
    assert len(list(cache.glob("*.npz"))) == 2
    old = TrainConfig().to_dict()
    del old["image_size"]  # a summary.json written before the field existed
    assert TrainConfig.from_dict(old).image_size is None


def test_a_validation_fraction_that_leaves_fewer_than_2_training_samples_is_refused_by_name(tmp_path):
    """--val-fraction 0.999 left one training sample: batch norm's 'Expected more than 1 value per channel'."""
    with pytest.raises(ConfigError, match=r"val_fraction=0.999.*at least 2 of the 40 training samples \(subset\) "
                                          r"to train on \(at most 38/40\)"):
        load_dataset("digits", subset=40, val_fraction=0.999)
    d = load_dataset("digits", subset=40, val_fraction=38 / 40)
    assert len(d.train) == 2 and len(d.val) == 38


def test_a_loader_without_test_split_holds_out_20_percent_and_an_image_folder_10(tmp_path):
    from asp_tune.datasets import user_arrays

    x, y = np.zeros((100, 3), np.float32), np.repeat(np.arange(2), 50)
    arrays = user_arrays(lambda: (x, y), "mine", None)
    assert len(arrays["test_y"]) == 20 and len(arrays["train_y"]) == 80
    root = tmp_path / "tree"
    _write_tree(root, per_class=10, test_per_class=0)
    for cls in ("cat", "dog", "emu"):
        (root / "test" / cls).rmdir()
    (root / "test").rmdir()
    d = load_dataset("image_folder", str(root))
    assert len(d.test) == 3 and len(d.train) + len(d.val) == 27


def test_nested_class_folders_and_their_archive_give_the_same_splits(tmp_path):
    # the same names in two folders below a class: the order (and so the held-out test images) must not depend
    # on whether a folder was listed or an archive read, whose members come in the order they were added
    root = tmp_path / "nest"
    for cls in ("c0", "c1"):
        for sub, base in (("a", 10), ("b", 200)):
            folder = root / "train" / cls / sub
            folder.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((4, 4), base + i + (50 if cls == "c1" else 0), np.uint8)).save(folder / f"{i}.png")
    archive = tmp_path / "nest.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for cls in ("c0", "c1"):
            for sub in ("b", "a"):  # b before a
                for i in range(3):
                    path = root / "train" / cls / sub / f"{i}.png"
                    tar.add(path, arcname=f"train/{cls}/{sub}/{i}.png")
    from_folder = load_dataset("image_folder", str(root), val_fraction=0.25)
    from_archive = load_dataset("image_folder", str(archive), val_fraction=0.25)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(from_folder, split).images, getattr(from_archive, split).images), split


def test_a_loader_may_return_a_dataset_of_tensors_or_of_pil_images_with_plain_labels():
    from torch.utils.data import TensorDataset

    from asp_tune.datasets import user_arrays

    tensors = TensorDataset(torch.randn(60, 5), torch.arange(60) % 3)  # 0-dim tensor labels
    arrays = user_arrays(lambda: tensors, "tensors", None)
    assert arrays["train_x"].shape[1:] == (5,) and arrays["train_y"].dtype == np.int64
    assert len(arrays["train_x"]) + len(arrays["test_x"]) == 60

    class Pictures:  # what torchvision's data sets give without a transform: (PIL image, int)
        def __len__(self):
            return 40

        def __getitem__(self, i):
            pixels = np.zeros((8, 6, 3), np.uint8)
            pixels[..., 1] = i  # the green channel holds the index
            return Image.fromarray(pixels), i % 2

    arrays = user_arrays(lambda: Pictures(), "pictures", None)
    images = np.concatenate([arrays["train_x"], arrays["test_x"]])
    assert images.shape[1:] == (3, 8, 6) and images.dtype == np.uint8  # (C, H, W)
    assert images[:, 0].max() == 0 and images[:, 2].max() == 0 and sorted(images[:, 1, 0, 0]) == list(range(40))


def test_channels_last_uint8_images_are_refused_naming_the_transpose():
    from asp_tune.datasets import user_arrays

    pixels = np.zeros((20, 32, 32, 3), np.uint8)
    with pytest.raises(DataError, match=r"look channels-last \(N, H, W, C\).*transpose\(0, 3, 1, 2\)"):
        user_arrays(lambda: (pixels, np.arange(20) % 2), "nhwc", None)
    arrays = user_arrays(lambda: (pixels.transpose(0, 3, 1, 2), np.arange(20) % 2), "nchw", None)
    assert arrays["train_x"].shape[1:] == (3, 32, 32)
