"""Saved work still loads: `model.keras` files written by the code before evae_tf became
subpackages (commit a6a43f5; tests/fixtures/make_legacy.py wrote them) load with today's
code and give the same reconstructions and the same seeded prior and posterior draws."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from evae_tf import models

FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "legacy-expected.json").read_text())


@pytest.fixture(scope="module")
def images():
    return np.load(FIXTURES / "legacy-input.npy")


@pytest.mark.parametrize("kind", ["evae", "vae"])
def test_a_model_saved_before_the_subpackages_loads_and_computes_the_same(kind, images):
    model = keras.models.load_model(FIXTURES / f"legacy-{kind}.keras", compile=False)
    expected = EXPECTED[kind]
    assert models.kind_of(model) == kind
    assert (model.image_shape, model.latent_dim) == ((32, 32, 1), 4)
    config = {k: v for k, v in model.get_config().items() if k not in ("encoder", "decoder")}
    assert config == expected["config"]
    np.testing.assert_allclose(model.reconstruct(images).numpy().ravel()[:64], expected["reconstruct"],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.sample_prior(3, seed=5).numpy(), expected["sample_prior"],
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(model.sample_posterior(model.encode(images), seed=7).numpy(),
                               expected["sample_posterior"], rtol=1e-5, atol=1e-6)


def test_the_trained_legacy_evae_kept_its_learned_prior_support():
    """Its running mean of B moved from its initial ones during the fit it was saved after."""
    model = keras.models.load_model(FIXTURES / "legacy-evae.keras", compile=False)
    support = model.prior_support().numpy()
    assert support.shape == (4,)
    assert np.all(support > 0) and not np.allclose(support, 1.0)
