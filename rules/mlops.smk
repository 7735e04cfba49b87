# DVC metrics and plots over every model: reports/metrics.json, reports/summary.csv, reports/training/<NAME>.csv
# (dvc.yaml `metrics:` and `plots:`). Runs after every model's validation.


rule summarize:
    input:
        expand("reports/{name}/metrics.json", name=MODEL_CONFIGS),
    output:
        metrics="reports/metrics.json",
        summary="reports/summary.csv",
    params:
        models=list(MODEL_CONFIGS),
    log:
        "logs/summarize.log",
    conda:
        "../envs/data.yaml"
    shell:
        "flashsim summarize {params.models} > {log} 2>&1"
