# Tracking models (acceptance GBDT, efficiency MLP, resolution and covariance generators): train -> export ->
# validate. Paths and resources only; the logic is in flashsim (families lgbm_classifier, mlp_classifier,
# generator, covariance; columns in flashsim.models.tracking). Torch training is the train_tracking rule (the only
# one here that may use a GPU); the LightGBM acceptance is fitted by fit_tracking_gbdt on the CPU.
TRACKING_GBDT = [n for n in ["acceptance"] if n in MODEL_CONFIGS]
TRACKING_TORCH = [n for n in ["efficiency", "resolution", "covariance"] if n in MODEL_CONFIGS]
TRACKING_MODELS = TRACKING_GBDT + TRACKING_TORCH


rule fit_tracking_gbdt:
    input:
        lambda wc: expand(f"{PREPARED}/{MODEL_CONFIGS[wc.name]['sample']}/{{split}}.parquet", split=["train", "val"]),
    output:
        "results/train/{name}/trained.json",
    wildcard_constraints:
        name="|".join(TRACKING_GBDT) or "^$",
    params:
        rule="fit_tracking_gbdt",
        model=model_params("train"),
    threads: 1
    log:
        "logs/train/{name}.log",
    conda:
        "../envs/train.yaml"
    shell:
        "export FLASHSIM_SMK_RULE={params.rule} FLASHSIM_SMK_WILDCARDS='{wildcards}'; FLASHSIM_THREADS={threads} flashsim train {wildcards.name} > {log} 2>&1"


rule train_tracking:
    input:
        lambda wc: expand(f"{PREPARED}/{MODEL_CONFIGS[wc.name]['sample']}/{{split}}.parquet", split=["train", "val"]),
    output:
        "results/train/{name}/trained.json",
    wildcard_constraints:
        name="|".join(TRACKING_TORCH) or "^$",
    params:
        rule="train_tracking",
        model=model_params("train"),
    threads: 1
    log:
        "logs/train/{name}.log",
    conda:
        "../envs/train.yaml"
    shell:
        "export FLASHSIM_SMK_RULE={params.rule} FLASHSIM_SMK_WILDCARDS='{wildcards}'; FLASHSIM_THREADS={threads} flashsim train {wildcards.name} > {log} 2>&1"


rule export_tracking:
    input:
        "results/train/{name}/trained.json",
        lambda wc: f"{PREPARED}/{MODEL_CONFIGS[wc.name]['sample']}/test.parquet",
    output:
        onnx="models/{name}.onnx",
        card="models/{name}.json",
    wildcard_constraints:
        name="|".join(TRACKING_MODELS) or "^$",
    params:
        rule="export_tracking",
        model=model_params("export"),
    threads: 1
    log:
        "logs/export/{name}.log",
    conda:
        "../envs/train.yaml"
    shell:
        "export FLASHSIM_SMK_RULE={params.rule} FLASHSIM_SMK_WILDCARDS='{wildcards}'; FLASHSIM_THREADS={threads} flashsim export {wildcards.name} > {log} 2>&1"


rule validate_tracking:
    input:
        "models/{name}.onnx",
        "models/{name}.json",
        lambda wc: f"{PREPARED}/{MODEL_CONFIGS[wc.name]['sample']}/test.parquet",
    output:
        "reports/{name}/metrics.json",
        "reports/{name}/index.html",
    wildcard_constraints:
        name="|".join(TRACKING_MODELS) or "^$",
    params:
        rule="validate_tracking",
        model=model_params("validate"),
    threads: 1
    log:
        "logs/validate/{name}.log",
    conda:
        "../envs/validate.yaml"
    shell:
        "export FLASHSIM_SMK_RULE={params.rule} FLASHSIM_SMK_WILDCARDS='{wildcards}'; FLASHSIM_THREADS={threads} flashsim validate {wildcards.name} > {log} 2>&1"


rule tracking_all:
    input:
        expand("reports/{name}/index.html", name=TRACKING_MODELS),
