from __future__ import annotations

import pytest
import yaml

from flashsim import config
from flashsim.errors import ConfigError
from flashsim.io import contract


def test_params_validate_and_defaults(repo_root):
    params = config.load_params(repo_root / "params.yaml")
    assert params["scale"] in config.SCALES
    assert params["prepare"]["split"]["train"] > 0
    assert set(params["inputs"]) == set(params["detsim"]["samples"])


def test_bad_params_name_the_key(repo_root, tmp_path):
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["scale"] = "huge"
    with pytest.raises(ConfigError, match="scale"):
        config.validate(params, repo_root / "schemas" / "params.schema.yaml")


def test_at_scale_and_flatten():
    assert config.resolve_scale({"a": {"demo": 1, "full": 2}, "b": [{"demo": 3, "full": 4}]}, "full") == {
        "a": 2, "b": [4]}
    assert config.flatten({"a": {"b": 1, "c": {"d": 2}}}) == {"a.b": 1, "a.c.d": 2}


def test_contract_doc_in_sync(repo_root):
    assert (repo_root / "docs" / "data-contract.md").read_text() == contract.markdown()
