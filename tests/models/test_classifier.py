"""What the reference classifiers share (featvis.models.classifier): their shipped weights
classify the embedded test set as their checkpoints record, and say how they were trained."""

from importlib import resources

import pytest
import torch

import featvis
from featvis.models import ReferenceCNN, ReferenceViT


@pytest.mark.parametrize("load, cls, weights, accuracy", [
    (featvis.reference_cnn, ReferenceCNN, "reference_cnn.safetensors", 0.99),
    (featvis.reference_vit, ReferenceViT, "reference_vit.safetensors", 0.975),
])
def test_the_shipped_weights_classify_the_embedded_test_set_as_recorded(load, cls, weights,
                                                                        accuracy):
    shipped = load()
    file = resources.files("featvis") / "_weights" / weights
    assert file.is_file() and len(file.read_bytes()) < 2**20            # under 1 MB
    assert isinstance(shipped, cls) and not shipped.training
    images, labels = featvis.load_mnist("test")
    with torch.no_grad():
        predicted = shipped(images.reshape(-1, 1, 28, 28)).argmax(1)
    recorded = shipped.test_accuracy["embedded_test"]
    assert recorded["total"] == len(labels) == 2000
    assert int((predicted == labels).sum()) == recorded["correct"]
    assert shipped.test_accuracy["mnist_test"]["total"] == 10000
    assert shipped.test_accuracy["mnist_test"]["accuracy"] >= accuracy
    assert shipped.data_info["n_train"] == 60000 and shipped.recipe["optimizer"] == "Adam"
