import pytest
import torch

from asp_tune.datasets import ImageArrays
from asp_tune.feeding import (batch_slices, ArrayImageDataset, DeviceFeeder, SelectedIndexSampler, StreamFeeder,
                              random_crop, random_flip)


def arrays(n=40, c=3, h=6, w=6):
    images = torch.arange(n * c * h * w, dtype=torch.int64).remainder(251).to(torch.uint8).view(n, c, h, w)
    return ImageArrays(images, torch.arange(n) % 4)


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    x = arrays(16).images
    g = torch.Generator().manual_seed(0)
    out = random_crop(x, 2, g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(16):  # every crop equals some window of the padded image
        windows = [padded[i, :, dy:dy + 6, dx:dx + 6] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], win) for win in windows)
    assert not torch.equal(out, x)  # with 16 images some offset is non-zero


def test_random_flip_probability_and_exactness():
    x = arrays(2000, 1, 2, 3).images
    g = torch.Generator().manual_seed(0)
    out = random_flip(x, 0.25, g)
    flipped = (out != x).flatten(1).any(1)
    assert torch.equal(out[flipped], x[flipped].flip(3))
    assert 0.2 < flipped.float().mean() < 0.3
    assert torch.equal(random_flip(x, 0.0, g), x)


def test_device_feeder_batches_carry_indices_and_normalise():
    a = arrays(50)
    f = DeviceFeeder(a, "cpu", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), augment=False)
    idx = torch.tensor([7, 3, 11, 49, 0, 5])
    batches = list(f.batches(idx, 2))
    assert [b[2].tolist() for b in batches] == [[7, 3], [11, 49], [0, 5]]
    # a trailing one-sample batch joins the one before (batch norm cannot train on one sample)
    assert [b[2].tolist() for b in f.batches(idx[:5], 2)] == [[7, 3], [11, 49, 0]]
    x, y, i = batches[0]
    torch.testing.assert_close(x, (a.images[[7, 3]].float() / 255 - 0.5) / 0.25)
    assert y.tolist() == a.labels[[7, 3]].tolist()
    assert sum(b[0].shape[0] for b in f.batches(None, 16)) == 50


def test_device_feeder_augmentation_is_seeded_and_checkpointed():
    a = arrays(30)
    f1 = DeviceFeeder(a, "cpu", (0.5,) * 3, (0.2,) * 3, crop_padding=2, flip_p=0.5, seed=4)
    f2 = DeviceFeeder(a, "cpu", (0.5,) * 3, (0.2,) * 3, crop_padding=2, flip_p=0.5, seed=4)
    idx = torch.arange(30)
    x1 = next(f1.batches(idx, 30))[0]
    state = f1.state_dict()
    nxt = next(f1.batches(idx, 30))[0]
    assert torch.equal(x1, next(f2.batches(idx, 30))[0])
    f2.load_state_dict(state)
    assert torch.equal(nxt, next(f2.batches(idx, 30))[0])


def test_channels_last_output():
    f = DeviceFeeder(arrays(4), "cpu", (0.5,) * 3, (0.2,) * 3, channels_last=True)
    x = next(f.batches(None, 4))[0]
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_sampler_yields_selected_indices_in_order():
    s = SelectedIndexSampler()
    s.set_indices(torch.tensor([5, 1, 9]))
    assert list(s) == [5, 1, 9] and len(s) == 3


def test_stream_feeder_matches_device_feeder_without_augmentation():
    a = arrays(25)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.4)
    dev = DeviceFeeder(a, "cpu", mean, std, augment=False)
    stream = StreamFeeder(ArrayImageDataset(a, mean, std, augment=False), "cpu", num_workers=0)
    idx = torch.tensor([24, 2, 13, 5, 8, 1, 0])
    for (xd, yd, id_), (xs, ys, is_) in zip(dev.batches(idx, 3), stream.batches(idx, 3)):
        torch.testing.assert_close(xd, xs)
        assert torch.equal(yd, ys) and torch.equal(id_, is_)
    assert sum(b[2].numel() for b in stream.batches(idx, 3)) == 7


def test_cutout_zeros_one_clipped_square_per_image():
    from asp_tune.feeding import random_cutout

    images = torch.ones(64, 3, 10, 10)
    g = torch.Generator().manual_seed(0)
    out = random_cutout(images, 4, g)
    holes = (out == 0).all(dim=1)  # (B, H, W): zeroed in every channel
    per_image = holes.flatten(1).sum(dim=1)
    assert torch.equal((out == 0).sum(dim=1).flatten(1).sum(dim=1), 3 * per_image)  # same hole in all channels
    assert per_image.max() == 16 and per_image.min() >= 4  # clipped at borders, never empty
    rows, cols = holes.any(dim=2), holes.any(dim=1)
    assert torch.equal(holes, rows[:, :, None] & cols[:, None, :])  # a rectangle
    assert torch.equal(random_cutout(images, 0, g), images)


def test_batch_slices_merge_a_small_trailing_batch():
    assert [(p.start, p.stop) for p in batch_slices(129, 64)] == [(0, 64), (64, 129)]
    assert [(p.start, p.stop) for p in batch_slices(143, 64)] == [(0, 64), (64, 143)]  # 15 < 64 / 4
    assert [(p.start, p.stop) for p in batch_slices(144, 64)] == [(0, 64), (64, 128), (128, 144)]
    assert [(p.start, p.stop) for p in batch_slices(1, 64)] == [(0, 1)]
    assert batch_slices(0, 64) == []


def test_batch_slices_merge_only_a_trailing_batch_below_a_quarter_of_the_size():
    """A last batch of 1 was always merged: batch_size=1 ended on a batch of 2, batch_size=4 on one of 5."""
    def sizes(count, batch_size):
        return [p.stop - p.start for p in batch_slices(count, batch_size)]

    assert sizes(9, 1) == [1] * 9 and sizes(9, 2) == [2, 2, 2, 2, 1] and sizes(9, 4) == [4, 4, 1]
    assert sizes(9, 8) == [9] and sizes(70, 32) == [32, 38] and sizes(72, 32) == [32, 32, 8]  # 6 < 8; 8 is not


@pytest.mark.parametrize("storage", ["device", "stream"])
def test_an_epoch_leaving_one_sample_over_trains_a_batch_norm_model(storage):
    """The default MLP has batch norm: 129 samples at batch 64 used to end on a one-sample batch
    and crash with 'Expected more than 1 value per channel'."""
    from asp_tune import TrainConfig, Trainer, load_dataset

    data = load_dataset("digits", subset=143, val_fraction=0.1)
    assert len(data.train) == 129
    trainer = Trainer(TrainConfig(epochs=2, batch_size=64, storage=storage), data=data)
    for _ in range(2):
        assert trainer.train_epoch()["selected"] == 129


def test_stacked_batches_are_each_feeder_s_own_batches_made_at_once():
    generator = torch.Generator().manual_seed(0)
    data = ImageArrays(torch.randint(0, 256, (90, 3, 10, 10), dtype=torch.uint8, generator=generator),
                         torch.randint(0, 10, (90,), generator=generator))

    def feeders():
        return [DeviceFeeder(data, "cpu", (0.5, 0.5, 0.5), (0.2, 0.3, 0.4), crop_padding=3, flip_p=0.5,
                             seed=seed, cutout=4) for seed in (1, 2, 3)]

    stacked, alone = feeders(), feeders()
    for epoch in range(2):  # the generators stay where their own batches would leave them
        indices = [torch.randperm(90, generator=generator)[:70] for _ in range(3)]
        together = list(stacked[0].stacked_batches(stacked[1:], indices, 32))
        apart = [list(f.batches(i, 32)) for f, i in zip(alone, indices)]
        assert [x.shape[:2] for x, _, _ in together] == [(3, 32), (3, 38)]  # the short tail joins the batch before
        for step, (x, y, idx) in enumerate(together):
            for k in range(3):
                mine_x, mine_y, mine_idx = apart[k][step]
                assert torch.equal(x[k], mine_x) and torch.equal(y[k], mine_y) and torch.equal(idx[k], mine_idx)
    other = DeviceFeeder(data, "cpu", (0.5, 0.5, 0.5), (0.2, 0.3, 0.4), crop_padding=2, flip_p=0.5, seed=4, cutout=4)
    with pytest.raises(ValueError, match="same augmentation"):
        stacked[0].stacked_batches([other], [torch.arange(10)] * 2, 4)
    with pytest.raises(ValueError, match="one length"):
        stacked[0].stacked_batches(stacked[1:2], [torch.arange(10), torch.arange(9)], 4)


def test_cutout_keeps_the_channels_last_layout_the_feeder_was_asked_for():
    data = arrays(n=8, h=8, w=8)
    feeder = DeviceFeeder(data, "cpu", (0.5, 0.5, 0.5), (0.2, 0.2, 0.2), crop_padding=1, seed=0, cutout=3,
                          channels_last=True)
    x, _, _ = next(feeder.batches(None, 8))
    assert x.is_contiguous(memory_format=torch.channels_last)
