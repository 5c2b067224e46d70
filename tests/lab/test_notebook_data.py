"""ptqlib.lab.notebook_data: the model and images a notebook starts from."""
from __future__ import annotations

import pytest
import torch

from ptqlib.errors import PtqlibError
from ptqlib.lab import notebook_data


def test_load_notebook_data_without_data_uses_random_weights_and_noise_images():
    d = notebook_data.load_notebook_data("test_vit", None, calib_images=3, val_images=5, allow_random=True)
    assert not d.real_weights and "RANDOM" in d.source
    assert d.calib_images.shape == (3, 3, 160, 160) and d.calib_labels.shape == (3,)
    assert len(d.val) == 5
    x, y = d.val[0]
    assert x.shape == (3, 160, 160) and 0 <= int(y) < 1000


def test_load_notebook_data_rejects_a_missing_folder(tmp_path):
    with pytest.raises(PtqlibError, match="not a directory"):
        notebook_data.load_notebook_data("test_vit", tmp_path / "nope", allow_random=True)


def test_preload_keeps_order_and_labels():
    ds = torch.utils.data.TensorDataset(torch.arange(10.0).view(10, 1), torch.arange(10))
    out = notebook_data.preload(ds, batch_size=3, progress=False)
    assert torch.equal(out.tensors[0], ds.tensors[0]) and torch.equal(out.tensors[1], ds.tensors[1])

