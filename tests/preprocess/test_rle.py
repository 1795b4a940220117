"""Run-length masks: hand examples, round trips, the real SIIM CSV, CSV variants, bad input."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dxkit.errors import DataSourceError, MissingFileError
from dxkit.preprocess.rle import (
    decode_rle,
    decode_rows,
    encode_rle,
    parse_rle,
    read_rle_csv,
    read_rle_rows,
)

SIIM_CSV = "train-rle-sample.csv"
POSITIVE_IDS = {
    "1.2.276.0.7230010.3.1.4.8323329.4904.1517875185.355709",
    "1.2.276.0.7230010.3.1.4.8323329.1314.1517875167.222290",
    "1.2.276.0.7230010.3.1.4.8323329.4440.1517875182.865105",
    "1.2.276.0.7230010.3.1.4.8323329.4982.1517875185.837576",
    "1.2.276.0.7230010.3.1.4.8323329.12743.1517875241.599591",
}


# --- independent pure-Python references (the loops the SIIM starter code used) -------------


def reference_decode_relative(rle: str, rows: int, cols: int) -> list[list[int]]:
    flat = [0] * (rows * cols)
    if rle.strip() != "-1":
        values = [int(v) for v in rle.split()]
        position = 0
        for gap, length in zip(values[0::2], values[1::2], strict=True):
            position += gap
            for p in range(position, position + length):
                flat[p] = 1
            position += length
    # pixel p lies in column p // rows, row p % rows (column-major)
    return [[flat[c * rows + r] for c in range(cols)] for r in range(rows)]


def reference_encode(mask: np.ndarray, relative: bool, column_major: bool) -> str:
    rows, cols = mask.shape
    pixels = (
        [int(mask[r, c]) for c in range(cols) for r in range(rows)]
        if column_major
        else [int(mask[r, c]) for r in range(rows) for c in range(cols)]
    )
    out: list[int] = []
    previous_end, start = 0, None
    for p, value in enumerate([*pixels, 0]):
        if value and start is None:
            start = p
        elif not value and start is not None:
            out += [start - previous_end, p - start] if relative else [start + 1, p - start]
            previous_end, start = p, None
    return " ".join(map(str, out)) if out else "-1"


# --- hand-computed examples ------------------------------------------------------------------

# Column-major pixel order: col 0 = 1,0,0; col 1 = 1,0,1; col 2 = 0,0,1 → runs at 0, 3, 5, 8.
HAND = np.array([[1, 1, 0], [0, 0, 0], [0, 1, 1]], dtype=np.uint8)


def test_hand_example_all_encodings() -> None:
    assert encode_rle(HAND) == "0 1 2 1 1 1 2 1"
    assert encode_rle(HAND, encoding="absolute") == "1 1 4 1 6 1 9 1"
    assert encode_rle(HAND, encoding="absolute", order="C") == "1 2 8 2"
    assert encode_rle(HAND, encoding="relative", order="C") == "0 2 5 2"
    np.testing.assert_array_equal(decode_rle("0 1 2 1 1 1 2 1", (3, 3)), HAND)
    np.testing.assert_array_equal(
        decode_rle("1 2 8 2", (3, 3), encoding="absolute", order="C"), HAND
    )


def test_empty_codes_and_empty_mask() -> None:
    for code in ("-1", " -1 ", ""):
        mask = decode_rle(code, (4, 5))
        assert mask.shape == (4, 5) and mask.dtype == np.uint8 and not mask.any()
    assert encode_rle(np.zeros((4, 5), np.uint8)) == "-1"
    assert encode_rle(np.zeros((4, 5), np.uint8), encoding="absolute", empty="") == ""


def test_several_rows_are_ored() -> None:
    # Two regions given as two rows, plus an overlapping third and an empty one.
    a, b = np.zeros((6, 6), np.uint8), np.zeros((6, 6), np.uint8)
    a[1:3, 1:3] = 1
    b[3:5, 2:6] = 1
    c = np.zeros((6, 6), np.uint8)
    c[2:4, 2:4] = 1
    rows = [encode_rle(a), encode_rle(b), encode_rle(c), "-1"]
    np.testing.assert_array_equal(decode_rows(rows, (6, 6)), a | b | c)


def test_non_binary_masks_encode_their_foreground() -> None:
    mask = np.array([[0, 255], [7, 0]], dtype=np.uint8)
    assert encode_rle(mask) == "1 2"  # column-major: 0, 7, 255, 0 → one run of 2 at pixel 1
    assert encode_rle(mask.astype(bool)) == "1 2"


# --- property tests ---------------------------------------------------------------------------

masks = arrays(
    np.uint8,
    st.tuples(st.integers(1, 12), st.integers(1, 12)),
    elements=st.integers(0, 1),
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(mask=masks, encoding=st.sampled_from(["relative", "absolute"]), order=st.sampled_from("FC"))
def test_round_trip_and_reference_encoder(mask: np.ndarray, encoding: str, order: str) -> None:
    code = encode_rle(mask, encoding=encoding, order=order)  # type: ignore[arg-type]
    assert code == reference_encode(mask, encoding == "relative", order == "F")
    back = decode_rle(code, mask.shape, encoding=encoding, order=order)  # type: ignore[arg-type]
    np.testing.assert_array_equal(back, mask)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), density=st.floats(0.0, 1.0))
def test_round_trip_full_size(seed: int, density: float) -> None:
    rng = np.random.default_rng(seed)
    mask = (rng.random((64, 48)) < density).astype(np.uint8)
    for encoding in ("relative", "absolute"):
        code = encode_rle(mask, encoding=encoding)  # type: ignore[arg-type]
        np.testing.assert_array_equal(decode_rle(code, (64, 48), encoding=encoding), mask)  # type: ignore[arg-type]


# --- the real SIIM sample ---------------------------------------------------------------------


def test_real_sample_csv(siim_dir: Path) -> None:
    table = read_rle_csv(siim_dir / SIIM_CSV)
    assert len(table) == 10
    assert all(len(rows) == 1 for rows in table.values())
    masks = {image_id: decode_rows(rows, (1024, 1024)) for image_id, rows in table.items()}
    positives = {i for i, m in masks.items() if m.any()}
    assert positives == POSITIVE_IDS
    # Every DICOM in the folder has a row, and the ids are the file names.
    assert {p.stem for p in siim_dir.glob("*.dcm")} == set(table)
    # Hand-check areas and exact pixels against the per-pixel reference on three images.
    for image_id in sorted(POSITIVE_IDS)[:3]:
        reference = np.array(reference_decode_relative(table[image_id][0], 1024, 1024))
        np.testing.assert_array_equal(masks[image_id], reference)
    # Areas: the sum of run lengths in each code (independent of our decoder's layout).
    for image_id in POSITIVE_IDS:
        lengths = [int(v) for v in table[image_id][0].split()[1::2]]
        assert int(masks[image_id].sum()) == sum(lengths) > 1000
    # Encoding the decoded masks reproduces the file exactly (SIIM's encoder makes maximal runs).
    for image_id, mask in masks.items():
        assert encode_rle(mask) == table[image_id][0].strip()


def test_real_mask_hand_located(siim_dir: Path) -> None:
    # The code starts "119331 47": pixel 119331 = column 116 * 1024 + row 547 in column-major
    # order, so the first run covers rows 547..593 of column 116 (the right apex region).
    table = read_rle_csv(siim_dir / SIIM_CSV)
    rows = table["1.2.276.0.7230010.3.1.4.8323329.1314.1517875167.222290"]
    assert rows[0].split()[:2] == ["119331", "47"]
    mask = decode_rows(rows, (1024, 1024))
    assert mask[547:594, 116].all() and not mask[546, 116] and not mask[594, 116]
    assert not mask[:, :116].any()  # nothing in earlier columns
    # Row-major decoding of the same code is exactly the transpose.
    np.testing.assert_array_equal(decode_rows(rows, (1024, 1024), order="C"), mask.T)


@pytest.mark.slow  # a speed ratio: machine-dependent; `dxkit bench seg` reports the real one
def test_vectorised_is_much_faster_than_per_pixel(siim_dir: Path) -> None:
    table = read_rle_csv(siim_dir / SIIM_CSV)
    code = table["1.2.276.0.7230010.3.1.4.8323329.1314.1517875167.222290"][0]
    start = time.perf_counter()
    reference = reference_decode_relative(code, 1024, 1024)
    reference_encode(np.asarray(reference, dtype=np.uint8), True, True)
    slow = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(10):
        encode_rle(decode_rle(code, (1024, 1024)))
    fast = (time.perf_counter() - start) / 10
    # The benchmark reports the real ratio; a loose bound here keeps the test stable on busy CPUs.
    assert slow / fast > 10, f"only {slow / fast:.1f}× faster"


# --- CSV variants -----------------------------------------------------------------------------

ROWS = ["img_a,-1", "img_b, 1 2 3 1", "img_b,10 2", "img_c,0 1"]


@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("header", [None, "ImageId,EncodedPixels", "ImageId, EncodedPixels"])
def test_csv_with_or_without_header_and_bom(tmp_path: Path, bom: bool, header: str | None) -> None:
    text = "\n".join(([header] if header else []) + ROWS) + "\n"
    path = tmp_path / "masks.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    table = read_rle_csv(path)
    assert table == {"img_a": ["-1"], "img_b": ["1 2 3 1", "10 2"], "img_c": ["0 1"]}
    mask = decode_rows(table["img_b"], (4, 4))
    assert mask.sum() == 5
    lines = [r.line for r in read_rle_rows(path)]
    assert lines == ([2, 3, 4, 5] if header else [1, 2, 3, 4])


def test_header_columns_found_by_name(tmp_path: Path) -> None:
    path = tmp_path / "masks.csv"
    path.write_text("EncodedPixels,ImageId\n1 2,img_a\n")
    assert read_rle_csv(path) == {"img_a": ["1 2"]}


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("1 2 3", "odd number"),
        ("1 -2", "negative value -2"),
        ("1 2.5", "'2.5', which is not an integer"),
        ("1 x", "'x', which is not an integer"),
    ],
)
def test_bad_rle_in_csv_names_row_and_image(tmp_path: Path, code: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"ImageId,EncodedPixels\nok_image,-1\nbad_image,{code}\n")
    with pytest.raises(DataSourceError, match=message) as info:
        read_rle_csv(path)
    assert f"{path} row 3 (ImageId bad_image)" in str(info.value)


def test_rle_past_image_end_is_an_error() -> None:
    with pytest.raises(DataSourceError, match=r"runs to pixel 17, past the end of the 4×4"):
        decode_rle("10 7", (4, 4), where="masks.csv row 9 (ImageId x)")
    with pytest.raises(DataSourceError, match=r"masks.csv row 9 \(ImageId x\).*runs to pixel 17"):
        decode_rle("10 7", (4, 4), where="masks.csv row 9 (ImageId x)")
    # Exactly reaching the last pixel is fine.
    assert decode_rle("10 6", (4, 4)).sum() == 6


def test_absolute_start_zero_is_an_error() -> None:
    with pytest.raises(DataSourceError, match="1-based"):
        decode_rle("0 3", (4, 4), encoding="absolute")


def test_bad_csv_structure(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,-1\nb\n")
    with pytest.raises(DataSourceError, match=r"row 2: expected 2 columns"):
        read_rle_rows(path)
    path.write_bytes(b"a,-1\n\xff\xfe,1 2\n")
    with pytest.raises(DataSourceError, match="not UTF-8"):
        read_rle_rows(path)
    with pytest.raises(MissingFileError, match="no such RLE CSV"):
        read_rle_rows(tmp_path / "absent.csv")


def test_parse_rle_shapes() -> None:
    assert parse_rle("-1").shape == (0, 2)
    np.testing.assert_array_equal(parse_rle(" 5 3  2 1 "), [[5, 3], [2, 1]])
