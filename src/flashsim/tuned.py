"""Tuned overrides: the best parameters of a study (`flashsim tune`) as a reviewed, versioned file ``tuned/NAME.yaml``.

``flashsim tune NAME`` writes a proposal to ``results/tune/NAME/override.yaml``; ``flashsim tune NAME --accept``
(after review) copies it to ``tuned/NAME.yaml``, which is committed with the code. Every reader of the models
(:func:`flashsim.models.expand_params`: the Snakefile, ``flashsim train|export|validate``) merges ``params`` of
``tuned/NAME.yaml`` over the expanded entry ``NAME``, so the workflow's params rerun trigger reruns only that
model's jobs. The file records the study, the trial and the objective value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from flashsim.errors import ConfigError

TUNED_DIR = "tuned"
HEADER = ("# Tuned override written by `flashsim tune` and accepted by review; merged over params.yaml models/{name}\n"
          "# by flashsim.models.expand_params. Delete this file to go back to params.yaml's values.\n")


def override_path(root: Path, name: str) -> Path:
    return Path(root) / TUNED_DIR / f"{name}.yaml"


def read_override(path: Path) -> dict[str, Any]:
    """A tuned override file; ConfigError naming the file when it is malformed."""
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the tuned override: {err}") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("params"), dict) or not doc["params"]:
        raise ConfigError(f"{path}: a tuned override needs a non-empty `params` mapping")
    if doc.get("model") != path.stem:
        raise ConfigError(f"{path}: `model: {doc.get('model')}` does not match the file name")
    return doc


def apply_overrides(models: dict[str, dict], root: Path) -> dict[str, dict]:
    """``models`` (expanded entries) with the ``params`` of each ``tuned/NAME.yaml`` merged over entry ``NAME``."""
    folder = Path(root) / TUNED_DIR
    if not folder.is_dir():
        return models
    for path in sorted(folder.glob("*.yaml")):
        doc = read_override(path)
        if path.stem not in models:
            raise ConfigError(f"{path}: no model {path.stem!r} in params.yaml models")
        models[path.stem] = {**models[path.stem], **doc["params"]}
    return models


def write_proposal(path: Path, name: str, params: dict[str, Any], record: dict[str, Any]) -> Path:
    """Write the override proposal (``params`` + the study record) to ``path``."""
    from flashsim.io.atomic import atomic_output

    doc = {"model": name, "params": params, **record}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        Path(tmp).write_text(HEADER.format(name=name) + yaml.safe_dump(doc, sort_keys=False))
    return path
