"""Deconvnet and guided backpropagation against projections and receptive fields by hand."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from featvis import deconvnet
from featvis.seam import UnsupportedError

# The tiny CNN: conv(1->3), ReLU, conv(3->4), ReLU, 2x2 max pool, conv(4->5); 3x3 kernels,
# padding 1, on 1x16x16 inputs: an 8x8 map whose fields are 10x10, cut by the image edges.
_g = torch.Generator().manual_seed(0)
WEIGHTS = [(0.5 * torch.randn(out, into, 3, 3, generator=_g), 0.1 * torch.randn(out, generator=_g))
           for into, out in [(1, 3), (3, 4), (4, 5)]]
IMAGES = torch.randn(12, 1, 16, 16, generator=_g)


def convs():
    """The three convolutions with the fixed weights."""
    modules = [nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1) for w, _ in WEIGHTS]
    with torch.no_grad():
        for module, (weight, bias) in zip(modules, WEIGHTS):
            module.weight.copy_(weight)
            module.bias.copy_(bias)
    return modules


def sequential(between=nn.ReLU):
    """The tiny CNN as a Sequential, ``between`` after the first two convolutions."""
    c1, c2, c3 = convs()
    return nn.Sequential(c1, between(), c2, between(), nn.MaxPool2d(2), c3)


class Functional(nn.Module):
    """The tiny CNN calling ``relu`` (a function, or one module used twice)."""

    def __init__(self, relu):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = convs()
        self.relu = relu

    def forward(self, x):
        h = self.relu(self.conv2(self.relu(self.conv1(x))))
        return self.conv3(F.max_pool2d(h, 2))


def relu_in_place_result_unused(h):
    h.relu_()
    return h


VARIANTS = {
    "nn.ReLU": (lambda: sequential(), "5"),
    "nn.ReLU(inplace=True)": (lambda: sequential(lambda: nn.ReLU(inplace=True)), "5"),
    "one nn.ReLU used twice": (lambda: Functional(nn.ReLU()), "conv3"),
    "F.relu": (lambda: Functional(F.relu), "conv3"),
    "torch.relu": (lambda: Functional(torch.relu), "conv3"),
    "F.relu(inplace=True)": (lambda: Functional(lambda h: F.relu(h, inplace=True)), "conv3"),
    "torch.relu_": (lambda: Functional(torch.relu_), "conv3"),
    "Tensor.relu_, result unused": (lambda: Functional(relu_in_place_result_unused), "conv3"),
}


def by_hand(x, units, positions, rule):
    """Each row's unit maximum sent down with conv_transpose2d, max_unpool2d on the forward
    switches, and at each ReLU: rectified (deconvnet), rectified and masked by the forward
    pass (guided), or only masked (the plain gradient)."""
    (w1, b1), (w2, b2), (w3, b3) = WEIGHTS
    a1 = F.conv2d(x, w1, b1, padding=1)
    a2 = F.conv2d(a1.relu(), w2, b2, padding=1)
    pooled, switches = F.max_pool2d(a2.relu(), 2, return_indices=True)
    a3 = F.conv2d(pooled, w3, b3, padding=1)
    at = (torch.arange(len(x)), units, positions[:, 0], positions[:, 1])
    signal = torch.zeros_like(a3)
    signal[at] = a3[at]

    def through_relu(down, forward_input):
        if rule == "deconvnet":
            return down.relu()
        return (down.relu() if rule == "guided" else down) * (forward_input > 0)

    down = F.conv_transpose2d(signal, w3, padding=1)
    down = F.max_unpool2d(down, switches, 2, output_size=a2.shape[-2:])
    down = F.conv_transpose2d(through_relu(down, a2), w2, padding=1)
    return F.conv_transpose2d(through_relu(down, a1), w1, padding=1)


def expected(result, rule):
    """``by_hand`` for every (unit, example) of ``result``, shaped like its projections."""
    k = result.indices.shape[1]
    rows = by_hand(IMAGES[result.indices.flatten()], result.units.repeat_interleave(k),
                   result.positions.flatten(0, 1), rule)
    return rows.view(*result.indices.shape, *IMAGES.shape[1:])


def test_the_hand_written_reference_is_the_gradient():
    model = sequential()
    x = IMAGES[:4].clone().requires_grad_()
    units, positions = torch.tensor([0, 1, 2, 4]), torch.tensor([[0, 0], [3, 7], [7, 2], [4, 4]])
    out = model(x)
    at = (torch.arange(4), units, positions[:, 0], positions[:, 1])
    signal = torch.zeros_like(out)
    signal[at] = out.detach()[at]
    gradient = torch.autograd.grad(out, x, signal)[0]
    torch.testing.assert_close(by_hand(IMAGES[:4], units, positions, "gradient"), gradient)


@pytest.mark.parametrize("rule", ["deconvnet", "guided"])
def test_projections_follow_the_rule_by_hand(rule):
    result = deconvnet(sequential(), IMAGES, "5", rule=rule, batch_size=7)
    assert result.units.tolist() == [0, 1, 2, 3, 4]
    assert result.projections.shape == (5, 9, 1, 16, 16)
    assert result.indices.shape == (5, 9) and result.positions.shape == (5, 9, 2)
    torch.testing.assert_close(result.projections, expected(result, rule))
    assert not torch.allclose(result.projections, expected(result, "gradient"))
    some = deconvnet(sequential(), IMAGES, "5", units=[3, 1], k=4, rule=rule)
    assert some.units.tolist() == [3, 1]
    torch.testing.assert_close(some.projections, result.projections[[3, 1], :4])


def state(model):
    """What a method must leave as it was: modules, hooks, modes, parameters and buffers."""
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
             for m in model.modules()]
    return ([(name, id(m), type(m), m.training) for name, m in model.named_modules()], hooks,
            {name: tensor.clone() for name, tensor in model.state_dict().items()})


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_way_of_writing_a_relu_gives_the_same_projections(variant):
    build, layer = VARIANTS[variant]
    model = build().train()
    before = state(model)
    for rule in ("deconvnet", "guided"):
        result = deconvnet(model, IMAGES, layer, rule=rule)
        torch.testing.assert_close(result.projections, expected(result, rule))
        modules, hooks, tensors = state(model)
        assert (modules, hooks) == before[:2]
        assert tensors.keys() == before[2].keys()
        assert all(torch.equal(tensors[name], before[2][name]) for name in tensors)
        assert all(p.grad is None for p in model.parameters())


class _RuleReLU(torch.autograd.Function):
    """A ReLU whose backward is the rule's, written out for the reference below."""

    @staticmethod
    def forward(ctx, x, rule):
        ctx.rule = rule
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        down = grad.clamp(min=0)
        return (down * (x > 0) if ctx.rule == "guided" else down), None


class RuleReLU(nn.Module):
    def __init__(self, rule):
        super().__init__()
        self.rule = rule

    def forward(self, x):
        return _RuleReLU.apply(x, self.rule)


def autograd_reference(result, second, rule):
    """The gradient, by autograd, of the tiny CNN with its first ReLU replaced by the rule's
    and ``second`` (a GELU ...) kept, for each (unit, example) of ``result``."""
    c1, c2, c3 = convs()
    model = nn.Sequential(c1, RuleReLU(rule), c2, second, nn.MaxPool2d(2), c3)
    k = result.indices.shape[1]
    x = IMAGES[result.indices.flatten()].clone().requires_grad_()
    units, positions = result.units.repeat_interleave(k), result.positions.flatten(0, 1)
    out = model(x)
    at = (torch.arange(len(x)), units, positions[:, 0], positions[:, 1])
    signal = torch.zeros_like(out)
    signal[at] = out.detach()[at]
    return torch.autograd.grad(out, x, signal)[0].view(*result.indices.shape, *IMAGES.shape[1:])


@pytest.mark.parametrize("rule", ["deconvnet", "guided"])
@pytest.mark.parametrize("second, name", [(nn.GELU(), "gelu"), (nn.SiLU(), "silu"),
                                          (nn.Sigmoid(), "sigmoid"), (nn.Hardswish(), "hardswish"),
                                          (nn.ReLU6(), "hardtanh")])
def test_other_nonlinearities_pass_by_their_own_gradient(rule, second, name):
    """As captum's GuidedBackprop: the rule at every ReLU, any other non-linearity by its own
    gradient, named in the result; receptive fields are those of the ReLU network."""
    c1, c2, c3 = convs()
    model = nn.Sequential(c1, nn.ReLU(), c2, second, nn.MaxPool2d(2), c3)
    result = deconvnet(model, IMAGES, "5", rule=rule, k=3)
    torch.testing.assert_close(result.projections, autograd_reference(result, second, rule))
    assert result.passed == (name,)
    relu_boxes = deconvnet(sequential(), IMAGES, "5", k=3)
    assert relu_boxes.passed == ()
    checked = 0
    for u, j in itertools.product(*map(range, result.positions.shape[:2])):
        match = (relu_boxes.positions == result.positions[u, j]).all(-1).nonzero()
        if len(match):                             # fields depend on positions only
            assert torch.equal(relu_boxes.boxes[tuple(match[0])], result.boxes[u, j])
            checked += 1
    assert checked > 0
    after = nn.Sequential(*sequential(), nn.Sigmoid())      # after the layer: never reached
    assert deconvnet(after, IMAGES, "5", k=3).passed == ()


def test_a_layer_without_a_map_and_an_unknown_rule_are_refused():
    c1 = convs()[0]
    flat = nn.Sequential(c1, nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    with pytest.raises(UnsupportedError, match=r"4-D \(N, C, H, W\)"):
        deconvnet(flat, IMAGES, "3")
    with pytest.raises(ValueError, match="rule must be one of"):
        deconvnet(sequential(), IMAGES, "5", rule="gradient")


def support_boxes(units, positions):
    """Bounding boxes of the input each (unit, position) depends on in the tiny CNN with its
    ReLUs removed and its max pool replaced by an average pool (float64: nothing underflows)."""
    (w1, _), (w2, _), (w3, _) = [(w.double(), b) for w, b in WEIGHTS]
    x = torch.zeros(len(units), 1, 16, 16, dtype=torch.float64, requires_grad=True)
    out = F.conv2d(F.avg_pool2d(F.conv2d(F.conv2d(x, w1, padding=1), w2, padding=1), 2), w3,
                   padding=1)
    signal = torch.zeros_like(out)
    signal[torch.arange(len(units)), units, positions[:, 0], positions[:, 1]] = 1
    seen = torch.autograd.grad(out, x, signal)[0][:, 0] != 0
    boxes = []
    for mask in seen:
        rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
        boxes.append([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1])
    return torch.tensor(boxes)


def test_boxes_are_the_linearized_gradient_support_and_crops_the_input_under_the_field():
    result = deconvnet(sequential(), IMAGES, "5", rule="guided")
    k = result.indices.shape[1]
    positions = result.positions.flatten(0, 1)
    boxes = support_boxes(result.units.repeat_interleave(k), positions)
    assert torch.equal(result.boxes.flatten(0, 1), boxes)
    sizes = boxes[:, 2:] - boxes[:, :2]
    assert (sizes == 10).all(1).any() and (sizes < 10).any()        # both kinds are tested
    # A position (r, c) of the map sees input rows 2r-4 .. 2r+5 and columns 2c-4 .. 2c+5.
    assert result.crops.shape == (5, k, 1, 10, 10)
    padded = F.pad(IMAGES[result.indices.flatten()], (4, 4, 4, 4))
    crops = torch.stack([image[:, 2 * r:2 * r + 10, 2 * c:2 * c + 10]
                         for image, (r, c) in zip(padded, positions.tolist())])
    assert torch.equal(result.crops.flatten(0, 1), crops)
    for crop, image, (top, left, bottom, right), (r, c) in zip(
            crops, IMAGES[result.indices.flatten()], boxes.tolist(), positions.tolist()):
        box = (slice(None), slice(top - 2 * r + 4, bottom - 2 * r + 4),
               slice(left - 2 * c + 4, right - 2 * c + 4))
        assert torch.equal(crop[box], image[:, top:bottom, left:right])
        outside = crop.clone()
        outside[box] = 0
        assert not outside.any()


def test_already_mined_examples_give_the_same_projections():
    from featvis import top_examples

    found = top_examples(sequential(), IMAGES, "5", k=3, units=[4, 0])
    mined = deconvnet(sequential(), IMAGES, "5", k=3, units=[4, 0])
    reused = deconvnet(sequential(), IMAGES, "5", examples=found)
    assert torch.equal(mined.indices, reused.indices)
    assert torch.equal(mined.projections, reused.projections)


@pytest.mark.parametrize("padding,stride,dilation", [(0, 1, 1), (1, 2, 1), (2, 1, 2)])
def test_the_target_conv_placed_directly_equals_its_autograd_transpose(padding, stride,
                                                                       dilation):
    """A plain Conv2d target is sent down by placing the unit's filter on its window; the
    same layer behind a (no-op) hook goes through the full forward and autograd transpose:
    both give the same projections, whatever the padding, stride and dilation."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(),
                          nn.Conv2d(3, 4, 3, padding=padding, stride=stride,
                                    dilation=dilation)).eval()
    images = torch.rand(40, 1, 12, 12, generator=torch.Generator().manual_seed(4))
    direct = deconvnet(model, images, "2", k=3)
    handle = model[2].register_forward_hook(lambda module, args, output: None)
    try:
        full = deconvnet(model, images, "2", k=3)
    finally:
        handle.remove()
    assert torch.equal(direct.indices, full.indices)
    torch.testing.assert_close(direct.projections, full.projections, atol=1e-5, rtol=1e-4)


def test_the_gallery_names_the_rule_and_what_passed_by_its_own_gradient(tmp_path, capsys):
    """Deconvnet alone (no dataset examples shown: it mines its own), guided, through a GELU;
    and --deconvnet-rule on the command line."""
    import json

    from featvis import VisualizeSettings, visualize

    from helpers import run_cli

    c1, c2, c3 = convs()
    model = nn.Sequential(c1, nn.GELU(), c2, nn.ReLU(), nn.MaxPool2d(2), c3)
    settings = VisualizeSettings(layers=["5"], methods=["deconvnet"], units=2, k=2,
                                 deconvnet_rule="guided", figures=False)
    visualize(model, IMAGES, tmp_path / "run", settings, progress=False, gallery=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    (layer,) = summary["layers"]
    assert layer["methods"] == ["deconvnet"] and summary["settings"]["deconvnet_rule"] == "guided"
    assert layer["sections"][0]["caption"].endswith(
        "(guided rule at each ReLU; passed by their own gradient: gelu)")
    code, _, err = run_cli(capsys, "visualize", "--model", "cnn", "--deconvnet-rule", "lrp",
                           "--out", tmp_path / "no")
    assert code == 2 and "--deconvnet-rule: expected one of deconvnet, guided, got 'lrp'" in err
