"""Fixtures shared by the accuracy-study tests: a tiny random Llama (2 layers x 2 KV heads) and its gates."""

import numpy as np
import pytest

from h2eal_core.identify import write_gates


@pytest.fixture(scope="module")
def model(tiny_model_factory):
    """The shared tiny random Llama without an end-of-sequence token (answers run their full length)."""
    return tiny_model_factory(eos_token_id=None)


@pytest.fixture()
def gates_dir(tmp_path):
    """Gates of the tiny model: one retrieval head per layer (layer 0: KV head 0; layer 1: KV head 1)."""
    write_gates(np.array([[0.9, 0.1], [0.2, 0.8]]), tmp_path / "gates")
    return str(tmp_path / "gates")
