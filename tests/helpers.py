"""Helpers shared by the tests: small random models and an in-process CLI runner."""

import torch

from featvis import DBN, RBM
from featvis.cli import main


def random_rbm(n_visible, n_hidden, seed=0, scale=1.0):
    """An untrained RBM with N(0, scale^2) weights and N(0, 1) biases."""
    g = torch.Generator().manual_seed(seed)
    rbm = RBM(n_visible, n_hidden)
    with torch.no_grad():
        rbm.weight.copy_(scale * torch.randn(n_hidden, n_visible, generator=g))
        rbm.visible_bias.copy_(torch.randn(n_visible, generator=g))
        rbm.hidden_bias.copy_(torch.randn(n_hidden, generator=g))
    return rbm


def random_dbn(sizes, seed=0, scale=1.0, input_norm=2.0):
    """An untrained DBN made of :func:`random_rbm` layers."""
    dbn = DBN(sizes)
    for d, rbm in enumerate(dbn.rbms):
        rbm.load_state_dict(random_rbm(rbm.n_visible, rbm.n_hidden, seed + 100 * d,
                                       scale).state_dict())
    dbn.input_norm = input_norm
    return dbn


def run_cli(capsys, *argv):
    """``(exit code, stdout, stderr)`` of ``featvis *argv`` run in this process."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:       # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err
