"""C-ABI deployment artifacts: one shared object per ONNX model with Lamarr's per-particle signature.

Every shared object exports (``SYM`` is the model name) one of SQLamarr's two plugin signatures::

    float* SYM(float* out, const float* in);                      // deterministic models, classifiers (Plugin)
    float* SYM(float* out, const float* in, const float* random);  // generators (GenerativePlugin): in = x,
                                                                   // random = SYM_n_random() standard normals

plus, for both, ``SYM_batch(float* out, const float* in, long n)`` over n packed rows ``[x..., noise...]``
(row-major), ``int SYM_n_in(void)`` (packed width: features + noise), ``int SYM_n_out(void)``,
``int SYM_n_random(void)`` (0 for deterministic models), and for generators ``float* SYM_packed(float* out,
const float* in)`` (the packed two-argument form). Nothing else is exported (``-fvisibility=hidden``), so several
models load into one process. Two compilers, both kept
libraries from PyPI, chosen per graph:

- tree ensembles (``ai.onnx.ml`` TreeEnsemble*): rebuilt as a treelite model from the ONNX attributes
  (:mod:`flashsim.runtime.trees`) and compiled by **tl2cgen** into per-tree if/else code;
- everything else (MLPs with their quantile transforms, GAN generators, chained PID pipelines): **emx-onnx-cgen**
  (ONNX -> portable C99 with static weights, no runtime, no allocation), batch dimension pinned to 1.

A small fixed wrapper maps the generated entry point to the signature above; gcc -O3 builds the .so. Parity
against onnxruntime is measured on every build (:func:`parity`).
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx

from flashsim.errors import ConfigError

CC = "gcc"
# -O3 plus reassociation of float sums, so that dot products vectorise (6-7x faster per particle on the PID
# pipelines, and closer to ONNX Runtime, whose kernels also sum in vector lanes). No -ffinite-math-only: NaN
# (missing values, muon LLs without isMuon) keeps its meaning. Baseline x86-64 code: the .so runs anywhere.
CFLAGS = ("-O3", "-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math", "-std=gnu11", "-fPIC",
          "-fvisibility=hidden")
_EXPORT = '#define FS_EXPORT __attribute__((visibility("default")))\n'


@dataclass
class Artifact:
    """A built shared object and how it was made."""

    so: str
    symbol: str
    route: str  # "tl2cgen" | "emx-onnx-cgen"
    compiler: str  # "<package> <version>"
    n_in: int
    n_out: int
    inputs: list[tuple[str, int]]  # ONNX input name and width, in the order they are packed into `in`
    cflags: list[str]
    n_random: int = 0  # width of the noise input: > 0 makes the entry point SQLamarr's GenerativePlugin form

    @property
    def plugin(self) -> str:
        """SQLamarr's transformer for this entry point: ``GenerativePlugin`` or ``Plugin``."""
        return "GenerativePlugin" if self.n_random else "Plugin"

    @property
    def signature(self) -> str:
        rnd = ", const float* random" if self.n_random else ""
        return f"float* {self.symbol}(float* out, const float* in{rnd})"

    def to_dict(self) -> dict:
        return {**asdict(self), "plugin": self.plugin, "signature": self.signature}


def symbol_for(name: str) -> str:
    """A C identifier for a model name."""
    sym = re.sub(r"\W", "_", name)
    return sym if not sym[:1].isdigit() else f"m_{sym}"


def io_layout(model: onnx.ModelProto) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """``(inputs, outputs)`` as (name, width) of a [N, F] graph; ``x`` is packed first, ``noise`` last."""

    def width(v: onnx.ValueInfoProto) -> int:
        dims = v.type.tensor_type.shape.dim
        if len(dims) != 2 or not dims[1].dim_value:
            raise ConfigError(f"ONNX value '{v.name}' must have shape [N, F] with fixed F for the C ABI")
        return int(dims[1].dim_value)

    inits = {i.name for i in model.graph.initializer}
    ins = [(v.name, width(v)) for v in model.graph.input if v.name not in inits]
    order = {"x": 0, "noise": 2}
    ins.sort(key=lambda t: order.get(t[0], 1))
    outs = []
    for v in model.graph.output:
        if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            outs.append((v.name, width(v)))
        else:
            outs.append((v.name, 0))  # non-float side outputs (labels) are not part of the ABI
    return ins, outs


def _primary_output(outs: list[tuple[str, int]]) -> tuple[str, int]:
    named = [o for o in outs if o[0] == "y"]
    floats = [o for o in outs if o[1] > 0]
    if not (named or floats):
        raise ConfigError("ONNX graph has no float output for the C ABI")
    return (named or floats)[0]


def _version(pkg: str) -> str:
    try:
        return f"{pkg} {metadata.version(pkg)}"
    except metadata.PackageNotFoundError:
        return pkg


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-15:]
        raise ConfigError(f"command failed ({' '.join(cmd[:3])} ...):\n" + "\n".join(tail))


def build(onnx_path: str | Path, so_path: str | Path, *, name: str | None = None, workdir: str | Path | None = None,
          route: str = "auto", cc: str = CC, cflags: tuple[str, ...] = CFLAGS) -> Artifact:
    """Compile ``onnx_path`` into the shared object ``so_path`` (C sources kept in ``workdir``)."""
    from flashsim.runtime import trees

    onnx_path, so_path = Path(onnx_path), Path(so_path)
    name = name or onnx_path.stem
    sym = symbol_for(name)
    workdir = Path(workdir) if workdir else so_path.parent / f".{so_path.stem}_c"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    model = onnx.load(str(onnx_path))
    ins, outs = io_layout(model)
    n_in = sum(w for _, w in ins)
    n_random = sum(w for n, w in ins if n == "noise")
    y_name, n_out = _primary_output(outs)
    use_trees = route == "tl2cgen" or (route == "auto" and trees.find_tree_node(model) is not None)
    if use_trees:
        if len(ins) != 1:
            raise ConfigError(f"{onnx_path}: a tree ensemble takes one input")
        spec, tl_model = trees.spec_and_model(model)
        n_random = 0
        if spec.n_out != n_out:
            raise ConfigError(f"{onnx_path}: tree ensemble has {spec.n_out} columns, output '{y_name}' {n_out}")
        import tl2cgen

        tl2cgen.generate_c_code(tl_model, dirpath=str(workdir / "tl2cgen"), params={}, verbose=False)
        wrapper = workdir / "wrapper.c"
        wrapper.write_text(_tree_wrapper(sym, spec))
        sources = [wrapper, *sorted((workdir / "tl2cgen").glob("*.c"))]
        include = ["-I", str(workdir / "tl2cgen")]
        route_name, compiler = "tl2cgen", _version("tl2cgen")
    else:
        impl = workdir / f"{sym}_model.c"
        pins = [a for n, _ in ins for a in ("--input-dim", f"{n}:0=1")]
        _run([sys.executable, "-m", "emx_onnx_cgen", "compile", str(onnx_path), str(impl), "--model-name",
              f"{sym}_impl", "--large-weight-threshold", "0", "--large-temp-threshold", "0", "--color", "never",
              *pins])
        wrapper = workdir / "wrapper.c"
        wrapper.write_text(_net_wrapper(sym, impl.name, ins, outs, y_name, n_in, n_out))
        sources, include = [wrapper], ["-I", str(workdir)]
        route_name, compiler = "emx-onnx-cgen", _version("emx-onnx-cgen")
    so_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = so_path.with_name(f".{so_path.name}.tmp")
    _run([cc, *cflags, "-shared", *include, "-o", str(tmp), *map(str, sources), "-lm"])
    tmp.replace(so_path)
    return Artifact(so=str(so_path), symbol=sym, route=route_name, compiler=compiler, n_in=n_in, n_out=n_out,
                    inputs=ins, cflags=[*cflags], n_random=n_random)


def _common_exports(sym: str, n_in: int, n_out: int, n_random: int = 0) -> str:
    one = f"{sym}_packed" if n_random else sym
    return f"""
FS_EXPORT int {sym}_n_in(void) {{ return {n_in}; }}
FS_EXPORT int {sym}_n_out(void) {{ return {n_out}; }}
FS_EXPORT int {sym}_n_random(void) {{ return {n_random}; }}
FS_EXPORT void {sym}_batch(float* out, const float* in, long n) {{
  for (long i = 0; i < n; ++i) {one}(out + i * {n_out}, in + i * {n_in});
}}
"""


def _net_wrapper(sym: str, impl: str, ins, outs, y_name: str, n_in: int, n_out: int) -> str:
    """The entry point around ``SYM_impl``: three-argument (GenerativePlugin) when the graph has a ``noise``
    input, which then comes from ``random``; two-argument (Plugin) otherwise."""
    args, decls, off = [], [], 0
    n_random = sum(w for n, w in ins if n == "noise")
    for name, w in ins:
        src = "random" if name == "noise" else f"in + {off}"
        args.append(f"(const float (*)[{w}])({src})")
        off += 0 if name == "noise" else w
    for i, (name, w) in enumerate(outs):
        if name == y_name:
            args.append(f"(float (*)[{w}])out")
        else:  # side outputs the ABI does not return
            ctype = "float" if w else "long long"
            decls.append(f"  {ctype} side{i}[1][{max(w, 1)}];")
            args.append(f"side{i}")
    rnd = ", const float* random" if n_random else ""
    packed = (f"FS_EXPORT float* {sym}_packed(float* out, const float* in) {{\n"
              f"  return {sym}(out, in, in + {n_in - n_random});\n}}\n") if n_random else ""
    return (f"/* flashsim C-ABI wrapper around the emx-onnx-cgen output {impl}. */\n{_EXPORT}"
            f'#include "{impl}"\n\n'
            f"FS_EXPORT float* {sym}(float* out, const float* in{rnd}) {{\n" + "\n".join(decls) + "\n"
            f"  {sym}_impl({', '.join(args)});\n  return out;\n}}\n" + packed
            + _common_exports(sym, n_in, n_out, n_random))


def _tree_wrapper(sym: str, spec) -> str:
    nm, nf = spec.n_margins, spec.n_features
    base = list(spec.base_values) + [0.0] * (nm - len(spec.base_values))
    if len(spec.base_values) > nm:
        raise ConfigError("tree ensemble: more base values than score columns")
    lines = [
        "/* flashsim C-ABI wrapper around the tl2cgen output (margins) with onnxruntime's post transforms. */",
        _EXPORT, "#include <math.h>", '#include "header.h"', "",
        f"static const float BASE[{nm}] = {{{', '.join(repr(float(np.float32(b))) + 'f' for b in base)}}};", "",
        f"FS_EXPORT float* {sym}(float* out, const float* in) {{",
        f"  union Entry e[{nf}];",
        f"  float m[{nm}];",
        f"  for (int i = 0; i < {nf}; ++i) {{ if (isnan(in[i])) e[i].missing = -1; else e[i].fvalue = in[i]; }}",
        f"  for (int j = 0; j < {nm}; ++j) m[j] = 0.0f;",
        "  predict(e, 1, m);",
    ]
    if spec.average:
        lines.append(f"  for (int j = 0; j < {nm}; ++j) m[j] /= {spec.n_trees}.0f;")
    lines.append(f"  for (int j = 0; j < {nm}; ++j) m[j] += BASE[j];")
    post = spec.post_transform
    if spec.kind == "classifier" and nm == 1:  # binary, one score column -> [negative, positive]
        if post == "LOGISTIC":
            lines += ["  out[0] = 1.0f / (1.0f + expf(m[0]));", "  out[1] = 1.0f / (1.0f + expf(-m[0]));"]
        elif post == "NONE":
            lines += ["  out[0] = 1.0f - m[0];" if spec.all_positive else "  out[0] = -m[0];", "  out[1] = m[0];"]
        else:
            raise ConfigError(f"binary tree classifier with post_transform {post} is not supported")
    elif post == "NONE":
        lines.append(f"  for (int j = 0; j < {nm}; ++j) out[j] = m[j];")
    elif post == "LOGISTIC":
        lines.append(f"  for (int j = 0; j < {nm}; ++j) out[j] = 1.0f / (1.0f + expf(-m[j]));")
    else:  # SOFTMAX
        lines += [
            "  float mx = m[0], s = 0.0f;",
            f"  for (int j = 1; j < {nm}; ++j) if (m[j] > mx) mx = m[j];",
            f"  for (int j = 0; j < {nm}; ++j) {{ out[j] = expf(m[j] - mx); s += out[j]; }}",
            f"  for (int j = 0; j < {nm}; ++j) out[j] /= s;",
        ]
    lines += ["  return out;", "}"]
    return "\n".join(lines) + "\n" + _common_exports(sym, spec.n_features, spec.n_out)


class CModel:
    """A loaded C-ABI shared object (ctypes), for parity checks and batch evaluation from Python."""

    def __init__(self, so: str | Path, symbol: str) -> None:
        self.lib = ctypes.CDLL(str(Path(so).resolve()), mode=ctypes.RTLD_LOCAL)
        self.symbol = symbol
        self.n_in = getattr(self.lib, f"{symbol}_n_in")()
        self.n_out = getattr(self.lib, f"{symbol}_n_out")()
        self._batch = getattr(self.lib, f"{symbol}_batch")
        self._batch.restype = None
        self._batch.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.n_in:
            raise ValueError(f"{self.symbol}: expected [N, {self.n_in}] input, got {rows.shape}")
        out = np.empty((rows.shape[0], self.n_out), np.float32)
        self._batch(out.ctypes.data, rows.ctypes.data, rows.shape[0])
        return out


def onnx_reference(onnx_path: str | Path, rows: np.ndarray, inputs: list[tuple[str, int]],
                   y_name: str = "y") -> np.ndarray:
    """onnxruntime's output for packed ``rows`` (split back into the graph's inputs)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    feed, off = {}, 0
    for name, w in inputs:
        feed[name] = np.ascontiguousarray(rows[:, off:off + w], dtype=np.float32)
        off += w
    names = [o.name for o in sess.get_outputs()]
    out = sess.run([y_name if y_name in names else names[-1]], feed)[0]
    return np.asarray(out, np.float32)


def parity(art: Artifact, onnx_path: str | Path, rows: np.ndarray) -> dict:
    """Max absolute and relative deviation of the shared object from onnxruntime on ``rows``."""
    ours = CModel(art.so, art.symbol)(rows)
    ref = onnx_reference(onnx_path, rows, art.inputs)
    diff = np.abs(ours.astype(np.float64) - ref)
    both_nan = np.isnan(ours) & np.isnan(ref)
    diff[both_nan] = 0.0
    rel = diff / np.maximum(np.abs(ref), 1e-6)
    col_scale = np.maximum(np.nanmax(np.abs(ref), axis=0, initial=0.0), 1e-30)
    scaled = np.nan_to_num(diff / col_scale, nan=0.0)
    return {"rows": int(rows.shape[0]), "max_abs": float(np.nanmax(diff, initial=0.0)),
            "scale": float(np.nanmax(np.abs(ref), initial=0.0)),
            "max_scaled": float(scaled.max(initial=0.0)),
            "p999_scaled": float(np.quantile(scaled, 0.999, axis=0).max()) if len(scaled) else 0.0,
            "median_scaled": float(np.median(scaled, axis=0).max()) if len(scaled) else 0.0,
            "max_rel": float(np.nanmax(rel, initial=0.0)), "nan_mismatch": int(np.sum(np.isnan(ours) != np.isnan(ref)))}


def parity_rows(onnx_path: str | Path, inputs: list[tuple[str, int]], n: int, rng: np.random.Generator,
                x: np.ndarray | None = None) -> np.ndarray:
    """Inputs for a parity check: ``x`` rows (or threshold rows for trees, else normals) and normal noise.

    For tree ensembles the rows also put features exactly on split thresholds and one ULP either side.
    """
    from flashsim.runtime import trees

    model = onnx.load(str(onnx_path))
    node = trees.find_tree_node(model)
    cols = []
    for name, w in inputs:
        if name == "noise":
            cols.append(rng.standard_normal((n, w)).astype(np.float32))
            continue
        if x is not None:
            base = np.asarray(x, np.float32)[rng.integers(0, len(x), n)]
        elif node is not None:
            base = _threshold_rows(node, w, n, rng)
        else:
            base = rng.standard_normal((n, w)).astype(np.float32)
        if node is not None and x is not None:  # half of the rows on thresholds
            half = n // 2
            base[:half] = _threshold_rows(node, w, half, rng, like=base[half:])
        cols.append(base)
    return np.concatenate(cols, axis=1)


def _threshold_rows(node: onnx.NodeProto, w: int, n: int, rng: np.random.Generator,
                    like: np.ndarray | None = None) -> np.ndarray:
    from flashsim.runtime.trees import node_attributes

    a = node_attributes(node)
    vals = np.asarray(a.get("nodes_values") or a.get("nodes_values_as_tensor"), np.float32)
    feats = np.asarray(a["nodes_featureids"])
    leaf = np.asarray(a["nodes_modes"]) == "LEAF"
    out = np.empty((n, w), np.float32)
    for f in range(w):
        thr = vals[(feats == f) & ~leaf]
        if thr.size == 0:
            out[:, f] = like[rng.integers(0, len(like), n), f] if like is not None and len(like) else 0.0
            continue
        pick = thr[rng.integers(0, thr.size, n)]
        ulp = rng.integers(-1, 2, n)  # on, just below or just above the threshold
        out[:, f] = np.where(ulp == 0, pick, np.nextafter(pick, np.where(ulp > 0, np.inf, -np.inf).astype(np.float32)))
    return out


def checker_source() -> Path:
    """The tiny C program that dlopens a C-ABI shared object (see ``cabi_check.c``)."""
    return Path(__file__).with_name("cabi_check.c")


def build_checker(out: str | Path, cc: str = CC) -> Path:
    """Compile ``cabi_check.c`` into ``out`` and return its path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _run([cc, "-O2", "-std=gnu11", "-o", str(out), str(checker_source()), "-ldl", "-lm"])
    return out
