"""PTQConfig: one central check of every field's type, and help for every field."""
from __future__ import annotations

import dataclasses

import pytest

from ptqlib import PTQConfig, PtqlibError, get_method
from ptqlib.engine.config import choices, config_fields


@pytest.mark.parametrize("field, bad", [
    ("grad_norm", "imgae"), ("order", "sequental"), ("weight_granularity", "head"),
    ("matmul_granularity", "channel"), ("search", "fast"), ("metric", "kl"), ("grad_loss", "kl"),
    ("row_select", "top"),
])
def test_every_literal_field_rejects_a_typo_naming_the_choices(field: str, bad: str) -> None:
    with pytest.raises(ValueError, match=f"{field} must be one of .*; got '{bad}'"):
        PTQConfig(**{field: bad})


@pytest.mark.parametrize("field, bad", [("w_bits", 8.0), ("w_bits", True), ("n", "100"), ("twin_gelu", 1),
                                        ("alpha", "0.1"), ("max_tokens", 12.5), ("seed", None)])
def test_plain_fields_reject_the_wrong_type(field: str, bad: object) -> None:
    with pytest.raises(ValueError, match=field):
        PTQConfig(**{field: bad})


def test_ranges_and_none() -> None:
    assert PTQConfig(max_tokens=None).max_tokens is None
    assert PTQConfig(alpha=1).alpha == 1  # an int is a fine float
    with pytest.raises(ValueError, match="alpha <= beta"):
        PTQConfig(alpha=1.5, beta=1.2)
    with pytest.raises(PtqlibError, match="invalid settings for method 'ptq4vit': grad_norm must be one of"):
        get_method("ptq4vit", grad_norm="per-image")


def test_every_field_has_help_and_literals_their_choices() -> None:
    found = {f.name: hint for f, hint in config_fields()}
    assert list(found) == [f.name for f in dataclasses.fields(PTQConfig)]
    assert all(f.metadata.get("help") for f, _ in config_fields())
    assert choices(found["order"]) == ("parallel", "sequential")
    assert choices(found["metric"]) == ("mse", "l1", "hessian", "cosine", "pearson", "cosine_token")
    assert choices(found["w_bits"]) is None and choices(found["max_tokens"]) is None


def test_tie_tolerance_and_score_dtype_are_checked() -> None:
    from ptqlib import PTQConfig

    with pytest.raises(ValueError, match="tie_tolerance"):
        PTQConfig(tie_tolerance=1.5)
    with pytest.raises(ValueError, match="score_dtype"):
        PTQConfig(score_dtype="float16")
    assert PTQConfig(metric="cosine_token", tie_tolerance=1e-6, score_dtype="float64").metric == "cosine_token"
