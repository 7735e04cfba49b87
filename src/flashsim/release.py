"""``flashsim release``: a versioned, per-platform bundle of the compiled models.

``dist/flashsim-models-<version>-<platform>.tar.gz`` holds, under one folder: ``models/`` (every ``NAME.onnx``
with its card ``NAME.json``, its shared object ``NAME.so`` and ``NAME.so.json``, and the SQLamarr pipeline
``sqlamarr_pipeline.json``), ``metrics.json`` (each model's validation metrics, ``reports/NAME/metrics.json``),
``MANIFEST.json`` (version, platform, flashsim version, files with size and sha256), ``SHA256SUMS``
(``sha256sum -c`` format) and ``CHANGELOG.md`` (the metrics against the previous release's bundle, when given).
A model without an up-to-date shared object is an error unless ``--build`` compiles it (``flashsim cabi``).
The CI job ``release-bundle`` (tags) runs this; ``release`` attaches the bundle to the GitLab release
(see docs/operations.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import shutil
import sys
import tarfile
from pathlib import Path

from flashsim.errors import ConfigError, InputError

HELP = "build the release bundle of the compiled models (ONNX, .so, cards, SQLamarr pipeline, checksums, changelog)"
log = logging.getLogger(__name__)


def platform_tag() -> str:
    return f"{sys.platform}-{platform.machine()}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _flat(d: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, f"{key}."))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def collect_metrics(names: list[str], reports: Path) -> dict[str, dict[str, float]]:
    """Numeric validation metrics per model (``reports/NAME/metrics.json``, flattened with dots)."""
    out = {}
    for n in names:
        f = reports / n / "metrics.json"
        if f.exists():
            out[n] = _flat(json.loads(f.read_text()))
    return out


def previous_metrics(previous: str | Path | None) -> tuple[str | None, dict]:
    """``(version, metrics)`` of a previous bundle (its .tar.gz or unpacked folder)."""
    if not previous:
        return None, {}
    p = Path(previous)
    if not p.exists():
        raise InputError("no such previous release bundle", file=str(p))
    if p.is_dir():
        manifest, metrics = json.loads((p / "MANIFEST.json").read_text()), json.loads((p / "metrics.json").read_text())
        return manifest["version"], metrics
    with tarfile.open(p) as tar:
        def member(name: str) -> dict:
            m = next((m for m in tar.getmembers() if m.name.endswith(f"/{name}")), None)
            if m is None:
                raise InputError(f"not a flashsim release bundle (no {name})", file=str(p))
            return json.loads(tar.extractfile(m).read())

        return member("MANIFEST.json")["version"], member("metrics.json")


def changelog(version: str, metrics: dict, prev_version: str | None, prev: dict) -> str:
    lines = [f"# flashsim models {version}", ""]
    if prev_version is None:
        lines += ["First release: no previous bundle to compare with.", ""]
    else:
        lines += [f"Validation metrics against {prev_version}.", ""]
    lines += ["| model | metric | previous | this release | change |", "| --- | --- | --- | --- | --- |"]
    for name in sorted(set(metrics) | set(prev)):
        new, old = metrics.get(name, {}), prev.get(name, {})
        for key in sorted(set(new) | set(old)):
            a, b = old.get(key), new.get(key)
            delta = f"{b - a:+.4g}" if a is not None and b is not None else ("new" if a is None else "removed")
            fmt = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
            lines.append(f"| {name} | {key} | {fmt(a)} | {fmt(b)} | {delta} |")
    return "\n".join(lines) + "\n"


def _stale(models: Path, name: str) -> bool:
    so, onnx = models / f"{name}.so", models / f"{name}.onnx"
    return not so.exists() or not Path(f"{so}.json").exists() or so.stat().st_mtime < onnx.stat().st_mtime


def build_bundle(version: str, models: str | Path = "models", reports: str | Path = "reports",
                 out: str | Path = "dist", previous: str | Path | None = None, build: bool = False) -> Path:
    """Write the bundle ``<out>/flashsim-models-<version>-<platform>.tar.gz``; returns its path."""
    from flashsim import __version__
    from flashsim.runtime import export_c

    models, reports, out = Path(models), Path(reports), Path(out)
    names = sorted(p.stem for p in models.glob("*.onnx"))
    if not names:
        raise ConfigError(f"release: no model (.onnx) in {models}")
    stale = [n for n in names if _stale(models, n)]
    if stale and not build:
        raise ConfigError(f"release: no up-to-date shared object for {', '.join(stale)} in {models} (run `flashsim "
                          f"cabi {' '.join(stale)}`, or `flashsim release --build`)")
    for n in stale:
        export_c.build_checked(n, models)
    export_c.write_sqlamarr_config(models)
    prev_version, prev = previous_metrics(previous)
    name = f"flashsim-models-{version}-{platform_tag()}"
    stage = out / name
    if stage.exists():
        shutil.rmtree(stage)
    (stage / "models").mkdir(parents=True)
    for n in names:
        for suffix in (".onnx", ".json", ".so", ".so.json"):
            src = models / f"{n}{suffix}"
            if src.exists():
                shutil.copy2(src, stage / "models" / src.name)
    shutil.copy2(models / "sqlamarr_pipeline.json", stage / "models" / "sqlamarr_pipeline.json")
    metrics = collect_metrics(names, reports)
    (stage / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    (stage / "CHANGELOG.md").write_text(changelog(version, metrics, prev_version, prev))
    files = sorted(p for p in stage.rglob("*") if p.is_file())
    sums = {str(p.relative_to(stage)): _sha256(p) for p in files}
    (stage / "SHA256SUMS").write_text("".join(f"{h}  {f}\n" for f, h in sums.items()))
    manifest = {"version": version, "platform": platform_tag(), "flashsim_version": __version__,
                "previous": prev_version, "models": names,
                "files": {f: {"sha256": h, "bytes": (stage / f).stat().st_size} for f, h in sums.items()}}
    (stage / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    tgz = out / f"{name}.tar.gz"
    tmp = out / f".{name}.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(stage, arcname=name)
    tmp.replace(tgz)
    log.info("release %s (%s): %d models -> %s", version, platform_tag(), len(names), tgz)
    return tgz


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", required=True, help="release version, e.g. the git tag v1.2.0")
    p.add_argument("--models", default="models")
    p.add_argument("--reports", default="reports", help="folder with NAME/metrics.json")
    p.add_argument("--out", default="dist")
    p.add_argument("--previous", help="the previous release's bundle (.tar.gz or folder) for the changelog")
    p.add_argument("--build", action="store_true", help="compile missing or stale shared objects first")


def run(args: argparse.Namespace) -> int:
    build_bundle(args.version, args.models, args.reports, args.out, args.previous, args.build)
    return 0
