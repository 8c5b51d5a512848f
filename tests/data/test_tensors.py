"""Checks of input tensors: one NaN or infinite value anywhere in a batch is refused, by the
one min/max pass that also checks the [0, 1] range of images."""

import pytest
import torch

from featvis.data.tensors import check_images, check_inputs
from featvis.errors import DataError


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", [0, 4321, -1])
def test_one_non_finite_value_anywhere_is_refused(bad, where):
    x = torch.rand(10, 1, 28, 28)
    x.view(-1)[where] = bad
    with pytest.raises(DataError, match="^images: contains NaN or infinite values$"):
        check_inputs(x, (1, 28, 28))
    with pytest.raises(DataError, match="^images: contains NaN or infinite values$"):
        check_images(x.view(10, -1))


def test_finite_inputs_pass_and_images_outside_the_unit_range_are_named():
    x = torch.rand(10, 784)
    x[3, 7], x[8, 0] = -2.0, 3.0
    assert check_inputs(x) is x
    with pytest.raises(DataError, match=r"^images: values must lie in \[0, 1\] \(found -2\.\.3\)$"):
        check_images(x)
