"""The GlobalPID stage sees undefined muon LLs as one fill value, in training and at inference alike."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from synthetic import write_sample
from test_prepare import make_params, ok
from torch import nn

from flashsim.config import load_params
from flashsim.models import expand_params
from flashsim.models.pid import common as pc
from flashsim.models.pid.pipeline import ChainedPID
from flashsim.prepare import SPLITS


class _Const(nn.Module):
    def __init__(self, width: int, value: float) -> None:
        super().__init__()
        self.width, self.value = width, value

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return torch.full((len(x), self.width), self.value)


class _Pick(nn.Module):
    """The GlobalPID stand-in: returns the inputs it was fed at ``idx`` (what the runtime feeds GlobalPID)."""

    def __init__(self, idx: list[int]) -> None:
        super().__init__()
        self.idx = idx

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x[:, self.idx]


def _runtime_fill() -> np.ndarray:
    """The muon-LL inputs the chained pipeline graph feeds GlobalPID for tracks drawn without isMuon."""
    kin = ["p", "eta", "nTracks", "charge"]
    rich_out = [pc.CALIB_TO_FLASH[c] for c in pc.RICH]
    muon_out = [pc.CALIB_TO_FLASH[c] for c in pc.MUON]
    glob_in = [*kin, *rich_out, pc.ISMUON, *(f"{m}_filled" for m in muon_out)]
    chain = ChainedPID(kin, _Const(2, 0.0), kin, 1,  # P(isMuon) = 0: every track is drawn without isMuon
                       _Const(len(rich_out), 0.0), kin, rich_out, 1,
                       _Const(len(muon_out), -3.0), [*kin, *rich_out], muon_out, 1,
                       _Pick([glob_in.index(f"{m}_filled") for m in muon_out]), glob_in, ["a", "b"], 1)
    y = chain(torch.ones(5, len(kin)), torch.zeros(5, 4))
    return y[:, -2:].numpy()


def _training_fill(df: pd.DataFrame) -> np.ndarray:
    return pc.derive(df)[pc.MUON_FILLED].to_numpy()


def test_global_pid_fill_value_is_the_same_in_training_and_at_inference():
    runtime = _runtime_fill()
    training = _training_fill(pd.DataFrame({m: np.full(5, np.nan, np.float32) for m in pc.MUON}))
    np.testing.assert_array_equal(runtime, training)
    assert np.all(training == np.float32(pc.MUON_FILL))
    # the configured GlobalPID models read the filled columns, not the raw (NaN) ones
    for name, entry in expand_params(load_params()).items():
        if name.startswith("pid_global_"):
            assert set(pc.MUON_FILLED) <= set(entry["features"]) and not set(pc.MUON) & set(entry["features"])


def test_lhcb_sentinels_are_trained_as_the_runtime_fill(tmp_path, capsys):
    """PIDCalib's -1000 for undefined muon LLs reaches training as the runtime's fill value, not as -1000."""
    def sentinels(cols):
        for m in pc.MUON:
            cols[m][cols[pc.ISMUON] == 0] = -1000.0

    src = write_sample(tmp_path / "calib.root", "pid_calib", 2000, seed=3, modify=sentinels)
    ok(make_params(tmp_path, [src], kind="pid_calib"), tmp_path / "out", capsys)
    df = pd.concat([pq.read_table(tmp_path / "out" / f"{s}.parquet").to_pandas() for s in SPLITS])
    filled = _training_fill(df)[df[pc.ISMUON].to_numpy() == 0]
    assert len(filled) > 100
    np.testing.assert_array_equal(filled, np.broadcast_to(_runtime_fill()[0], filled.shape))
