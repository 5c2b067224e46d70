"""Fixtures of the lab tests: a random ``test_vit`` (timm's 6-block test model, 160 px) stands in
for a real ViT, so capture, sweeps and accuracy tables run on it in a second."""
from __future__ import annotations

import pytest

from ptqlib.io.models import load_model
from ptqlib.lab import activations

from helpers import random_images


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Every lab test runs on one torch thread (see tests/conftest.py)."""


@pytest.fixture(scope="module")
def model():
    return load_model("test_vit", random_init=True, seed=0)


@pytest.fixture(scope="module")
def images():
    return random_images(2, size=160, seed=0)


@pytest.fixture(scope="module")
def acts(model, images):
    return activations.capture_activations(model, images, max_tokens=64)


@pytest.fixture(scope="module")
def acts2(model, images):
    """Two blocks, for the studies that fit many quantizers per block."""
    return activations.capture_activations(model, images, kinds=["post-softmax", "post-GELU"], blocks=[0, 1], max_tokens=32)

