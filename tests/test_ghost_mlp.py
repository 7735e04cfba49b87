"""Ghost-probability MLP: architecture, folding, train -> export -> validate on the reference ghost sample."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import scratch_repo

from flashsim import cli
from flashsim.detsim.samples import kind_module, rng_factory
from flashsim.io.contract import GHOST_FEATURES
from flashsim.models import get_family, get_spec
from flashsim.models.ghost_mlp import GhostNet, roc_curve

MODEL = {"family": "ghost_mlp", "sample": "ghost", "epochs": 6, "batch_size": 512, "threads": 1,
         "validation_rows": 6000, "oracle": "ghost", "bins": {"p": "p", "eta": "eta", "n_p": 3, "n_eta": 2},
         "gates": {"demo": {"auc_gap": {"max": 0.03}, "calibration.chi2_ndf": {"max": 5.0},
                            "logloss_gap": {"max": 0.03}}}}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = scratch_repo(tmp_path_factory.mktemp("ghost"), {"ghost_mlp": MODEL})
    out = root / "results" / "prepared" / "ghost"
    out.mkdir(parents=True)
    # the reference simulation's ghost sample (its true_ghostProb is the exact Bayes probability)
    cols = next(kind_module("ghost").chunks(46000, 46000, rng_factory(3, "ghost"), {"kind": "ghost"}))
    for split, sl in (("train", slice(0, 30000)), ("val", slice(30000, 38000)), ("test", slice(38000, 46000))):
        pq.write_table(pa.table({k: v[sl] for k, v in cols.items()}), out / f"{split}.parquet")
    return root


def test_architecture_and_folding():
    rng = np.random.default_rng(0)
    mask = np.array([f in ("p", "pt", "chi2PerDoF") for f in GHOST_FEATURES])
    net = GhostNet(17, (25, 20), "relu", mask, rng.normal(size=17), rng.uniform(0.5, 2, 17)).eval()
    shapes = [tuple(m.weight.shape) for m in net.layers if isinstance(m, torch.nn.Linear)]
    assert shapes == [(25, 17), (20, 25), (1, 20)]
    x = torch.as_tensor(rng.uniform(0.1, 100, (64, 17)), dtype=torch.float32)
    before = net(x)
    assert torch.allclose(before.sum(-1), torch.ones(64))
    net.fold()
    assert torch.allclose(net(x), before, atol=1e-5)
    assert float(net.mean.abs().max()) == 0 and float((net.std - 1).abs().max()) == 0


def test_roc_curve_endpoints():
    fpr, tpr = roc_curve(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0]))
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert tpr[1] == 0.5 and fpr[1] == 0.0


def test_train_export_validate(repo, monkeypatch):
    monkeypatch.chdir(repo)
    for verb in ("train", "export", "validate"):
        assert cli.main([verb, "ghost_mlp"]) == 0, verb
    card = json.loads((repo / "models" / "ghost_mlp.json").read_text())
    assert [c["name"] for c in card["inputs"][0]["columns"]] == GHOST_FEATURES
    assert card["parity"]["n_failing"] == 0
    m = json.loads((repo / "reports" / "ghost_mlp" / "metrics.json").read_text())["metrics"]
    assert 0.5 < m["auc"] <= m["oracle.auc"] + 0.01
    assert (repo / "reports" / "ghost_mlp" / "figures" / "roc.png").exists()
    # the exported graph is the folded network: no standardisation left, three Gemm/MatMul layers
    import onnx

    ops = [n.op_type for n in onnx.load(repo / "models" / "ghost_mlp.onnx").graph.node]
    assert sum(op in ("Gemm", "MatMul") for op in ops) == 3 and "Div" not in ops
    # onnxruntime alone reproduces the native model
    fam = get_family(get_spec("ghost_mlp"))
    fam.load()
    x = fam.features(fam.frame("test", 1000))
    import onnxruntime as ort

    y = ort.InferenceSession(str(repo / "models" / "ghost_mlp.onnx")).run(["y"], {"x": x})[0]
    assert np.allclose(y, fam.predict(x), atol=1e-5)
