"""Checkpoints keyed by configuration: a stale checkpoint is not resumed into a different model."""

from __future__ import annotations

from flashsim.training import Checkpointer


def test_checkpoint_of_another_configuration_is_ignored(tmp_path):
    Checkpointer(tmp_path, key="width=48").save({"epoch": 3, "state": {"w": 1}})
    assert Checkpointer(tmp_path, key="width=64").load() is None
    assert Checkpointer(tmp_path, key="width=48").load()["epoch"] == 3
    assert Checkpointer(tmp_path).load()["epoch"] == 3  # unkeyed readers keep the old behaviour


def test_family_key_changes_with_the_configuration_but_not_the_epochs(tmp_path, monkeypatch):
    from helpers import scratch_repo

    from flashsim.models import get_family, get_spec

    def key(**over):
        root = scratch_repo(tmp_path / str(len(over)) / "_".join(map(str, over.values())),
                            {"m": {"family": "ecal_gnn", "sample": "ecal", **over}})
        monkeypatch.chdir(root)
        return get_family(get_spec("m")).checkpointer().key

    base = key()
    assert key(epochs=99) == base
    assert key(width=32) != base
