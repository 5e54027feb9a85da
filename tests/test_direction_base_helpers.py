"""Known answers of the finders' shared row helpers (`unit_rows`, `canonical_sign`)."""

from __future__ import annotations

import numpy as np
import pytest

from stylegan_disentangle.directions._base import canonical_sign, unit_rows


def test_unit_rows_normalises_each_row_in_float64():
    rows = np.array([[3.0, 4.0], [0.0, -2.0]], dtype=np.float32)
    out = unit_rows(rows)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[0.6, 0.8], [0.0, -1.0]])


@pytest.mark.parametrize("tiny", [0.0, 1e-13])
def test_unit_rows_names_a_row_too_small_to_normalise(tiny):
    """A row at or below 1e-12 of the largest norm (or of 1) is no direction: refused by name, not divided into
    NaN or a rounding-noise vector."""
    rows = np.array([[1.0, 0.0], [tiny, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"atom\(s\) \['b'\] are zero"):
        unit_rows(rows, what="atom", names=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"\[1\] are zero"):
        unit_rows(rows)


def test_unit_rows_threshold_is_relative_to_the_largest_row():
    """1e-9 next to a row of norm 1e4 is below 1e-12 of it; next to a unit row it is a direction."""
    with pytest.raises(ValueError, match=r"\[1\]"):
        unit_rows(np.array([[1e4, 0.0], [1e-9, 0.0]]))
    np.testing.assert_array_equal(unit_rows(np.array([[1.0, 0.0], [0.0, 1e-9]])), [[1.0, 0.0], [0.0, 1.0]])


def test_canonical_sign_makes_the_largest_entry_positive_and_leaves_zero_rows():
    rows = np.array([[0.2, -0.9, 0.1], [0.5, 0.1, -0.3], [0.0, 0.0, 0.0]])
    out = canonical_sign(rows)
    np.testing.assert_array_equal(out, [[-0.2, 0.9, -0.1], [0.5, 0.1, -0.3], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(rows[0], [0.2, -0.9, 0.1])  # the input is not changed in place
    np.testing.assert_array_equal(canonical_sign(-rows), out)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_unit_rows_names_a_row_that_is_not_finite(bad):
    """A NaN or inf row has no direction to normalise to (divided through, it would be NaN)."""
    with pytest.raises(ValueError, match=r"direction\(s\) \['b'\] are zero \(or not finite\)"):
        unit_rows(np.array([[1.0, 0.0], [bad, 1.0]]), names=["a", "b"])
