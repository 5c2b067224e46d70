"""Tests for ptqlib.io.models: the paper table, checkpoint lookup and loading."""
from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch

from ptqlib.io.data import DataPaths
from ptqlib.errors import PtqlibError
from ptqlib.io.models import PAPER_MODELS, find_checkpoint, load_model, paper_model

TINY = "vit_tiny_patch16_224"


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    """The state dict of a randomly initialised ViT-Ti (seed 0)."""
    return load_model(TINY, random_init=True).state_dict()


def test_paper_table_is_complete_and_consistent() -> None:
    assert len(PAPER_MODELS) == 11 and len({m.key for m in PAPER_MODELS}) == 11
    pretrained = set(timm.list_pretrained())
    for m in PAPER_MODELS:
        assert m.timm_name in pretrained
        assert m.fp_top1 >= m.ptq4vit_w8a8 >= m.ptq4vit_w6a6
        assert m.ptq4vit_w8a8 >= m.base_w8a8 >= m.base_w6a6 and m.ptq4vit_w6a6 >= m.base_w6a6


def test_paper_model_lookup() -> None:
    vit_s = paper_model("ViT-S/224")
    assert vit_s is not None and vit_s.timm_name == "vit_small_patch16_224.augreg_in21k_ft_in1k"
    assert paper_model("vit-s/224") is vit_s
    assert paper_model("vit_small_patch16_224") is vit_s
    assert paper_model("vit_small_patch16_224.augreg_in21k_ft_in1k") is vit_s
    assert paper_model("deit_base_patch16_384").key == "DeiT-B/384"
    assert paper_model(TINY) is None


def test_find_checkpoint(tmp_path: Path) -> None:
    assert find_checkpoint(TINY, None) is None
    assert find_checkpoint(TINY, tmp_path) is None
    weights = tmp_path / "weights"
    weights.mkdir()
    tagged = weights / f"{TINY}.augreg_in21k_ft_in1k.safetensors"
    tagged.write_bytes(b"")
    (weights / "notes.txt").write_text("not a checkpoint")
    (weights / "vit_tiny_patch16_2240.pth").write_bytes(b"")
    assert find_checkpoint(TINY, tmp_path) == tagged
    assert find_checkpoint(f"{TINY}.augreg_in21k_ft_in1k", tmp_path) == tagged
    assert find_checkpoint(f"{TINY}.augreg_in21k", tmp_path) is None  # another tag: other weights
    plain = weights / f"{TINY}.pt"
    plain.write_bytes(b"")
    assert find_checkpoint(TINY, tmp_path) == plain
    assert find_checkpoint(f"{TINY}.augreg_in21k", tmp_path) == plain
    assert find_checkpoint("deit_small_patch16_224", tmp_path) is None


def test_random_init_is_seeded_and_in_eval_mode(tiny_state: dict[str, torch.Tensor]) -> None:
    before = torch.random.get_rng_state()
    model = load_model(TINY, random_init=True)
    assert torch.equal(before, torch.random.get_rng_state())  # global RNG untouched
    assert not model.training
    assert all(torch.equal(v, tiny_state[k]) for k, v in model.state_dict().items())
    other = load_model(TINY, random_init=True, seed=1).state_dict()
    assert not torch.equal(other["head.weight"], tiny_state["head.weight"])


def test_load_checkpoint_formats(tmp_path: Path, tiny_state: dict[str, torch.Tensor]) -> None:
    safetensors.torch.save_file(tiny_state, tmp_path / "w.safetensors")
    torch.save({"state_dict": tiny_state, "epoch": 3}, tmp_path / "w.pth")
    torch.save({"model": {f"module.{k}": v for k, v in tiny_state.items()}}, tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pth", "w.pt"):
        model = load_model(TINY, tmp_path / name)
        assert not model.training
        assert all(torch.equal(v, tiny_state[k]) for k, v in model.state_dict().items()), name


def test_load_checkpoint_mismatch_names_keys(tmp_path: Path, tiny_state: dict[str, torch.Tensor]) -> None:
    state = dict(tiny_state)
    del state["norm.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["head.weight"] = torch.zeros(10, 192)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(PtqlibError) as error:
        load_model(TINY, tmp_path / "bad.pth")
    message = str(error.value)
    assert "norm.bias" in message and "extra.weight" in message and "head.weight" in message
    assert "\n" not in message


def test_load_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PtqlibError, match="vit_tiny_patch16_224"):
        load_model("vit_tiny_patch16_244", random_init=True)
    with pytest.raises(PtqlibError, match="no pretrained tag 'nonsense'"):
        load_model(f"{TINY}.nonsense", random_init=True)
    with pytest.raises(PtqlibError, match="does not exist"):
        load_model(TINY, tmp_path / "missing.safetensors")
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(PtqlibError, match="cannot read checkpoint"):
        load_model(TINY, tmp_path / "corrupt.safetensors")

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("no network")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(PtqlibError, match="--checkpoint"):
        load_model(TINY)


def test_tagged_name_loads_shared_checkpoint(shared_data: DataPaths) -> None:
    checkpoint = find_checkpoint(f"{TINY}.augreg_in21k_ft_in1k", shared_data.root)
    assert checkpoint is not None and checkpoint == find_checkpoint(TINY, shared_data.root)
    model = load_model(f"{TINY}.augreg_in21k_ft_in1k", checkpoint)
    assert sum(p.numel() for p in model.parameters()) == 5_717_416
