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


# MLflow: one parent run per invocation (flashsim/workflow), the model runs of its jobs are its children
# (flashsim.mlops.workflow; FLASHSIM_PARENT_RUN reaches the jobs through the environment).
from flashsim.mlops import workflow as mlflow_workflow


onstart:
    mlflow_workflow.start_parent(Path(workflow.basedir))


onsuccess:
    mlflow_workflow.finish_parent("FINISHED", Path(workflow.basedir))


onerror:
    mlflow_workflow.finish_parent("FAILED", Path(workflow.basedir))
