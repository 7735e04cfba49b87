"""PIDCalib-like calibration samples: contract columns, a real sPlot, chunk-wise reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from flashsim.detsim import calib
from flashsim.detsim import samples as registry
from flashsim.io.contract import PID_CALIB


def _sample(channel: str, n: int = 30000, chunk: int = 12000, seed: int = 3):
    rng_for = registry.rng_factory(seed, f"calib_{channel}")
    parts = list(calib.chunks(n, chunk, rng_for, {"channel": channel}))
    return parts, {k: np.concatenate([c[k] for c in parts]) for k in parts[0]}


@pytest.mark.parametrize("channel", sorted(calib.CHANNELS))
def test_columns_and_sweights_unfold_the_signal(channel):
    parts, d = _sample(channel)
    assert set(d) == set(PID_CALIB.names())
    for c in PID_CALIB.columns:
        assert d[c.name].dtype == np.dtype(c.dtype), c.name
    w, sig = d["probe_sWeight"], d["is_signal"] == 1
    assert (w < 0).mean() > 0.05  # negative weights occur, as in data
    assert np.isfinite(w).all()
    assert w.sum() == pytest.approx(sig.sum(), rel=0.03)  # the fitted signal yield
    lo, hi = calib.CHANNELS[channel].window
    assert (d["mother_M"] >= lo).all() and (d["mother_M"] <= hi).all()
    # background differs from signal, so the raw efficiency is biased while the sWeighted one is not
    for cut in (d["probe_Brunel_RichDLLk"] > 0, d["probe_Brunel_isMuon"] == 1):
        truth = cut[sig].mean()
        weighted = np.sum(w * cut) / w.sum()
        assert abs(weighted - truth) < 0.02
    raw = (d["probe_Brunel_RichDLLk"] > 0).mean()
    assert abs(raw - (d["probe_Brunel_RichDLLk"][sig] > 0).mean()) > 0.1
    off = d["probe_Brunel_isMuon"] == 0
    assert np.isnan(d["probe_Brunel_MuonMuLL"][off]).all()
    assert len(parts) == 3 and [len(p["evtNumber"]) for p in parts] == [12000, 12000, 6000]
    assert np.unique(d["evtNumber"]).size == d["evtNumber"].size


def test_chunks_draw_only_from_their_own_stream():
    a, _ = _sample("lambda_ppi", n=20000, chunk=10000)
    b, _ = _sample("lambda_ppi", n=30000, chunk=10000)  # more chunks: the fit changes, the candidates do not
    for k in a[0]:
        if k != "probe_sWeight":
            np.testing.assert_array_equal(a[1][k], b[1][k])
    c, _ = _sample("lambda_ppi", n=20000, chunk=10000)
    for k in a[0]:
        np.testing.assert_array_equal(a[0][k], c[0][k])


def test_binned_fit_for_large_samples_matches_unbinned(monkeypatch):
    ch = calib.CHANNELS["dstar_d0pi_K"]
    rng_for = registry.rng_factory(5, "binned")
    sizes = [20000, 20000]
    unbinned = calib.splot_for(ch, sizes, rng_for)
    monkeypatch.setattr(calib, "FIT_MAX", 1000)
    binned = calib.splot_for(ch, sizes, rng_for)
    assert binned.n_signal == pytest.approx(unbinned.n_signal, rel=0.01)
    m = np.linspace(*ch.window, 50)
    np.testing.assert_allclose(binned.weights(m), unbinned.weights(m), atol=0.03)


def test_splot_weights_properties():
    ch = calib.CHANNELS["jpsi_mumu"]
    is_sig, m = calib.draw_masses(ch, 40000, np.random.default_rng(0))
    sp = calib.fit_splot(ch, masses=m)
    w = sp.weights(m)
    assert w.sum() == pytest.approx(sp.n_signal, rel=1e-3)  # sPlot closure
    assert sp.n_signal == pytest.approx(is_sig.sum(), rel=0.03)
    assert w[np.abs(m - ch.mass) < ch.sigma].mean() > 0.9 and w[m > ch.mass + 6 * ch.sigma].mean() < 0
    with pytest.raises(ValueError, match="channel"):
        calib.channel({"channel": "nope"})
