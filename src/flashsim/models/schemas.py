"""Each family's hyperparameter schema as data (``family_schemas.json`` next to this module), so that the whole
configuration is checked when the Snakefile loads, without importing torch or any family module.

The JSON is generated from the ``Family`` classes (``COMMON_SCHEMA`` + ``SCHEMA``, ``REQUIRED``)::

    python -m flashsim.models.schemas --write

and ``tests/test_config.py`` fails when it differs from the classes. :func:`flashsim.config.check_entry` is the
one check, used by ``Family.__init__`` (the CLI) and by :func:`check_config` (the Snakefile), so both give the same
one-line message.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from flashsim.config import check_entry
from flashsim.errors import ConfigError

SCHEMAS_FILE = Path(__file__).with_name("family_schemas.json")


def build() -> dict[str, dict[str, Any]]:
    """family -> {properties, required}, from the Family classes (imports every family module: torch)."""
    from flashsim.models import FAMILIES, family_class
    from flashsim.models.base import COMMON_SCHEMA

    out = {}
    for family in sorted(FAMILIES):
        cls = family_class(family)
        out[family] = {"properties": {**COMMON_SCHEMA, **cls.SCHEMA}, "required": list(cls.REQUIRED)}
    return json.loads(json.dumps(out))


def load() -> dict[str, dict[str, Any]]:
    return json.loads(SCHEMAS_FILE.read_text())


def check_config(params: dict[str, Any], schema_path: str | Path | None = None) -> dict[str, Any]:
    """The whole configuration, as the jobs will see it: params.yaml against its schema (defaults filled, in place),
    then every model entry against its family's schema. ConfigError with the CLI's message on the first error."""
    from flashsim.config import validate
    from flashsim.models import FAMILIES, expand_params, get_spec

    validate(params, schema_path)
    schemas = load()
    for name, entry in expand_params(params).items():
        family = entry.get("family")
        if family not in FAMILIES:
            raise ConfigError(f"params.yaml: models/{name}/family: unknown model family {family!r}; known families: "
                              f"{', '.join(sorted(FAMILIES))}")
        spec = get_spec(name, params, root=Path.cwd())
        check_entry(name, spec.cfg, schemas[family]["properties"], schemas[family]["required"])
    return params


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    SCHEMAS_FILE.write_text(json.dumps(build(), indent=1, sort_keys=True) + "\n")
