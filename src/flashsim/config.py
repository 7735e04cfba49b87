"""Load ``params.yaml``, validate it against ``schemas/params.schema.yaml`` and fill defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from flashsim.errors import ConfigError

SCALES = ("demo", "full")


def repo_root() -> Path:
    """The repository root: the nearest parent of the working directory holding ``params.yaml``."""
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / "params.yaml").exists() and (d / "schemas").is_dir():
            return d
    return here


def default_schema() -> Path:
    """``schemas/params.schema.yaml`` of the repository in the working directory, else of this checkout."""
    for root in (repo_root(), Path(__file__).resolve().parents[2]):
        if (root / "schemas" / "params.schema.yaml").exists():
            return root / "schemas" / "params.schema.yaml"
    raise ConfigError("cannot find schemas/params.schema.yaml (run from the repository root)")


def default_filling_validator():
    """A JSON-schema validator class that fills each ``default`` of the schema into the instance."""
    import jsonschema

    base = jsonschema.Draft202012Validator

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub:
                    instance.setdefault(name, _copy(sub["default"]))
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})


def _copy(value: Any) -> Any:
    return yaml.safe_load(yaml.safe_dump(value))


def validate(params: dict, schema_path: str | Path | None = None) -> dict:
    """Validate ``params`` in place (defaults filled) and return it; raise ConfigError naming the key."""
    schema_path = Path(schema_path) if schema_path else default_schema()
    schema = yaml.safe_load(schema_path.read_text())
    validator = default_filling_validator()(schema)
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "<top>"
        raise ConfigError(f"params.yaml: {where}: {e.message}")
    return params


def load_params(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Read, merge ``overrides`` (nested dict) and validate a params file."""
    path = Path(path) if path else repo_root() / "params.yaml"
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from err
    if overrides:
        params = merge(params, overrides)
    schema = path.parent / "schemas" / "params.schema.yaml"  # a params file outside the repo uses the repo's
    return validate(params, schema if schema.exists() else None)


def merge(base: dict, extra: dict) -> dict:
    """Recursive dict merge (``extra`` wins); returns a new dict."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def at_scale(value: Any, scale: str) -> Any:
    """Resolve a ``{demo: x, full: y}`` mapping to the value for ``scale``; other values pass through."""
    if isinstance(value, dict) and set(value) <= set(SCALES) and scale in value:
        return value[scale]
    return value


def resolve_scale(tree: Any, scale: str) -> Any:
    """Apply :func:`at_scale` recursively through a params subtree."""
    tree = at_scale(tree, scale)
    if isinstance(tree, dict):
        return {k: resolve_scale(v, scale) for k, v in tree.items()}
    if isinstance(tree, list):
        return [resolve_scale(v, scale) for v in tree]
    return tree


def flatten(tree: dict, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Flatten a nested dict into ``{"a.b.c": value}`` (for MLflow params and model cards)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key, sep))
        else:
            out[key] = v
    return out


def check_entry(name: str, cfg: dict[str, Any], properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """Validate a model's resolved entry (``ModelSpec.cfg``) against its family's schema (unknown keys are errors);
    return a copy with the defaults filled; ConfigError ``params.yaml: models/NAME/KEY: message``."""
    schema = {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}
    cfg = json.loads(json.dumps(cfg))
    errors = sorted(default_filling_validator()(schema).iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path)
        raise ConfigError(f"params.yaml: models/{name}{'/' + where if where else ''}: {e.message}")
    return cfg
