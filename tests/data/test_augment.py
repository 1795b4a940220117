"""Augmentation: geometry against torchvision, one transform per volume, seeds, TTA views."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import DataLoader, Dataset

from dxkit.data.augment import (
    STRENGTHS,
    Augment,
    AugmentSpec,
    build_augment,
    item_generator,
    tta_invert,
    tta_views,
    warp_slices,
)
from dxkit.errors import ConfigError, InvalidScanError

STILL = AugmentSpec(flip_p=0.0, degrees=0.0, translate=0.0, scale=(1.0, 1.0), contrast=0.0,
                    brightness=0.0)  # fmt: skip


def scan(*shape: int, seed: int = 0) -> torch.Tensor:
    """A z-scored-looking random scan."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("angle", "shift", "zoom", "flip"),
    [(12.0, (0.0, 0.0), 1.0, False), (0.0, (2.0, -3.0), 1.0, False),
     (-9.0, (1.3, 2.2), 1.1, False), (7.0, (-1.5, 0.5), 0.9, True), (0.0, (0.0, 0.0), 1.0, True)],
)  # fmt: skip
def test_warp_matches_torchvision_flip_then_affine(angle, shift, zoom, flip) -> None:
    x = scan(2, 5, 30, 26)
    low = x.amin()
    ref = TF.horizontal_flip(x) if flip else x
    ref = TF.affine(
        ref - low,
        angle=angle,
        translate=list(shift),
        scale=zoom,
        shear=[0.0, 0.0],
        interpolation=TF.InterpolationMode.BILINEAR,
    )
    out = warp_slices(x, angle, shift, zoom, flip)
    torch.testing.assert_close(out, ref + low, atol=1e-4, rtol=1e-4)  # float32 rounding


def test_shift_pads_with_the_image_minimum() -> None:
    x = torch.arange(16.0).reshape(1, 4, 4) - 3.0  # min −3 (z-scored: negative background)
    out = warp_slices(x, 0.0, (2.0, 0.0))
    torch.testing.assert_close(out[0, :, 2:], x[0, :, :2])
    assert torch.all(out[0, :, :2] == -3.0)


@pytest.mark.parametrize("strength", ["light", "medium"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 24), (1, 12, 28, 28)])
def test_shape_dtype_and_seed_repeat(strength: str, shape: tuple[int, ...]) -> None:
    dims = len(shape) - 1
    x = scan(*shape)
    a, b = build_augment(dims, strength, seed=5), build_augment(dims, strength, seed=5)
    c = build_augment(dims, strength, seed=6)
    assert a is not None and b is not None and c is not None
    outs = [a(x) for _ in range(3)]
    assert all(o.shape == x.shape and o.dtype == x.dtype for o in outs)
    assert all(torch.isfinite(o).all() for o in outs)
    for o in outs:
        torch.testing.assert_close(o, b(x))  # same seed, same sequence
    assert not torch.allclose(outs[0], c(x))
    assert not torch.allclose(outs[0], outs[1])  # it does augment


@pytest.mark.parametrize("strength", ["light", "medium"])
def test_every_slice_of_a_volume_gets_the_same_transform(strength: str) -> None:
    one = scan(1, 1, 20, 20)
    volume = one.expand(2, 9, 20, 20).contiguous()  # 2 channels × 9 identical slices
    aug = build_augment(3, strength, seed=1)
    assert aug is not None
    for _ in range(20):
        out = aug(volume)
        torch.testing.assert_close(out, out[:1, :1].expand_as(out))


def test_flip_rate_and_flip_off() -> None:
    x = scan(1, 8, 8)
    aug = Augment(replace(STILL, flip_p=0.5), spatial_dims=2, seed=0)
    flips = 0
    for _ in range(400):
        out = aug(x)
        flipped = torch.allclose(out, x.flip(-1))
        assert flipped or torch.allclose(out, x)
        flips += flipped
    assert 160 < flips < 240  # Binomial(400, 0.5): ±4 standard deviations
    no_flip = build_augment(2, "light", flip=False, seed=0)
    assert no_flip is not None and no_flip.spec.flip_p == 0.0
    assert no_flip.spec.degrees == STRENGTHS["light"].degrees


def test_contrast_and_brightness_are_relative_to_the_image() -> None:
    aug = Augment(replace(STILL, contrast=0.3, brightness=0.3), spatial_dims=2, seed=2)
    x = scan(1, 16, 16) * 4.0 + 10.0
    for _ in range(20):
        out = aug(x)
        ratio = float(out.std() / x.std())
        assert 0.7 - 1e-5 <= ratio <= 1.3 + 1e-5  # contrast 1 ± 0.3
        assert abs(float(out.mean() - x.mean())) <= 0.3 * float(x.std()) + 1e-4
        torch.testing.assert_close((out - out.mean()) / out.std(), (x - x.mean()) / x.std())
    flat = torch.full((1, 8, 8), -1.7)
    torch.testing.assert_close(aug(flat), flat)  # nothing to jitter on a constant image


def test_gamma_keeps_order_and_range() -> None:
    aug = Augment(replace(STILL, gamma=0.3), spatial_dims=2, seed=2)
    x = scan(1, 16, 16)
    changed = 0
    for _ in range(20):
        out = aug(x)
        assert torch.equal(out.flatten().argsort(), x.flatten().argsort())
        torch.testing.assert_close(torch.stack(torch.aminmax(out)), torch.stack(torch.aminmax(x)))
        changed += not torch.allclose(out, x)
    assert changed == 20


def test_random_erasing_fills_a_rectangle_with_the_mean() -> None:
    spec = replace(STILL, erase_p=1.0, erase_area=(0.1, 0.1))
    aug = Augment(spec, spatial_dims=2, seed=3)
    x = scan(1, 20, 20) + 5.0
    out = aug(x)
    changed = (out != x)[0]
    rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
    area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert int(changed.sum()) == int(area) and 20 <= int(area) <= 60  # one box, ~10 % of 400
    torch.testing.assert_close(out[0][changed], x.mean().expand(int(changed.sum())))


def test_explicit_generator_overrides_and_item_generator_repeats() -> None:
    aug = build_augment(2, "medium", seed=0)
    assert aug is not None
    x = scan(1, 28, 28)
    a = aug(x, generator=item_generator(seed=1, epoch=2, index=3))
    b = aug(x, generator=item_generator(seed=1, epoch=2, index=3))
    c = aug(x, generator=item_generator(seed=1, epoch=3, index=3))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


class _Repeated(Dataset[torch.Tensor]):
    def __init__(self, augment: Augment) -> None:
        self.augment = augment
        self.x = scan(1, 8, 8)

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.augment(self.x)


def _epoch(loader: DataLoader, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)  # what Lightning's seed_everything does for the workers' seeds
    return torch.cat(list(loader))


def test_workers_differ_and_a_seeded_run_repeats() -> None:
    aug = build_augment(2, "light", seed=0)
    assert aug is not None
    loader = DataLoader(_Repeated(aug), batch_size=4, num_workers=2)
    first, again, other = _epoch(loader, 0), _epoch(loader, 0), _epoch(loader, 1)
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first[:4], first[4:])  # the two workers draw differently
    assert not torch.allclose(first, other)


def test_none_and_bad_arguments() -> None:
    assert build_augment(2, "none") is None
    with pytest.raises(ConfigError, match="augment strength 'heavy' unknown"):
        build_augment(2, "heavy")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="spatial_dims must be 2 or 3"):
        build_augment(4, "light")
    aug = build_augment(3, "light")
    assert aug is not None
    with pytest.raises(InvalidScanError, match=r"\(C, D, H, W\) tensor, got \(1, 8, 8\)"):
        aug(scan(1, 8, 8))
    with pytest.raises(InvalidScanError, match=r"torch\.uint8"):
        aug(torch.zeros(1, 4, 8, 8, dtype=torch.uint8))


@pytest.mark.parametrize("shape", [(1, 8, 6), (4, 1, 8, 6), (1, 5, 8, 6), (2, 1, 5, 8, 6)])
def test_tta_views_and_their_inverse(shape: tuple[int, ...]) -> None:
    dims = 2 if shape[-3] != 5 else 3
    x = scan(*shape)
    views = tta_views(x, dims)
    assert len(views) == 2 and views[0] is x
    torch.testing.assert_close(views[1], x.flip(-1))
    # A "model" that returns its input as a map: undoing each view's flip recovers the scan.
    for restored in tta_invert(views, dims):
        torch.testing.assert_close(restored, x)
    both = tta_views(x, dims, flip_axes=(-1, -2))
    assert len(both) == 3
    torch.testing.assert_close(tta_invert(both, dims, flip_axes=(-1, -2))[2], x)
    with pytest.raises(ConfigError, match="2 maps for 3 test-time views"):
        tta_invert(views, dims, flip_axes=(-1, -2))


@pytest.mark.parametrize("strength", ["light", "medium"])
@pytest.mark.parametrize("shape", [(6, 1, 28, 28), (5, 3, 20, 24), (4, 1, 6, 16, 16)])
def test_batch_equals_one_scan_at_a_time(strength: str, shape: tuple[int, ...]) -> None:
    dims = len(shape) - 2
    spec = replace(STRENGTHS[strength], erase_p=0.5 if strength == "medium" else 0.0)
    x = scan(*shape) * 2.0 + 1.0
    batch = Augment(spec, dims, seed=9).batch(x)
    single = Augment(spec, dims, seed=9)
    expected = torch.stack([single(x[i]) for i in range(len(x))])
    torch.testing.assert_close(batch, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(InvalidScanError, match=r"\(B, C, "):
        single.batch(x[0])
