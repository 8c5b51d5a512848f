"""The one-channel convolutions' input gradient against PyTorch's own, and what the mode
leaves alone."""

import pytest
import torch
import torch.nn.functional as F

from featvis.methods.input_gradients import OneChannelConvolutions


@pytest.mark.parametrize("stride, padding, dilation, bias", [
    (1, 0, 1, True), (2, 1, 1, False), ((1, 2), (2, 0), 1, True), (1, 2, 2, True),
    (3, 0, (2, 1), False)])
def test_the_input_gradient_is_pytorchs(stride, padding, dilation, bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 13, 12, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 1, 3, 4, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64) if bias else None
    expected = F.conv2d(x, weight, b, stride, padding, dilation)
    signal = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    (want,) = torch.autograd.grad(expected, x, signal)
    with OneChannelConvolutions():
        out = F.conv2d(x, weight, b, stride, padding, dilation)
    assert type(out.grad_fn).__name__ == "_OneChannelConvBackward"
    assert torch.equal(out, expected)
    (got,) = torch.autograd.grad(out, x, signal)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_a_module_s_parameters_get_no_gradient_and_keep_their_values():
    conv = torch.nn.Conv2d(1, 2, 3)
    before = {k: v.clone() for k, v in conv.state_dict().items()}
    x = torch.rand(2, 1, 6, 6, requires_grad=True)
    with OneChannelConvolutions():
        conv(x).sum().backward()
    assert conv.weight.grad is None and conv.bias.grad is None and x.grad is not None
    assert all(torch.equal(before[k], v) for k, v in conv.state_dict().items())


def test_autocast_s_lower_precision_comes_back_in_the_input_s_dtype():
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    weight = torch.rand(3, 1, 3, 3)
    with OneChannelConvolutions(), torch.autocast("cpu", torch.bfloat16):
        out = F.conv2d(x, weight)
    (got,) = torch.autograd.grad(out.float().sum(), x)
    (want,) = torch.autograd.grad(F.conv2d(x, weight).sum(), x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=0.05, rtol=0.02)


@pytest.mark.parametrize("case", ["channels", "groups", "same", "no grad", "computed kernel"])
def test_other_convolutions_are_pytorchs_own(case):
    x = torch.rand(2, 2 if case in ("channels", "groups") else 1, 6, 6,
                   requires_grad=case != "no grad")
    weight = torch.rand(2, 1 if case == "groups" else x.shape[1], 3, 3)
    if case == "computed kernel":               # its gradient reaches x through the weight
        weight = weight * x.mean()
    options = {"groups": 2} if case == "groups" else {"padding": "same"} if case == "same" \
        else {}
    with OneChannelConvolutions():
        out = F.conv2d(x, weight, **options)
    assert type(out.grad_fn).__name__ != "_OneChannelConvBackward"
    assert torch.equal(out, F.conv2d(x, weight, **options))
