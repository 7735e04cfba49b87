"""``flashsim physics-check``: the end-to-end physics check, flash simulation vs reference detector simulation.

Both samples hold the same generated Lb0 -> Lc+ mu- nu (Lc+ -> p K- pi+) decays (the flash one made by
``flashsim simulate signal`` from the reference file's generator-level columns). Compared, with the shared
metrics of :mod:`flashsim.validation` (two-sample classifier AUC, KS): the Lc+ and visible Lb0 masses of the
reconstructed candidates, the impact parameters of the final-state tracks and their chi2, the reconstruction
fractions, and PID cut efficiencies in bins of momentum. Writes ``metrics.json``, PNG plots and ``index.html``
to ``reports/physics_check/``; gates from ``params.yaml`` (``physics_check.gates``) are evaluated and, with
``physics_check.enforce_gates``, enforced; ``--break`` (:mod:`flashsim.runtime.breaks`) tests them.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from flashsim.detector import TRACK_TYPES
from flashsim.runtime import breaks, physics

HELP = "compare a flash-simulated signal sample with the reference detector simulation (reports/physics_check/)"
log = logging.getLogger(__name__)

NEEDED = ("evtNumber", "signal_role", "type", "p", "x_ClosestToBeam", "y_ClosestToBeam", "z_ClosestToBeam",
          "tx_ClosestToBeam", "ty_ClosestToBeam", "pv_x", "pv_y", "pv_z", "mc_px", "mc_py", "mc_pz")
OPTIONAL = ("chi2PerDoF", "ghostProb", "nDoF", "isMuon", "RichDLLk", "RichDLLp", "PIDK", "PIDp", "PIDmu",
            "ProbNNk", "ProbNNp", "ProbNNpi", "ProbNNmu",
            *(f"cov_ClosestToBeam_{i}_{j}" for i in range(5) for j in range(i, 5)))


def read(path: str, tree: str | None, branches: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """The signal-contract columns of a file (``branches``: contract name -> name in the file)."""
    from flashsim.runtime.io import contract_branches, open_tree

    with open_tree(path, tree) as (t, name):
        want = contract_branches(t, path, name, dict(branches or {}), NEEDED, NEEDED + OPTIONAL)
        arrays = t.arrays(list(want.values()), library="np")
    return {c: np.asarray(arrays[b]) for c, b in want.items()}


def analyse(cols: dict[str, np.ndarray], track_types: tuple[int, ...]) -> dict:
    """Everything the comparison needs from one sample."""
    cand = physics.candidates(cols, track_types)
    ip, ipchi2 = physics.impact_parameters(cols)
    rows = cand.rows.reshape(-1)
    return {"cand": cand, "ip": ip[rows], "ipchi2": ipchi2[rows], "role": np.asarray(cols["signal_role"])[rows],
            "type": np.asarray(cols["type"])}


def _stat(fn, a: np.ndarray) -> float:
    return float(fn(a)) if len(a) else float("nan")


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """KS distance of the finite values (NaN when either sample has none)."""
    from flashsim.validation import weighted_ks

    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    return weighted_ks(a, b) if len(a) and len(b) else float("nan")


def _auc(a: np.ndarray, b: np.ndarray, seed: int) -> float:
    from flashsim.validation import two_sample_auc

    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    a, b = a[np.all(np.isfinite(a), 1)], b[np.all(np.isfinite(b), 1)]
    if min(len(a), len(b)) < 50:
        return float("nan")
    return two_sample_auc(a, b, seed=seed, n_estimators=100)


def width_ratio(ref: np.ndarray, flash: np.ndarray, key: str) -> dict[str, float]:
    """Width of a mass peak, flash over reference: the standard deviations' ratio with its uncertainty (each
    std's relative error ``sqrt((kurtosis - 1) / 4n)``, in quadrature), ``|ratio - 1|``, and a robust ratio
    (1.4826 x the median absolute deviation) that the tails do not move."""
    def rel_err(a: np.ndarray) -> float:
        s2 = np.var(a)
        return float(np.sqrt(max(np.mean((a - a.mean()) ** 4) / s2**2 - 1.0, 0.0) / (4 * len(a))))

    def mad(a: np.ndarray) -> float:
        return float(1.4826 * np.median(np.abs(a - np.median(a))))

    ref, flash = np.asarray(ref, float), np.asarray(flash, float)
    ref, flash = ref[np.isfinite(ref)], flash[np.isfinite(flash)]
    if min(len(ref), len(flash)) < 10:
        return {f"{key}.width_ratio": float("nan"), f"{key}.width_ratio_err": float("nan"),
                f"{key}.width_ratio_dev": float("nan"), f"{key}.robust_width_ratio": float("nan")}
    r = float(np.std(flash) / np.std(ref))
    return {f"{key}.width_ratio": r, f"{key}.width_ratio_err": r * float(np.hypot(rel_err(ref), rel_err(flash))),
            f"{key}.width_ratio_dev": abs(r - 1.0), f"{key}.robust_width_ratio": mad(flash) / mad(ref)}


def compare(ref: dict[str, np.ndarray], flash: dict[str, np.ndarray], outdir: Path, *, track_types=(3,),
            p_edges=(2000, 5000, 10000, 20000, 50000, 200000), pid_cuts=(), seed: int = 0,
            plots: bool = True) -> tuple[dict, list[Path]]:
    """Metrics and plots of flash vs reference; returns ``(metrics, plot paths)``."""
    track_types = tuple(track_types)
    r, f = analyse(ref, track_types), analyse(flash, track_types)
    rc, fc = r["cand"], f["cand"]
    m: dict = {"n_decays_reference": rc.n_decays, "n_decays_flash": fc.n_decays,
               "candidate_fraction_reference": len(rc.m_lc) / max(rc.n_decays, 1),
               "candidate_fraction_flash": len(fc.m_lc) / max(fc.n_decays, 1)}
    m["candidate_fraction_ratio"] = m["candidate_fraction_flash"] / max(m["candidate_fraction_reference"], 1e-12)
    for label, code in TRACK_TYPES.items():
        m[f"type_fraction.{label}.reference"] = float(np.mean(r["type"] == code))
        m[f"type_fraction.{label}.flash"] = float(np.mean(f["type"] == code))
    for key, a, b in (("m_lc", rc.m_lc, fc.m_lc), ("m_lb_visible", rc.m_lb_visible, fc.m_lb_visible)):
        m[f"{key}.ks"] = _ks(a, b)
        m[f"{key}.auc"] = _auc(a, b, seed)
        m[f"{key}.mean_reference"], m[f"{key}.mean_flash"] = _stat(np.mean, a), _stat(np.mean, b)
        m[f"{key}.std_reference"], m[f"{key}.std_flash"] = _stat(np.std, a), _stat(np.std, b)
    m.update(width_ratio(rc.m_lc, fc.m_lc, "m_lc"))
    m["masses.auc"] = _auc(np.stack([rc.m_lc, rc.m_lb_visible], 1), np.stack([fc.m_lc, fc.m_lb_visible], 1), seed)
    lr, lf = np.log10(np.maximum(r["ipchi2"], 1e-12)), np.log10(np.maximum(f["ipchi2"], 1e-12))
    m["ip.ks"] = _ks(r["ip"], f["ip"])
    m["log10_ipchi2.ks"] = _ks(lr, lf)
    m["ip_ipchi2.auc"] = _auc(np.stack([r["ip"], lr], 1), np.stack([f["ip"], lf], 1), seed)
    for role, sp in physics.ROLE_SPECIES.items():
        m[f"ip.ks.{sp}"] = _ks(r["ip"][r["role"] == role], f["ip"][f["role"] == role])
        m[f"log10_ipchi2.ks.{sp}"] = _ks(lr[r["role"] == role], lf[f["role"] == role])
    # PID cut efficiencies vs momentum
    edges = np.asarray(p_edges, float)
    pid_table, chi2s = [], []
    for entry in pid_cuts:
        sp, cut = entry["species"], entry["cut"]
        var = physics.parse_cut(cut)[0]
        if var not in ref or var not in flash:
            continue
        er, sr, nr = physics.cut_efficiency(ref, physics.pid_rows(ref, sp, track_types), cut, edges)
        ef, sf, nf = physics.cut_efficiency(flash, physics.pid_rows(flash, sp, track_types), cut, edges)
        ok = (nr > 0) & (nf > 0)
        pull = np.where(ok, (ef - er) / np.sqrt(sr**2 + sf**2), np.nan)
        chi2 = float(np.sum(pull[ok] ** 2) / max(ok.sum(), 1))
        chi2s.append(chi2)
        pid_table.append({"species": sp, "cut": cut, "eff_reference": er, "err_reference": sr, "eff_flash": ef,
                          "err_flash": sf, "n_reference": nr, "n_flash": nf, "pull": pull, "chi2_ndf": chi2})
        key = f"pid.{sp}.{cut.replace(' ', '')}"
        m[f"{key}.chi2_ndf"] = chi2
        m[f"{key}.max_abs_diff"] = float(np.nanmax(np.abs(er - ef)[ok], initial=0.0))
        m[f"{key}.max_pull"] = float(np.max(np.abs(pull[ok]), initial=0.0))
    m["pid.chi2_ndf_mean"] = float(np.mean(chi2s)) if chi2s else float("nan")
    m["pid.chi2_ndf_max"] = float(np.max(chi2s)) if chi2s else float("nan")
    m["pid.max_pull"] = max((v for k, v in m.items() if k.endswith(".max_pull")), default=float("nan"))
    m["pid.bins_over_3sigma"] = int(sum(np.sum(np.abs(row["pull"][np.isfinite(row["pull"])]) > 3)
                                        for row in pid_table)) if pid_table else float("nan")
    m["pid.max_abs_diff"] = max((v for k, v in m.items() if k.endswith(".max_abs_diff")), default=float("nan"))
    paths = _plots(ref, flash, r, f, pid_table, edges, track_types, outdir) if plots else []
    m["pid_table"] = [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in row.items()}
                      for row in pid_table]
    m["p_edges"] = edges.tolist()
    return m, paths


def _plots(ref, flash, r, f, pid_table, edges, track_types, outdir: Path) -> list[Path]:
    from flashsim.validation import plot_distributions
    from flashsim.validation.report import pyplot, save_figure

    out = []
    FLASH = ("reference", "flash")  # the legend labels of every overlay
    rc, fc = r["cand"], f["cand"]
    if not (len(rc.m_lc) and len(fc.m_lc)):
        log.warning("no reconstructed candidates in one of the samples: no plots")
        return out
    out.append(plot_distributions(np.stack([rc.m_lc, rc.m_lb_visible], 1), np.stack([fc.m_lc, fc.m_lb_visible], 1),
                                  ["m(pK-pi+)", "m(pK-pi+mu-)"], outdir / "masses.png", ["MeV/c^2", "MeV/c^2"],
                                  title="Lc+ and visible Lb0 masses (reference vs flash)", labels=FLASH))
    lr, lf = np.log10(np.maximum(r["ipchi2"], 1e-12)), np.log10(np.maximum(f["ipchi2"], 1e-12))
    names, ra, fa = [], [], []
    for role, sp in physics.ROLE_SPECIES.items():
        names += [f"IP({sp})", f"log10 IPchi2({sp})"]
        ra += [r["ip"][r["role"] == role], lr[r["role"] == role]]
        fa += [f["ip"][f["role"] == role], lf[f["role"] == role]]
    n = min(min(len(a) for a in ra), min(len(a) for a in fa))
    out.append(plot_distributions(np.stack([a[:n] for a in ra], 1), np.stack([a[:n] for a in fa], 1), names,
                                  outdir / "impact_parameters.png", ["mm", "1"] * 4,
                                  title="impact parameters w.r.t. the PV and their chi2", labels=FLASH))
    track = [c for c in ("p", "chi2PerDoF", "ghostProb", "nDoF") if c in ref and c in flash]
    sel_r = np.isin(np.asarray(ref["type"]), track_types)
    sel_f = np.isin(np.asarray(flash["type"]), track_types)
    k = min(sel_r.sum(), sel_f.sum())
    if track and k:
        out.append(plot_distributions(np.stack([np.asarray(ref[c])[sel_r][:k] for c in track], 1),
                                      np.stack([np.asarray(flash[c])[sel_f][:k] for c in track], 1), track,
                                      outdir / "tracks.png", title="reconstructed track quantities",
                                      labels=FLASH))
    if pid_table:
        plt = pyplot()
        ncol = min(len(pid_table), 3)
        nrow = (len(pid_table) + ncol - 1) // ncol
        fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 3.2 * nrow), squeeze=False)
        centres = np.sqrt(edges[:-1] * edges[1:]) / 1000
        for i, row in enumerate(pid_table):
            ax = axes[i // ncol][i % ncol]
            ax.errorbar(centres, row["eff_reference"], row["err_reference"], fmt="o", ms=4, label="reference")
            ax.errorbar(centres * 1.06, row["eff_flash"], row["err_flash"], fmt="s", ms=4, mfc="none",
                        label="flash")
            ax.set_xscale("log")
            ax.set_xlim(edges[0] / 1000, edges[-1] / 1000)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("p [GeV/c]")
            ax.set_title(f"{row['species']}: {row['cut']} (chi2/ndf {row['chi2_ndf']:.2g})", fontsize=9)
            if i == 0:
                ax.legend()
        for j in range(len(pid_table), nrow * ncol):
            axes[j // ncol][j % ncol].set_visible(False)
        fig.tight_layout()
        out.append(save_figure(fig, outdir / "pid_efficiencies.png"))
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", help="reference file (default: params inputs.<physics_check.sample>)")
    p.add_argument("--reference-tree", help="tree of the reference file (default: the sample's)")
    p.add_argument("--flash", help="flash-simulated file (default: params physics_check.flash)")
    p.add_argument("--outdir", help="report directory (default: reports/physics_check, with --break "
                   "reports/physics_check_broken/KIND)")
    p.add_argument("--break", dest="break_kind", choices=sorted(breaks.BREAKS),
                   help="break the flash sample deliberately (flashsim.runtime.breaks) to test the gates: exit 3 "
                        "when the broken sample still passes every gate")
    p.add_argument("--params", help="params file (default: params.yaml)")


def run(args: argparse.Namespace) -> int:
    from flashsim.config import load_params, resolve_scale
    from flashsim.errors import ConfigError
    from flashsim.io.atomic import write_json
    from flashsim.io.contract import SIGNAL
    from flashsim.runtime.simulate import OUT_TREE
    from flashsim.validation import enforce, evaluate_gates, page_header, write_index, write_model_page

    params = load_params(args.params)
    scale = params["scale"]
    cfg = resolve_scale(params.get("physics_check", {}), scale)
    edges = list(cfg["p_edges"])
    if np.any(np.diff(edges) <= 0):
        raise ConfigError(f"params.yaml: physics_check/p_edges: must increase, got {edges}")
    sample = cfg.get("sample", "signal")
    spec = params.get("inputs", {}).get(sample, {})
    ref_file = args.reference or spec.get("files", [f"data/raw/{sample}.root"])[0]
    ref = read(ref_file, args.reference_tree or spec.get("tree") or SIGNAL.tree,
               None if args.reference else spec.get("branches"))
    flash = read(args.flash or cfg.get("flash", f"results/flash/{sample}.root"), OUT_TREE)
    if args.break_kind:
        flash = breaks.apply(flash, args.break_kind, seed=int(params["seed"]))
    outdir = Path(args.outdir or (f"reports/physics_check_broken/{args.break_kind}" if args.break_kind
                                  else "reports/physics_check"))
    metrics, plots = compare(ref, flash, outdir, track_types=tuple(cfg.get("track_types", [3])),
                             p_edges=edges,
                             pid_cuts=cfg.get("pid_cuts", []), seed=int(params["seed"]))
    gate_cfg = dict((params.get("physics_check", {}).get("gates") or {}).get(scale, {}))
    if not metrics["pid_table"]:  # no PID model in the chain yet: its gates are not evaluated (not failed)
        skipped = sorted(k for k in gate_cfg if k.startswith("pid."))
        gate_cfg = {k: v for k, v in gate_cfg.items() if k not in skipped}
        if skipped:
            metrics["not_evaluated"] = f"{', '.join(skipped)}: the flash sample has no PID columns"
    gates = evaluate_gates({k: v for k, v in metrics.items() if isinstance(v, int | float)}, gate_cfg)
    broken = {"break": args.break_kind} if args.break_kind else {}
    write_json(outdir / "metrics.json", {"family": "physics_check", "scale": scale, **broken, "gates": gates,
                                         **metrics})
    title = "physics check: flash vs reference (Lb0 -> Lc+ mu- nu)"
    write_model_page(outdir, f"{title}, flash broken: {args.break_kind}" if args.break_kind else title, metrics,
                     gates, plots, header=page_header("physics_check", scale,
                                                      family="flash chain vs detailed simulation"))
    if args.break_kind:
        failed = [g["metric"] for g in gates if not g["passed"]]
        log.info("physics check of the broken (%s) sample: gates failed: %s -> %s", args.break_kind,
                 ", ".join(failed) or "none", outdir)
        if not failed:
            log.error("the physics-check gates do not see the %s break: every gate passed", args.break_kind)
            return 3
        return 0
    write_index(outdir.parent)
    log.info("physics check: Lc mass KS %.3f, width ratio %.3f, AUC(masses) %.3f, IP KS %.3f, PID chi2/ndf mean "
             "%.2f max %.2f -> %s", metrics["m_lc.ks"], metrics["m_lc.width_ratio"], metrics["masses.auc"],
             metrics["ip.ks"], metrics["pid.chi2_ndf_mean"], metrics["pid.chi2_ndf_max"], outdir)
    if cfg.get("enforce_gates"):
        enforce("physics_check", gates)
    return 0
