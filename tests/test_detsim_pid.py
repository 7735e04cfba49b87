"""Physics trends of the reference PID response (flashsim.detsim.pid)."""

from __future__ import annotations

import numpy as np
import pytest

from flashsim.detsim import pid


def _respond(species: str, p: float, n: int = 4000, ntr: float = 150.0, seed: int = 1, eta=None):
    rng = np.random.default_rng(seed)
    eta = rng.uniform(2.8, 4.5, n) if eta is None else np.full(n, eta)
    return pid.respond(np.full(n, pid.SPECIES_TO_PDG[species]), np.full(n, p), eta, np.full(n, ntr),
                       rng.choice([-1, 1], n), rng)


def _kpi_separation(p: float, ntr: float = 150.0) -> float:
    """Fraction of kaons minus fraction of pions passing DLLK > 0 (0: no separation, 1: perfect)."""
    k, pi = _respond("K", p, ntr=ntr)["RichDLLk"], _respond("pi", p, ntr=ntr)["RichDLLk"]
    return float((k > 0).mean() - (pi > 0).mean())


def test_thresholds_match_radiators():
    assert pid.threshold(pid.MASSES["pi"], pid.RICH1.n_minus_1) == pytest.approx(2637, rel=0.01)
    assert pid.threshold(pid.MASSES["K"], pid.RICH1.n_minus_1) == pytest.approx(9328, rel=0.01)
    assert pid.threshold(pid.MASSES["K"], pid.RICH2.n_minus_1) == pytest.approx(15611, rel=0.01)
    th = pid.cherenkov_angle(np.array([2000.0, 9000.0, 9500.0, 1e6]), pid.MASSES["K"], pid.RICH1.n_minus_1)
    assert th[0] == 0 and th[1] == 0 and 0 < th[2] < th[3] < pid.RICH1.theta_max


def test_columns_dtypes_and_nan_convention():
    r = _respond("mu", 20000.0)
    assert list(r) == list(pid.COLUMNS)
    for c, v in r.items():
        assert v.dtype == (np.int32 if c == "isMuon" else np.float32), c
    for name in ("e", "mu", "pi", "K", "p"):
        r = _respond(name, 15000.0)
        off = r["isMuon"] == 0
        assert np.isnan(r["MuonMuLL"][off]).all() and np.isnan(r["MuonBgLL"][off]).all()
        assert np.isfinite(r["MuonMuLL"][~off]).all() and np.isfinite(r["MuonBgLL"][~off]).all()
        for c in ("ProbNNe", "ProbNNmu", "ProbNNpi", "ProbNNk", "ProbNNp"):
            assert (r[c] >= 0).all() and (r[c] <= 1).all()
        for c in (*pid.RICH_COLUMNS, "PIDe", "PIDmu", "PIDK", "PIDp"):
            assert np.isfinite(r[c]).all()


def test_kpi_separation_vs_momentum():
    below_pion = _kpi_separation(2400.0)  # neither pion nor kaon radiate
    threshold_mode = _kpi_separation(5000.0)  # pion radiates, kaon below its threshold
    ring_mode = _kpi_separation(25000.0)  # both radiate, different angles
    very_high = _kpi_separation(180000.0)  # rings coincide
    assert abs(below_pion) < 0.02
    assert threshold_mode > 0.9 and ring_mode > 0.9
    assert very_high < 0.5 * ring_mode
    # median DLLK of pions is strongly negative where the rings are distinct
    assert np.median(_respond("pi", 20000.0)["RichDLLk"]) < -20
    assert np.median(_respond("K", 20000.0)["RichDLLk"]) > 20


def test_occupancy_degrades_separation():
    lo, hi = _kpi_separation(80000.0, ntr=30.0), _kpi_separation(80000.0, ntr=500.0)
    assert lo > hi + 0.05


def test_proton_separation_and_electron_rich():
    assert (_respond("p", 30000.0)["RichDLLp"] > 0).mean() > 0.9
    assert (_respond("pi", 30000.0)["RichDLLp"] > 0).mean() < 0.1
    assert np.median(_respond("e", 3000.0)["RichDLLe"]) > 20  # electron rings saturated, pions at low angle


def test_muon_efficiency_and_misid():
    assert _respond("mu", 2000.0)["isMuon"].mean() < 0.05  # stopped in the iron
    for p in (10000.0, 50000.0):
        assert 0.95 < _respond("mu", p, n=8000)["isMuon"].mean() <= 1.0
    pi_lo, pi_hi = (_respond("pi", p, n=40000)["isMuon"].mean() for p in (5000.0, 80000.0))
    k_lo = _respond("K", 5000.0, n=40000)["isMuon"].mean()
    p_lo = _respond("p", 5000.0, n=40000)["isMuon"].mean()
    assert 0.002 < pi_lo < 0.05 and pi_hi < pi_lo  # decay in flight falls with momentum
    assert k_lo > pi_lo > p_lo  # kaons decay faster; protons do not decay
    busy = _respond("pi", 5000.0, n=40000, ntr=600.0)["isMuon"].mean()
    assert busy > pi_lo  # random hits grow with occupancy


def test_global_pid_combines_subdetectors():
    mu, pi = _respond("mu", 30000.0), _respond("pi", 30000.0)
    assert np.median(mu["PIDmu"]) > np.median(pi["PIDmu"]) + 5
    assert np.median(mu["ProbNNmu"]) > 0.8 and np.median(pi["ProbNNmu"]) < 0.05
    k = _respond("K", 20000.0)
    assert np.median(k["ProbNNk"]) > 0.8 and np.median(_respond("pi", 20000.0)["ProbNNk"]) < 0.05
    assert np.median(_respond("e", 20000.0)["PIDe"]) > np.median(pi["PIDe"]) + 5


def test_reproducible_and_unknown_species():
    a, b = _respond("K", 12000.0, seed=7), _respond("K", 12000.0, seed=7)
    for c in a:
        np.testing.assert_array_equal(a[c], b[c])
    with pytest.raises(ValueError, match="PDG"):
        pid.respond(np.array([22]), np.array([1e4]), np.array([3.0]), np.array([100]), np.array([1]),
                    np.random.default_rng(0))
