"""End-to-end physics check: masses, impact parameters, PID efficiencies, the comparison and its report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import uproot
import yaml

from flashsim.cli import main
from flashsim.config import load_params, resolve_scale
from flashsim.runtime import breaks, physics
from flashsim.runtime import physics_check as compare
from flashsim.validation import evaluate_gates

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"

M_LC, M_LB = 2286.46, 5619.60


def _two_body(rng, parent, m_parent, m1, m2):
    """Isotropic two-body decay of ``parent`` four-momenta (E last) into daughters of masses m1, m2."""
    n = len(parent)
    q = np.sqrt((m_parent**2 - (m1 + m2) ** 2) * (m_parent**2 - (m1 - m2) ** 2)) / (2 * m_parent)
    cos, phi = rng.uniform(-1, 1, n), rng.uniform(0, 2 * np.pi, n)
    sin = np.sqrt(1 - cos**2)
    k = q[:, None] * np.stack([sin * np.cos(phi), sin * np.sin(phi), cos], 1) if np.ndim(q) else \
        q * np.stack([sin * np.cos(phi), sin * np.sin(phi), cos], 1)
    out = []
    for m, sign in ((m1, 1), (m2, -1)):
        p = sign * k
        e = np.sqrt(np.sum(p * p, 1) + m * m)
        beta = parent[:, :3] / parent[:, 3:4]
        b2 = np.sum(beta**2, 1)
        gamma = 1 / np.sqrt(1 - b2)
        bp = np.sum(beta * p, 1)
        p_lab = p + ((gamma - 1) * bp / b2 + gamma * e)[:, None] * beta
        out.append(np.concatenate([p_lab, (gamma * (e + bp))[:, None]], 1))
    return out


def signal_sample(n=2000, seed=0, ip=0.05, sigma=0.01):
    """A signal-contract sample with exact kinematics: Lc+ -> p (K pi), a muon making the visible Lb mass."""
    rng = np.random.default_rng(seed)
    pz = rng.uniform(40_000, 120_000, n)
    lc = np.stack([rng.normal(0, 2000, n), rng.normal(0, 2000, n), pz, np.zeros(n)], 1)
    lc[:, 3] = np.sqrt(np.sum(lc[:, :3] ** 2, 1) + M_LC**2)
    m_kpi = rng.uniform(700, 1200, n)
    proton, kpi = _two_body(rng, lc, M_LC, physics.MASS[1], m_kpi)
    kaon, pion = _two_body(rng, kpi, m_kpi, physics.MASS[2], physics.MASS[3])
    mu = np.stack([rng.normal(0, 1000, n), rng.normal(0, 1000, n), rng.uniform(10_000, 50_000, n)], 1)
    tracks = [proton[:, :3], kaon[:, :3], pion[:, :3], mu]
    cols: dict[str, list] = {}
    for role, p3 in enumerate(tracks, start=1):
        tx, ty = p3[:, 0] / p3[:, 2], p3[:, 1] / p3[:, 2]
        part = {"evtNumber": np.arange(n), "signal_role": np.full(n, role), "type": np.full(n, 3),
                "p": np.linalg.norm(p3, axis=1), "tx_ClosestToBeam": tx, "ty_ClosestToBeam": ty,
                "x_ClosestToBeam": np.full(n, ip), "y_ClosestToBeam": np.zeros(n), "z_ClosestToBeam": np.zeros(n),
                "pv_x": np.zeros(n), "pv_y": np.zeros(n), "pv_z": np.zeros(n),
                "mc_px": p3[:, 0], "mc_py": p3[:, 1], "mc_pz": p3[:, 2],
                "PIDK": rng.normal(10 if role == 2 else -5, 5, n), "isMuon": (np.full(n, role == 4)).astype(int)}
        for i in range(5):
            for j in range(i, 5):
                part[f"cov_ClosestToBeam_{i}_{j}"] = np.full(n, sigma**2 if (i == j and i < 2) else
                                                             (1e-8 if i == j else 0.0))
        for k, v in part.items():
            cols.setdefault(k, []).append(v)
    order = np.random.default_rng(seed + 1).permutation(4 * n)  # rows in any order
    return {k: np.concatenate(v)[order] for k, v in cols.items()}


def test_masses_and_impact_parameters_are_exact():
    cols = signal_sample()
    cand = physics.candidates(cols)
    assert cand.n_decays == 2000 and len(cand.m_lc) == 2000
    np.testing.assert_allclose(cand.m_lc, M_LC, rtol=1e-6)
    assert np.all(cand.m_lb_visible > M_LC)
    ip, chi2 = physics.impact_parameters(cols)
    u = np.stack([cols["tx_ClosestToBeam"], cols["ty_ClosestToBeam"], np.ones(len(ip))], 1)
    ux = u[:, 0] / np.linalg.norm(u, axis=1)
    np.testing.assert_allclose(ip, 0.05 * np.sqrt(1 - ux**2), rtol=1e-9)
    np.testing.assert_allclose(chi2, (0.05 / 0.01) ** 2, rtol=1e-9)
    # an unreconstructed track removes its decay from the candidates
    cols["type"][np.flatnonzero(cols["signal_role"] == 3)[:10]] = 0
    assert len(physics.candidates(cols).m_lc) == 1990


def test_cut_efficiency_per_momentum_bin():
    cols = signal_sample()
    rows = physics.pid_rows(cols, "K", (3,))
    eff, err, n = physics.cut_efficiency(cols, rows, "PIDK > 0", np.array([0, 25e3, 1e6]))
    assert np.all(n > 100)
    assert n.sum() == len(rows) and np.all(err > 0)
    assert abs(np.average(eff, weights=n) - 0.977) < 0.02  # P(N(10, 5) > 0)
    with pytest.raises(ValueError, match="VARIABLE OP NUMBER"):
        physics.parse_cut("PIDK >> 0")


def test_comparison_separates_identical_from_shifted(tmp_path):
    ref = signal_sample(n=1500)
    cuts = [{"species": "K", "cut": "PIDK > 5"}, {"species": "mu", "cut": "isMuon == 1"}]
    same, _ = compare.compare(ref, dict(ref), tmp_path / "same", pid_cuts=cuts, plots=False)
    assert same["m_lc.ks"] == 0 and same["ip.ks"] == 0 and same["pid.chi2_ndf_mean"] == 0
    twin, _ = compare.compare(ref, signal_sample(n=1500, seed=5), tmp_path / "twin", pid_cuts=cuts,
                              plots=False)  # same distributions
    assert abs(twin["masses.auc"] - 0.5) < 0.06 and twin["m_lb_visible.ks"] < 0.08
    assert twin["pid.chi2_ndf_mean"] < 4
    shifted = {**ref, "p": ref["p"] * 1.01, "PIDK": ref["PIDK"] + 3, "x_ClosestToBeam": ref["x_ClosestToBeam"] * 2}
    diff, plots = compare.compare(ref, shifted, tmp_path / "shifted", pid_cuts=cuts)
    assert diff["m_lc.ks"] > 0.5 and diff["masses.auc"] > 0.8
    assert diff["ip.ks"] > 0.9 and diff["pid.chi2_ndf_mean"] > 10
    assert {p.name for p in plots} >= {"masses.png", "impact_parameters.png", "pid_efficiencies.png"}


def _write(path, tree, cols):
    with uproot.recreate(path) as f:
        f.mktree(tree, {k: v.dtype for k, v in cols.items()})
        f[tree].extend(cols)


def test_flash_simulated_signal_and_report(runtime_toy_models, tmp_path, monkeypatch):
    """The demo's path: reference signal file -> flashsim simulate -> flashsim physics-check -> reports."""
    ref = signal_sample(n=600)
    ref = {k: (v.astype(np.float32) if v.dtype == np.float64 else v.astype(np.int32) if k != "evtNumber" else v)
           for k, v in ref.items()}
    ref["mcID"] = np.select([ref["signal_role"] == r for r in (1, 2, 3, 4)], [2212, -321, 211, 13]).astype(np.int32)
    ref["nTracks"] = np.full(len(ref["p"]), 80, np.int32)
    for c in ("mc_x", "mc_y", "mc_z"):
        ref[c] = np.zeros(len(ref["p"]), np.float32)
    _write(tmp_path / "signal.root", "Signal", ref)
    flash = tmp_path / "flash.root"
    assert main(["simulate", "--input", str(tmp_path / "signal.root"), "--tree", "Signal", "--models",
                 str(runtime_toy_models), "--output", str(flash), "--device", "cpu"]) == 0
    with uproot.open(flash) as f:
        t = f["FlashSim"]
        assert {"signal_role", "pv_z", "z_ClosestToBeam", "PIDK"} <= set(t.keys())
    out = tmp_path / "reports" / "physics_check"
    assert main(["physics-check", "--reference", str(tmp_path / "signal.root"), "--reference-tree", "Signal",
                 "--flash", str(flash), "--outdir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_decays_reference"] == metrics["n_decays_flash"] == 600
    assert 0 < metrics["candidate_fraction_flash"] <= 1 and metrics["candidate_fraction_reference"] == 1
    assert {g["metric"] for g in metrics["gates"]} >= {"masses.auc", "ip_ipchi2.auc", "pid.chi2_ndf_mean",
                                                       "m_lc.width_ratio", "m_lc.robust_width_ratio"}
    assert (out / "index.html").exists() and (out / "masses.png").exists()
    assert "physics_check" in (out.parent / "index.html").read_text()


def reference_signal(n: int, seed: int) -> dict[str, np.ndarray]:
    """Lb0 -> Lc+ mu- nu decays from the reference detector simulation (its thresholds and resolution tails)."""
    from flashsim.detsim.signal import make_chunk

    return make_chunk(0, n, n, np.random.default_rng(seed))


@pytest.fixture(scope="module")
def reference_pair():
    """Two independent reference samples: the second is what a perfect flash simulation would give."""
    return reference_signal(3000, 1), reference_signal(3000, 2)


def _demo_gates(ref, flash) -> tuple[dict, list[str]]:
    params = load_params(PARAMS)
    cfg = resolve_scale(params["physics_check"], "demo")
    m, _ = compare.compare(ref, flash, None, p_edges=cfg["p_edges"], pid_cuts=cfg["pid_cuts"], plots=False)
    gates = params["physics_check"]["gates"]["demo"]
    rows = evaluate_gates({k: v for k, v in m.items() if isinstance(v, int | float)}, gates)
    return m, [r["metric"] for r in rows if not r["passed"]]


def test_demo_gates_pass_a_faithful_flash_sample(reference_pair):
    m, failed = _demo_gates(*reference_pair)
    assert failed == []
    assert abs(m["m_lc.width_ratio"] - 1) < 3 * m["m_lc.width_ratio_err"]
    assert m["pid.bins_over_3sigma"] <= 1 and len(m["p_edges"]) > 10  # threshold-resolving bins


@pytest.mark.parametrize(("kind", "caught_by"), [("blind_pid", "pid."), ("wide_resolution", "m_lc."),
                                                 ("ismuon_shift", "pid.mu.")])
def test_demo_gates_fail_each_broken_chain(reference_pair, kind, caught_by):
    ref, flash = reference_pair
    _, failed = _demo_gates(ref, breaks.apply(flash, kind))
    assert any(g.startswith(caught_by) for g in failed), failed


def test_breaks_perturb_only_their_part():
    flash = reference_signal(1500, 3)
    blind = breaks.apply(flash, "blind_pid", seed=1)
    ok = flash["type"] > 0
    mu = flash["signal_role"] == 4
    assert np.array_equal(np.sort(blind["PIDK"][mu & ok]), np.sort(flash["PIDK"][mu & ok]))  # same marginal
    assert not np.array_equal(blind["PIDK"][mu & ok], flash["PIDK"][mu & ok]) and blind["p"] is flash["p"]
    wide = breaks.apply(flash, "wide_resolution")
    mc_p = np.sqrt(flash["mc_px"].astype(float) ** 2 + flash["mc_py"] ** 2 + flash["mc_pz"] ** 2)
    np.testing.assert_allclose((wide["p"] - mc_p)[ok], 1.3 * (flash["p"] - mc_p)[ok], rtol=1e-3, atol=0.5)
    shifted = breaks.apply(flash, "ismuon_shift")
    rows = np.flatnonzero(mu & ok)
    low = rows[(flash["p"][rows] > 3000) & (flash["p"][rows] < 4500)]
    assert shifted["isMuon"][low].mean() < flash["isMuon"][low].mean() - 0.1  # the turn-on moved up
    assert np.array_equal(shifted["isMuon"][~mu], flash["isMuon"][~mu])
    with pytest.raises(ValueError, match="unknown break"):
        breaks.apply(flash, "nope")


def test_physics_check_break_cli(reference_pair, tmp_path):
    """``--break`` writes its own report and exits 3 only when the gates do not see the break."""
    from flashsim.runtime.simulate import OUT_TREE

    ref, flash = reference_pair
    _write(tmp_path / "ref.root", "Signal", ref)
    _write(tmp_path / "flash.root", OUT_TREE, flash)
    args = ["physics-check", "--params", str(PARAMS), "--reference", str(tmp_path / "ref.root"),
            "--reference-tree", "Signal"]
    out = tmp_path / "broken"
    assert main([*args, "--flash", str(tmp_path / "flash.root"), "--break", "wide_resolution",
                 "--outdir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["break"] == "wide_resolution" and metrics["m_lc.width_ratio"] > 1.2
    assert not all(g["passed"] for g in metrics["gates"]) and (out / "pid_efficiencies.png").exists()
    # gates on the masses alone cannot see a shifted isMuon turn-on
    params = yaml.safe_load(PARAMS.read_text())
    params["physics_check"]["gates"]["demo"] = {"masses.auc": {"max": 0.8}}
    shutil.copytree(PARAMS.parent / "schemas", tmp_path / "schemas")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    args[2] = str(tmp_path / "params.yaml")
    assert main([*args, "--flash", str(tmp_path / "flash.root"), "--break", "ismuon_shift",
                 "--outdir", str(tmp_path / "unseen")]) == 3
    params["physics_check"]["p_edges"] = [2000, 5000, 3000]  # not increasing: a config error, no report
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert main([*args, "--flash", str(tmp_path / "flash.root"), "--outdir", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()
