"""Unit indices: every integer kind is an index, nothing else is."""

import re

import numpy as np
import pytest
import torch

from featvis.units import resolve_units


@pytest.mark.parametrize("units,expected", [
    (3, [3]), (np.int64(3), [3]), (np.array([3, 1]), [3, 1]), ([1, np.int64(3)], [1, 3]),
    (np.array(2, dtype=np.uint8), [2]), (torch.tensor([3, 1], dtype=torch.int32), [3, 1]),
    (torch.tensor(2), [2]), (range(2), [0, 1]), (None, [0, 1, 2, 3, 4]),
])
def test_unit_indices_may_be_python_numpy_or_torch_integers(units, expected):
    index = resolve_units(units, 5)
    assert index.dtype == torch.long and index.tolist() == expected


@pytest.mark.parametrize("units,described", [
    (3.0, None), (np.float32(3), None), (True, None), (np.bool_(True), None), ([1, 2.0], None),
    ([0, True], None), ("3", None),
    (torch.tensor([True]), r"Tensor of torch.bool with shape \(1,\)"),
    (torch.tensor([1.0]), r"Tensor of torch.float32 with shape \(1,\)"),
    (torch.zeros(30, 30, dtype=torch.long), r"Tensor of torch.int64 with shape \(30, 30\)"),
    (np.array([[1, 2]]), r"ndarray of int64 with shape \(1, 2\)"),
    (np.array([1.0]), r"ndarray of float64 with shape \(1,\)"),
])
def test_unit_indices_that_are_not_integers_are_refused(units, described):
    """Refused in one line: arrays by dtype and shape, anything else by its repr."""
    described = described or re.escape(repr(units))
    with pytest.raises(ValueError, match=r"^units must be an integer or a 1-D list of integer "
                                         rf"indices, got {described}$"):
        resolve_units(units, 5)


def test_unit_indices_out_of_range_or_empty_are_refused():
    with pytest.raises(ValueError, match=r"^unit index 5 out of range: the layer has 5 units "
                                         r"\(0\.\.4\)$"):
        resolve_units([0, 5], 5)
    with pytest.raises(ValueError, match="^units is empty$"):
        resolve_units([], 5)
