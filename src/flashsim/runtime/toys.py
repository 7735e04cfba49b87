"""Small trained stand-ins for the chain's models, for the tests and for benchmarking before real models exist.

Each toy follows the ONNX convention of the real models (``x`` in physical units, ``noise`` for generative
models, output ``y``; standardisation inside the graph) and comes with a model card. They learn simple
closed-form "detector" responses from particle-gun samples in a second or two.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from flashsim.detector import RECONSTRUCTED_TYPES
from flashsim.runtime import features as F
from flashsim.runtime.io import gun_config, particle_gun

# feature and output names as the real models use them (params.yaml models: ...)
ACC_FEATURES = ["mc_x", "mc_y", "mc_z", "mc_tx", "mc_ty", "mc_p", "mc_eta", "mc_phi", "mc_charge", "is_e", "is_mu",
                "is_pi", "is_K", "is_p"]
EFF_FEATURES = [*ACC_FEATURES, "nTracks"]
RES_FEATURES = [*EFF_FEATURES, "is_long", "is_upstream", "is_downstream"]
RES_OUTPUTS = ["dx_ClosestToBeam", "dy_ClosestToBeam", "dtx_ClosestToBeam", "dty_ClosestToBeam", "dp_over_p",
               "chi2PerDoF"]
COV_OUTPUTS = [f"cov_ClosestToBeam_{i}_{i}" for i in range(5)]
PID_FEATURES = ["p", "eta", "nTracks", "charge"]
PID_OUTPUTS = ["isMuon", "RichDLLk", "RichDLLp", "MuonMuLL", "PIDK", "ProbNNk"]


def gun_batch(n: int, seed: int, **gun) -> F.Batch:
    cfg = gun_config({"n": n, **gun})
    cols = {}
    for chunk in particle_gun(cfg, seed, chunk=n):
        cols = {k: torch.from_numpy(v) for k, v in chunk.items()}
    return F.Batch(cols)


class _Standardise(torch.nn.Module):
    def __init__(self, x: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mu", torch.tensor(x.mean(0), dtype=torch.float32))
        self.register_buffer("sd", torch.tensor(x.std(0) + 1e-6, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mu) / self.sd


class ToyNet(torch.nn.Module):
    """Standardised inputs (+ noise) -> MLP -> output scale; ``softmax`` for classifiers."""

    def __init__(self, x: np.ndarray, n_noise: int, n_out: int, width: int = 64, depth: int = 3,
                 softmax: bool = False, out_scale: np.ndarray | None = None) -> None:
        super().__init__()
        self.pre = _Standardise(x)
        layers, w_in = [], x.shape[1] + n_noise
        for _ in range(depth):
            layers += [torch.nn.Linear(w_in, width), torch.nn.ReLU()]
            w_in = width
        layers.append(torch.nn.Linear(w_in, n_out))
        self.net = torch.nn.Sequential(*layers)
        self.softmax = softmax
        scale = np.ones(n_out) if out_scale is None else out_scale
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        self.n_noise = n_noise

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        h = self.pre(x)
        if self.n_noise:
            h = torch.cat([h, noise], dim=1)
        out = self.net(h)
        return torch.softmax(out, dim=1) if self.softmax else out * self.scale


def _fit(net: ToyNet, x: np.ndarray, target: np.ndarray, steps: int, classify: bool, seed: int) -> ToyNet:
    torch.manual_seed(seed)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(target)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (512,), generator=gen)
        noise = torch.randn((512, net.n_noise), generator=gen) if net.n_noise else None
        if classify:
            logits = net.net(net.pre(xt[idx]))
            loss = torch.nn.functional.cross_entropy(logits, yt[idx].long())
        else:  # conditional mean regression on the noise-free part + noise-driven spread: a cheap stand-in
            loss = torch.mean((net(xt[idx], noise) - yt[idx].float()) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def export(net: ToyNet, path: Path, n_in: int) -> None:
    args = (torch.zeros(2, n_in), torch.zeros(2, net.n_noise)) if net.n_noise else (torch.zeros(2, n_in),)
    names = ["x", "noise"] if net.n_noise else ["x"]
    axes = {k: {0: "N"} for k in [*names, "y"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, args, str(path), input_names=names, output_names=["y"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)


def card(features: list[str], outputs: list[str], noise: int = 0, **extra) -> dict:
    """A model card in the layout of ``flashsim export`` (IO tensors with their columns)."""
    inputs = [{"name": "x", "shape": ["N", len(features)], "dtype": "float32",
               "columns": [{"name": f, "unit": "1"} for f in features]}]
    if noise:
        inputs.append({"name": "noise", "shape": ["N", noise], "dtype": "float32", "distribution": "standard normal"})
    return {"inputs": inputs, "outputs": [{"name": "y", "shape": ["N", len(outputs)], "dtype": "float32",
                                           "columns": [{"name": o, "unit": "1"} for o in outputs]}],
            "noise": {"name": "noise", "dim": noise} if noise else None, "toy": True, **extra}


def _write(out: Path, name: str, c: dict) -> None:
    (out / f"{name}.json").write_text(json.dumps(c, indent=1))


def acceptance_lgbm(b: F.Batch, rng: np.random.Generator, n_trees: int = 30, num_leaves: int = 16):
    import lightgbm as lgb

    x = b.matrix(ACC_FEATURES).numpy()
    eta = b["mc_eta"].numpy()
    prob = 1 / (1 + np.exp(-6 * (eta - 2.0))) / (1 + np.exp(-6 * (4.9 - eta)))
    label = (rng.random(len(x)) < prob).astype(int)
    return lgb.LGBMClassifier(n_estimators=n_trees, num_leaves=num_leaves, learning_rate=0.2, verbose=-1,
                              random_state=0, n_jobs=1).fit(x, label)


def export_lgbm(clf, path: Path, n_features: int) -> None:
    """LightGBM -> ONNX with the convention's names (``x`` -> probabilities ``y`` [N, 2])."""
    import onnx
    from onnx import TensorProto, helper
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    m = convert_lightgbm(clf, initial_types=[("x", FloatTensorType([None, n_features]))], zipmap=False)
    g = m.graph
    tree = next(n for n in g.node if n.op_type == "TreeEnsembleClassifier")
    tree.output[0], tree.output[1] = "label", "y"
    del g.node[:]
    g.node.extend([tree])
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])])
    g.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    del g.initializer[:]
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def build(out: str | Path, *, n: int = 4000, seed: int = 7, steps: int = 60, width: int = 32,
          pid_species: tuple[str, ...] = ("mu", "pi", "K", "p"), which: tuple[str, ...] | None = None) -> Path:
    """Train and export the toy chain into directory ``out`` (one torch thread); returns ``out``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _build(Path(out), n, seed, steps, width, pid_species, which)
    finally:
        torch.set_num_threads(threads)


def _build(out: Path, n: int, seed: int, steps: int, width: int, pid_species: tuple[str, ...],
           which: tuple[str, ...] | None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    b = gun_batch(n, seed)
    want = set(which or ("acceptance", "efficiency", "resolution", "covariance", "pid"))
    if "acceptance" in want:
        export_lgbm(acceptance_lgbm(b, rng), out / "acceptance.onnx", len(ACC_FEATURES))
        _write(out, "acceptance", card(ACC_FEATURES, ["p_not_accepted", "p_accepted"]))
    if "efficiency" in want:
        x = b.matrix(EFF_FEATURES).numpy()
        logp, eta, ntr = np.log(b["mc_p"].numpy()), b["mc_eta"].numpy(), b["nTracks"].numpy()
        logit = np.stack([np.zeros(n), 2 + 0.3 * logp - 0.004 * ntr, 0.5 * np.ones(n), 0.3 * np.ones(n) + eta - 3], 1)
        pr = np.exp(logit) / np.exp(logit).sum(1, keepdims=True)
        label = (pr.cumsum(1) < rng.random((n, 1))).sum(1).clip(0, 3)
        net = _fit(ToyNet(x, 0, 4, width, softmax=True), x, label, steps, True, seed)
        export(net, out / "efficiency.onnx", x.shape[1])
        _write(out, "efficiency", card(EFF_FEATURES, ["p_none", "p_long", "p_upstream", "p_downstream"]))
    types = rng.choice(np.array(RECONSTRUCTED_TYPES, np.int32), n, p=[0.7, 0.15, 0.15])
    b.set("type", torch.from_numpy(types))
    if "resolution" in want:
        x = b.matrix(RES_FEATURES).numpy()
        p = b["p"].numpy()
        sig = np.stack([0.01 + 40 / p, 0.01 + 40 / p, 4e-5 + 0.9 / p, 4e-5 + 0.9 / p, 0.005 + 0 * p, 0 * p + 0.3], 1)
        target = rng.standard_normal((n, 6)) * sig
        target[:, 5] += 1.0
        net = _fit(ToyNet(x, 4, 6, width, out_scale=sig.mean(0)), x, target, steps, False, seed)
        export(net, out / "resolution.onnx", x.shape[1])
        _write(out, "resolution", card(RES_FEATURES, RES_OUTPUTS, noise=4))
    if "covariance" in want:
        x = b.matrix(RES_FEATURES).numpy()
        p = b["p"].numpy()
        target = np.stack([(40 / p) ** 2, (40 / p) ** 2, (0.9 / p) ** 2, (0.9 / p) ** 2, (0.005 / p) ** 2], 1)
        net = _fit(ToyNet(x, 2, 5, width, out_scale=target.mean(0)), x, target, steps, False, seed)
        export(net, out / "covariance.onnx", x.shape[1])
        _write(out, "covariance", card(RES_FEATURES, COV_OUTPUTS, noise=2))
    for s in pid_species if "pid" in want else ():
        x = b.matrix(PID_FEATURES).numpy()
        shift = {"K": 10.0, "p": 20.0}.get(s, -5.0)
        target = np.stack([np.full(n, 0.9 if s == "mu" else 0.05), shift + 5 * rng.standard_normal(n),
                           shift / 2 + 5 * rng.standard_normal(n), -1 - rng.exponential(size=n),
                           shift + 3 * rng.standard_normal(n), np.full(n, 0.8 if s == "K" else 0.1)], 1)
        net = _fit(ToyNet(x, 3, 6, width), x, target, steps, False, seed)
        export(net, out / f"pid_pipeline_{s}.onnx", x.shape[1])
        _write(out, f"pid_pipeline_{s}", card(PID_FEATURES, PID_OUTPUTS, noise=3))
    return out
