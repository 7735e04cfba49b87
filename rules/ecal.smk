# The ECAL comparison page over every ECAL set-to-set model (families ecal_gnn, ecal_transformer):
# reports/ecal/index.html. The models' own train/export/validate rules are the generic ones (rules/models.smk).
ECAL_MODELS = [n for n, e in MODEL_CONFIGS.items() if e["family"] in ("ecal_gnn", "ecal_transformer")]


rule ecal_report:
    input:
        expand("reports/{name}/metrics.json", name=ECAL_MODELS),
    output:
        report("reports/ecal/index.html", category="validation", subcategory="ecal",
               labels={"model": "ECAL comparison", "figure": "page"}),
        *[report(f"reports/ecal/{fig}.png", category="validation", subcategory="ecal",
                 labels={"model": "ECAL comparison", "figure": fig})
          for fig in ("multiplicity", "residuals", "energy_scale")],
    params:
        models=ECAL_MODELS,
    log:
        "logs/validate/ecal_report.log",
    conda:
        "../envs/validate.yaml"
    shell:
        "flashsim ecal-report --models {params.models} > {log} 2>&1"


rule ecal_all:
    input:
        "reports/ecal/index.html" if ECAL_MODELS else [],
