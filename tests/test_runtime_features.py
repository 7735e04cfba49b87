"""The runtime's on-device features agree with the reference simulation's definitions."""

from __future__ import annotations

import numpy as np
import torch

from flashsim.detsim import kinematics, truth
from flashsim.runtime import features as F
from flashsim.runtime.io import charge_of, gun_config, particle_gun


def _particles(n=20_000):
    rng = np.random.default_rng(4)
    return kinematics.generate_particles(rng, n, 0, n)


def test_true_state_matches_the_reference_truth():
    cols = _particles()
    b = F.Batch({k: torch.from_numpy(v) for k, v in cols.items()})
    ref = truth.true_state(cols)
    for name, want in ref.items():
        got = b[name].numpy()
        scale = np.abs(want).max()
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5 * scale, err_msg=name)


def test_generator_level_features():
    cols = _particles()
    b = F.Batch({k: torch.from_numpy(v) for k, v in cols.items()})
    px, py, pz = (cols[k].astype(np.float64) for k in ("mc_px", "mc_py", "mc_pz"))
    p = np.sqrt(px**2 + py**2 + pz**2)
    np.testing.assert_allclose(b["mc_p"].numpy(), p, rtol=1e-6)
    np.testing.assert_allclose(b["mc_eta"].numpy(), np.arctanh(pz / p), rtol=1e-5)
    np.testing.assert_allclose(b["mc_phi"].numpy(), np.arctan2(py, px), atol=1e-6)
    species = kinematics.species_index(cols["mcID"])
    for i, s in enumerate(kinematics.SPECIES):
        np.testing.assert_array_equal(b[f"is_{s}"].numpy(), (species == i).astype(np.float32))
    np.testing.assert_array_equal(charge_of(cols["mcID"]), cols["mc_charge"])


def test_particle_gun_is_seeded_and_follows_its_ranges():
    cfg = gun_config({"n": 5000, "species": {"K": 1.0}, "p": {"min": 3000, "max": 30000, "dist": "log"},
                      "eta": {"min": 2.0, "max": 4.5}})
    a = next(particle_gun(cfg, 1))
    b = next(particle_gun(cfg, 1))
    c = next(particle_gun(cfg, 2))
    np.testing.assert_array_equal(a["mc_px"], b["mc_px"])
    assert not np.array_equal(a["mc_px"], c["mc_px"])
    batch = F.Batch({k: torch.from_numpy(v) for k, v in a.items()})
    p, eta = batch["mc_p"].numpy(), batch["mc_eta"].numpy()
    assert p.min() >= 3000 * 0.999 and p.max() <= 30000 * 1.001
    assert eta.min() >= 2.0 - 1e-4 and eta.max() <= 4.5 + 1e-4
    assert set(np.unique(np.abs(a["mcID"]))) == {321}
    np.testing.assert_array_equal(charge_of(a["mcID"]), a["mc_charge"])
