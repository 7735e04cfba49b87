"""params.yaml is editable by tools: no YAML anchors, and DVC's own `-S` override mechanism
(dvc.utils.hydra.apply_overrides, what `dvc exp run -S` calls) changes exactly the key it names, and only the
jobs of that model change their params rerun trigger (flashsim.models.stage_params, rules/common.smk)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import apply_overrides

from flashsim.config import flatten, load_params
from flashsim.errors import ConfigError
from flashsim.models import expand, expand_params, stage_params

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("train", "export", "validate")


def triggers(params: dict) -> dict[tuple[str, str], str]:
    """(model, stage) -> the params rerun trigger of that job."""
    return {(name, stage): stage_params(entry, stage, params["seed"], params["scale"], params.get("detector"))
            for name, entry in expand_params(params).items() for stage in STAGES}


def test_params_yaml_has_no_anchors():
    events = yaml.parse((ROOT / "params.yaml").read_text())
    anchored = [e for e in events if getattr(e, "anchor", None)]
    assert not anchored, [str(e) for e in anchored]


CASES = [  # (override as typed after `dvc exp run -S`, the key it names, models, stages whose jobs must rerun)
    ("models.pid_rich.lr.demo=0.005", "models.pid_rich.lr.demo",
     [f"pid_rich_{s}" for s in ("mu", "pi", "K", "p")], STAGES),
    ("models.acceptance.num_leaves=32", "models.acceptance.num_leaves", ["acceptance"], STAGES),
    ("models.efficiency.gates.demo.logloss_gap.max=0.04", "models.efficiency.gates.demo.logloss_gap.max",
     ["efficiency"], ("validate",)),
    ("models.pid_pipeline.parity.rtol=0.01", "models.pid_pipeline.parity.rtol",
     [f"pid_pipeline_{s}" for s in ("mu", "pi", "K", "p")], ("export", "validate")),
    ("++models.pid_rich.per_species.K.width=256", "models.pid_rich.per_species.K.width", ["pid_rich_K"], STAGES),
    ("detector.ecal.z=12500.0", "detector.ecal.z", ["ecal_gnn", "ecal_transformer"], STAGES),  # geometry in graph
]


@pytest.mark.parametrize(("override", "key", "models", "stages"), CASES, ids=[c[1] for c in CASES])
def test_dvc_override_changes_one_key_and_only_that_models_jobs(tmp_path, override, key, models, stages):
    shutil.copy2(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "schemas", tmp_path / "schemas")
    apply_overrides(tmp_path / "params.yaml", [override])

    raw_before = flatten(yaml.safe_load((ROOT / "params.yaml").read_text()))
    raw_after = flatten(yaml.safe_load((tmp_path / "params.yaml").read_text()))
    assert {k for k in raw_before.keys() | raw_after.keys() if raw_before.get(k) != raw_after.get(k)} == {key}

    before, after = load_params(ROOT / "params.yaml"), load_params(tmp_path / "params.yaml")
    res_before, res_after = flatten(before), flatten(after)
    assert {k for k in res_before.keys() | res_after.keys() if res_before.get(k) != res_after.get(k)} == {key}

    t_before, t_after = triggers(before), triggers(after)
    assert t_before.keys() == t_after.keys()
    changed = {job for job in t_before if t_before[job] != t_after[job]}
    assert changed == {(m, s) for m in models for s in stages}


def test_per_species_override_and_feature_sets():
    models = {"rich": {"family": "pid_generator", "sample": "calib_{species}", "species": ["pi", "K"],
                       "features": ["kin", "extra"], "width": {"demo": 128, "full": 256},
                       "per_species": {"K": {"width": 512, "features": "all"}}}}
    sets = {"kin": ["p", "eta"], "all": ["kin", "nTracks"]}
    out = expand(models, sets)
    assert out["rich_pi"]["width"] == {"demo": 128, "full": 256} and out["rich_K"]["width"] == 512
    assert out["rich_pi"]["features"] == ["p", "eta", "extra"] and out["rich_K"]["features"] == ["p", "eta", "nTracks"]
    assert out["rich_K"]["sample"] == "calib_K" and "per_species" not in out["rich_K"]
    with pytest.raises(ConfigError, match="per_species"):
        expand({"m": {**models["rich"], "per_species": {"p": {"width": 1}}}}, sets)
    with pytest.raises(ConfigError, match="not a feature set"):
        expand({"m": {"family": "generator", "sample": "s", "features": "nope"}}, sets)
    with pytest.raises(ConfigError, match="cycle"):
        expand({"m": {"family": "generator", "sample": "s", "features": ["a"]}}, {"a": ["b"], "b": ["a"]})
