"""Per-group target quantile transforms of the generator family (``target_groups``): fit, torch vs ONNX, config."""

from __future__ import annotations

import numpy as np
import torch
from helpers import repo_models, scratch_repo, write_tracking_sample
from torch import nn

from flashsim import cli
from flashsim.export import export_torch, onnx_predict
from flashsim.models.target_groups import MIN_GROUP_ROWS, GroupQuantile


def _sample(n=20000, seed=3):
    """x: [flag a, flag b, a continuous column]; y: [a residual whose width depends on the group, another]."""
    rng = np.random.default_rng(seed)
    a, b = (rng.random(n) < 0.2).astype(float), (rng.random(n) < 0.5).astype(float)
    x = np.stack([a, b, rng.normal(size=n)], 1).astype(np.float32)
    width = np.where(a == 1, 20.0, 1.0) * np.where(b == 1, 3.0, 1.0)
    y = np.stack([rng.standard_t(4, n) * width, rng.normal(size=n)], 1)
    return x, y


class _Inverse(nn.Module):
    def __init__(self, g: GroupQuantile, n_out: int) -> None:
        super().__init__()
        self.g, self.n_out = g, n_out

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.g.inverse(noise, x)


def test_each_group_owns_the_gaussian_space_and_onnx_matches(tmp_path):
    x, y = _sample()
    g = GroupQuantile.fit(x, y, flags=[0, 1], targets=[0], weights=None, n_knots=128, tail_knots=8)
    assert len(g.transforms) == 5  # pooled + the four populated groups
    z = g.transform(x, y)
    assert np.array_equal(z[:, 1], y[:, 1])  # untouched column
    for code in range(4):  # every group is Gaussian in its own right
        rows = GroupQuantile.codes(x, [0, 1]) == code
        assert abs(z[rows, 0].std() - 1) < 0.1
    # inverse of standard normal noise: each group's own width comes back (not the pooled one)
    noise = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    back = g.inverse(torch.from_numpy(noise), torch.from_numpy(x)).numpy()
    for code in range(4):
        rows = GroupQuantile.codes(x, [0, 1]) == code
        mad = np.median(np.abs(back[rows, 0])) / np.median(np.abs(y[rows, 0]))
        assert abs(mad - 1) < 0.1
    assert np.allclose(back[:, 1], noise[:, 1])
    # round trip and ONNX parity of the graph's inverse
    assert np.allclose(g.inverse(torch.from_numpy(z.astype(np.float32)), torch.from_numpy(x)).numpy(), y,
                       rtol=1e-3, atol=1e-3)
    path = export_torch(_Inverse(g, 2), tmp_path / "g.onnx", 3, noise_dim=2)
    assert np.allclose(onnx_predict(path, x, noise), back, rtol=1e-5, atol=1e-5)
    # the C route of `flashsim cabi` takes the graph (it needs static shapes once the batch is pinned)
    from flashsim.runtime import cabi

    assert cabi.build(path, tmp_path / "g.so", name="groups").route == "emx-onnx-cgen"
    # a state round trip gives the same module; a rare group shares the pooled transform
    same = GroupQuantile.from_state(g.state())
    assert torch.equal(same.inverse(torch.from_numpy(noise), torch.from_numpy(x)), torch.from_numpy(back))
    rare = x.copy()
    rare[: MIN_GROUP_ROWS // 2, 2] = 1.0
    rare[MIN_GROUP_ROWS // 2:, 2] = 0.0
    assert GroupQuantile.fit(rare, y, [2], [0], None, 64).index_np.tolist() == [1, 0]


def test_bad_target_groups_are_config_errors(tmp_path, monkeypatch):
    write_tracking_sample(tmp_path, n=3000)
    monkeypatch.chdir(tmp_path)
    base = repo_models(["resolution"])["resolution"]
    for bad in ({"by": ["is_long", "no_such_flag"], "targets": ["dp_over_p"]},  # not a feature
                {"by": ["is_long"], "targets": ["mc_p"]},  # not a target
                {"by": ["mc_charge"], "targets": ["dp_over_p"]}):  # not a 0/1 flag
        scratch_repo(tmp_path, {"resolution": {**base, "epochs": 1, "width": 8, "target_groups": bad}})
        assert cli.main(["train", "resolution"]) == 2
        assert not (tmp_path / "results" / "train" / "resolution" / "model.pt").exists()
    scratch_repo(tmp_path, {"resolution": {**base, "tail_knots": -1}})
    assert cli.main(["train", "resolution"]) == 2
