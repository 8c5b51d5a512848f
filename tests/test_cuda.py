"""The CUDA path: the same results on the GPU as on the CPU (skipped without a GPU)."""

import warnings

import pytest
import torch

from featvis import linear_combination, maximize, ranked_filters, sample_unit, top_examples
from featvis.models.evaluation import log_partition_ais

from helpers import random_dbn, stopped_checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_methods_on_cuda_match_cpu():
    cpu = random_dbn([20, 12, 8], seed=3, scale=0.5)
    gpu = random_dbn([20, 12, 8], seed=3, scale=0.5).cuda()
    images = torch.rand(300, 20, generator=torch.Generator().manual_seed(0))
    a, b = top_examples(cpu, images, 2, k=5), top_examples(gpu, images, 2, k=5)
    assert b.values.is_cuda and torch.equal(a.indices, b.indices.cpu())
    a, b = maximize(cpu, 2, steps=50, restarts=2), maximize(gpu, 2, steps=50, restarts=2)
    torch.testing.assert_close(a.images, b.images.cpu(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ranked_filters(cpu, 2, top=3).weights,
                               ranked_filters(gpu, 2, top=3).weights.cpu())
    torch.testing.assert_close(linear_combination(cpu, 2, top=3).images,
                               linear_combination(gpu, 2, top=3).images.cpu())
    samples = sample_unit(gpu, 2, n_samples=20000, seed=0)
    assert samples.mean.is_cuda
    torch.testing.assert_close(samples.mean.cpu(), sample_unit(cpu, 2, n_samples=20000).mean,
                               atol=0.02, rtol=0)
    assert log_partition_ais(gpu.rbms[1], n_runs=10, betas=torch.linspace(0, 1, 500).tolist()
                             ).log_z == pytest.approx(
        log_partition_ais(cpu.rbms[1], n_runs=10, betas=torch.linspace(0, 1, 500).tolist()
                          ).log_z, abs=0.5)


def test_training_on_cuda_lowers_the_error_and_resumes(tmp_path):
    from featvis import DBN

    images = torch.rand(500, 20, generator=torch.Generator().manual_seed(1)).cuda()
    dbn = DBN([20, 10, 6]).cuda().fit(images, epochs=3, progress=False)
    for rbm in dbn.rbms:
        errors = [e["error_per_case"] for e in rbm.history]
        assert errors[-1] < errors[0] and rbm.weight.is_cuda

    path = tmp_path / "m.safetensors"
    stopped_checkpoint(path, images, [20, 10, 6], device="cuda", epochs=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)   # the replay ends on the saved weights
        resumed = DBN.load(path, device="cuda").fit(images, epochs=3, progress=False,
                                                    resume=True)
    for a, b in zip(dbn.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
