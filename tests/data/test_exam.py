"""Exams, series validation, plane from orientation, collate, series-wide augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dxkit.data.exam import (
    AffineParams,
    Exam,
    ExamDataset,
    IntensityNormalization,
    Series,
    SeriesAugmentation,
    collate_exams,
    plane_from_orientation,
    validate_volume,
)
from dxkit.errors import DataSourceError, InvalidScanError
from dxkit.preprocess.spec import Preprocessing


def make_exam(exam_id: str, depths: dict[str, int], size: int = 24, seed: int = 0) -> Exam:
    rng = np.random.default_rng(seed)
    series = {
        p: Series(p, rng.integers(0, 200, (d, size, size), dtype=np.uint8), exam_id=exam_id)
        for p, d in depths.items()
    }
    return Exam(exam_id, series, {"abnormal": 1.0, "acl": 0.0, "meniscus": 1.0})


# --- plane from ImageOrientationPatient ---------------------------------------------------


@pytest.mark.parametrize(
    ("iop", "plane"),
    [
        ((1, 0, 0, 0, 1, 0), "axial"),
        ((1, 0, 0, 0, 0, -1), "coronal"),
        ((0, 1, 0, 0, 0, -1), "sagittal"),
        # axial tilted 20° about the left-right axis: normal (0, -sin20, cos20) → still axial
        ((1, 0, 0, 0, math.cos(math.radians(20)), math.sin(math.radians(20))), "axial"),
        # sagittal tilted 30° toward coronal: normal (cos30, -sin30, 0) → sagittal
        ((math.sin(math.radians(30)), math.cos(math.radians(30)), 0, 0, 0, -1), "sagittal"),
    ],
)
def test_plane_from_orientation(iop: tuple[float, ...], plane: str) -> None:
    assert plane_from_orientation(iop) == plane


@pytest.mark.parametrize(
    ("iop", "match"),
    [
        ((1, 0, 0, 0, 1), "6 finite"),
        ((1, 0, 0, 0, float("nan"), 0), "6 finite"),
        ((2, 0, 0, 0, 1, 0), "unit vectors"),
        ((1, 0, 0, 1, 0, 0), "orthogonal"),
        ((1, 0, 0, 0, math.sqrt(0.5), math.sqrt(0.5)), "ambiguous"),
    ],
)
def test_plane_from_bad_orientation(iop: tuple[float, ...], match: str) -> None:
    with pytest.raises(InvalidScanError, match=match):
        plane_from_orientation(iop)


# --- validation of volumes, series and exams ---------------------------------------------


@pytest.mark.parametrize(
    ("volume", "value_range", "match"),
    [
        (np.zeros((4, 4), np.uint8), None, "2 dimensions"),
        (np.zeros((1, 2, 3, 4, 5), np.uint8), None, "5 dimensions"),
        (np.zeros((0, 8, 8), np.uint8), None, "empty series"),
        (np.array([[[1.0, np.nan]]], np.float32), None, "NaN"),
        (np.array([[[1.0, np.inf]]], np.float32), None, "NaN or infinite"),
        (np.array([[[0, 300]]], np.int16), (0.0, 255.0), r"values 0\.\.300 .*0\.\.255"),
        (np.array([[[-1.0, 3.0]]], np.float32), (0.0, 255.0), "outside the expected range"),
        (np.array([[["a"]]]), None, "not a numeric"),
    ],
)
def test_bad_volumes_name_exam_and_file(
    volume: np.ndarray, value_range: tuple[float, float] | None, match: str
) -> None:
    with pytest.raises(InvalidScanError, match=match) as info:
        validate_volume(volume, exam_id="0042", source="x/axial/0042.npy", value_range=value_range)
    assert "exam 0042" in str(info.value) and "x/axial/0042.npy" in str(info.value)


def test_good_volumes_pass() -> None:
    for vol in (
        np.zeros((3, 8, 8), np.uint8),
        np.full((1, 3, 8, 8), 255.0, np.float32),
        np.array([[[0, 255]]], np.int16),
    ):
        assert validate_volume(vol, exam_id="1", source="s", value_range=(0.0, 255.0)) is vol


def test_series_and_exam_checks() -> None:
    with pytest.raises(DataSourceError, match="unknown plane 'sagital'"):
        Series("sagital", np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(InvalidScanError, match="exam 7: in-memory axial series: empty"):
        Series("axial", np.zeros((0, 4, 4), np.uint8), exam_id="7")
    ax = Series("axial", np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(DataSourceError, match="exam 9: has no series"):
        Exam("9", {})
    with pytest.raises(DataSourceError, match="filed under 'coronal'"):
        Exam("9", {"coronal": ax})
    with pytest.raises(DataSourceError, match="label acl=2"):
        Exam("9", {"axial": ax}, {"acl": 2})
    exam = Exam("9", {"axial": ax}, {"acl": 1, "abnormal": 0})
    np.testing.assert_array_equal(exam.label_vector(["abnormal", "acl"]), [0.0, 1.0])
    with pytest.raises(DataSourceError, match="exam 9: no label for \\['meniscus'\\]"):
        exam.label_vector(["acl", "meniscus"])
    with pytest.raises(DataSourceError, match="exam 9: has no sagittal series"):
        exam.volume("sagittal")
    assert exam.series["axial"].num_slices == 3


# --- collate -----------------------------------------------------------------------------


def three_exams() -> list[Exam]:
    return [
        make_exam("0000", {"axial": 17, "coronal": 33, "sagittal": 60}, seed=0),
        make_exam("0001", {"axial": 41, "coronal": 20, "sagittal": 25}, seed=1),
        make_exam("0002", {"axial": 23, "coronal": 58, "sagittal": 19}, seed=2),
    ]


def test_collate_keeps_variable_slice_counts_without_padding() -> None:
    exams = three_exams()
    batch = collate_exams([ExamDataset(exams)[i] for i in range(3)])
    assert batch["exam_ids"] == ["0000", "0001", "0002"]
    assert batch["labels"].shape == (3, 3)
    for plane in ("axial", "coronal", "sagittal"):
        depths = [e.series[plane].num_slices for e in exams]
        assert batch["lengths"][plane].tolist() == depths
        assert [tuple(s.shape) for s in batch["planes"][plane]] == [(1, d, 24, 24) for d in depths]
        for exam, series in zip(exams, batch["planes"][plane], strict=True):
            expected = torch.from_numpy(exam.volume(plane).astype(np.float32) / 255.0)
            torch.testing.assert_close(series[0], expected)  # slices in order, per exam


def test_padded_layout_pads_with_zeros_after_each_series() -> None:
    exams = three_exams()
    batch = collate_exams([ExamDataset(exams)[i] for i in range(3)], layout="padded")
    padded = batch["planes"]["coronal"]
    assert padded.shape == (3, 1, 58, 24, 24)
    for i, exam in enumerate(exams):
        d = exam.series["coronal"].num_slices
        expected = torch.from_numpy(exam.volume("coronal").astype(np.float32) / 255.0)
        torch.testing.assert_close(padded[i, 0, :d], expected)
        assert not padded[i, :, d:].any()


def test_collated_batch_feeds_the_slice_stack_model() -> None:
    slicestack = pytest.importorskip("dxkit.models.slicestack")
    exams = [make_exam(f"{i}", {"axial": d, "sagittal": 6 - d}, size=16, seed=i) for i, d in
             enumerate((2, 5, 3))]  # fmt: skip
    items = [ExamDataset(exams, planes=["axial", "sagittal"])[i] for i in range(3)]
    as_list, as_padded = collate_exams(items), collate_exams(items, layout="padded")
    slices, lengths = slicestack.pack_series(as_list["planes"]["axial"])
    assert slices.shape == (2 + 5 + 3, 1, 16, 16)
    assert lengths.tolist() == as_list["lengths"]["axial"].tolist() == [2, 5, 3]
    padded_slices, _ = slicestack.pack_series(
        as_padded["planes"]["axial"], as_padded["lengths"]["axial"]
    )
    torch.testing.assert_close(padded_slices, slices)
    torch.manual_seed(0)
    net = slicestack.ExamNetworks("smallresnet", ["axial", "sagittal"], ["acl"], "multitask")
    net.eval()
    with torch.no_grad():
        out_list = net(as_list["planes"])
        out_padded = net(as_padded["planes"], as_padded["lengths"])
    assert out_list.shape == (3, 2, 1)
    torch.testing.assert_close(out_list, out_padded)


def test_collate_refuses_mixed_sizes_and_missing_planes() -> None:
    a = ExamDataset([make_exam("a", {"axial": 5}, size=24)], planes=["axial"])[0]
    b = ExamDataset([make_exam("b", {"axial": 6}, size=32)], planes=["axial"])[0]
    with pytest.raises(InvalidScanError, match="size="):
        collate_exams([a, b])
    c = ExamDataset([make_exam("c", {"coronal": 6})], planes=["coronal"])[0]
    with pytest.raises(DataSourceError, match="exam c has no axial series"):
        collate_exams([a, c])
    resized = ExamDataset([make_exam("b", {"axial": 6}, size=32)], planes=["axial"], size=24)[0]
    assert [s.shape[1] for s in collate_exams([a, resized])["planes"]["axial"]] == [5, 6]


def test_dataset_needs_planes_and_labels() -> None:
    exam = make_exam("0005", {"axial": 5})
    with pytest.raises(DataSourceError, match="exam 0005: lacks the \\['coronal'\\]"):
        ExamDataset([exam], planes=["axial", "coronal"])
    with pytest.raises(DataSourceError, match="exam 0005: no label for \\['tumour'\\]"):
        ExamDataset([exam], findings=["tumour"], planes=["axial"])


# --- augmentation: one transform per series ----------------------------------------------


def marked_stack(depth: int = 12, size: int = 48, row: int = 10, col: int = 12) -> torch.Tensor:
    """Different noise on every slice, one bright marker at the same spot on all of them."""
    g = torch.Generator().manual_seed(3)
    vol = torch.rand(1, depth, size, size, generator=g) * 50
    vol[:, :, row, col] = 255.0
    return vol


def test_shift_and_flip_move_every_slice_the_same_hand_computed_way() -> None:
    vol = marked_stack()
    out = SeriesAugmentation.apply(vol, AffineParams(angle=0.0, shift=(5.0, -3.0), flip=True))
    # marker (10, 12): shift x+5, y-3 → (7, 17); horizontal flip in width 48 → (7, 30)
    for d in range(vol.shape[1]):
        flat = int(out[0, d].argmax())
        assert divmod(flat, 48) == (7, 30)


def test_rotation_matches_per_slice_reference_and_numpy_rot90() -> None:
    vol = marked_stack(depth=9, size=33)
    params = AffineParams(angle=17.0, shift=(2.0, 4.0), flip=False)
    stacked = SeriesAugmentation.apply(vol, params)
    one_by_one = torch.stack([SeriesAugmentation.apply(vol[:, d], params) for d in range(9)], 1)
    torch.testing.assert_close(stacked, one_by_one)
    # torchvision's affine angle is clockwise: 90° equals numpy's rot90 with k=-1 (odd size).
    quarter = SeriesAugmentation.apply(vol, AffineParams(90.0, (0.0, 0.0), False))
    reference = np.rot90(vol.numpy(), k=-1, axes=(-2, -1))
    np.testing.assert_allclose(quarter.numpy(), reference, atol=1e-3)  # float cos(90°) != 0


def test_random_draws_stay_in_the_paper_ranges_and_vary() -> None:
    aug, g = SeriesAugmentation(), torch.Generator().manual_seed(0)
    draws = [aug.sample(g) for _ in range(400)]
    angles = np.array([p.angle for p in draws])
    shifts = np.array([p.shift for p in draws])
    flips = np.array([p.flip for p in draws])
    assert np.abs(angles).max() <= 25 and np.abs(shifts).max() <= 25
    assert angles.min() < -20 and angles.max() > 20 and shifts.min() < -20 and shifts.max() > 20
    assert 0.4 < flips.mean() < 0.6


def test_dataset_augments_all_slices_of_a_series_alike_and_repeats_with_the_seed() -> None:
    depth, size = 10, 48
    vol = marked_stack(depth, size).numpy()[0].astype(np.uint8)
    exam = Exam("0003", {"sagittal": Series("sagittal", vol)}, {"acl": 1})
    ds = ExamDataset(
        [exam], ["acl"], ["sagittal"], augmentation=SeriesAugmentation(max_shift=8), seed=11
    )
    out = ds[0]["planes"]["sagittal"][0]
    peaks = {divmod(int(out[d].argmax()), size) for d in range(depth)}
    assert len(peaks) == 1 and peaks != {(10, 12)}  # moved, and identically on every slice
    torch.testing.assert_close(ds[0]["planes"]["sagittal"], ds[0]["planes"]["sagittal"])
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["planes"]["sagittal"][0], out)
    ds.set_epoch(0)
    torch.testing.assert_close(ds[0]["planes"]["sagittal"][0], out)


# --- intensity normalisation -------------------------------------------------------------


def test_normalisation_fit_matches_numpy_and_the_checkpoint_preprocessing() -> None:
    exams = [make_exam(f"{i:04d}", {"axial": 5 + i, "coronal": 7}, seed=i) for i in range(4)]
    norm = IntensityNormalization.fit(exams, planes=["axial", "coronal"])
    voxels = np.concatenate(
        [e.volume(p).ravel() / 255.0 for e in exams for p in ("axial", "coronal")]
    )
    assert norm.mean == pytest.approx(voxels.mean(), rel=1e-9)
    assert norm.std == pytest.approx(voxels.std(), rel=1e-9)

    recorded = norm.to_dict()
    assert IntensityNormalization.from_dict(recorded) == norm
    spec = Preprocessing(spatial_dims=2, in_chans=1, input_kind="uint8", **recorded)
    slice_ = exams[0].volume("axial")[2]
    expected = spec.apply(slice_)  # the checkpoint's own preprocessing path
    ds = ExamDataset(exams, planes=["axial"], normalization=norm)
    assert ds.normalization_dict() == recorded
    torch.testing.assert_close(ds[0]["planes"]["axial"][:, 2], expected)
