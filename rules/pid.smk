# Particle identification per species (params.yaml models pid_*; species list expanded): isMuon classifier, RICH,
# MUON and GlobalPID generators (train_pid: torch, the only PID rule that may use a GPU), then the chained
# per-species pipeline assembled from them (assemble_pid_pipeline, CPU), export -> validate for every model.
# Paths and resources only; the logic is in flashsim (families pid_ismuon, pid_generator, pid_pipeline).
PID_FAMILIES = ("pid_ismuon", "pid_generator")
PID_TORCH = [n for n, e in MODEL_CONFIGS.items() if e["family"] in PID_FAMILIES]
PID_PIPELINES = [n for n, e in MODEL_CONFIGS.items() if e["family"] == "pid_pipeline"]
PID_MODELS = PID_TORCH + PID_PIPELINES


rule train_pid:
    input:
        lambda wc: expand(f"{PREPARED}/{MODEL_CONFIGS[wc.name]['sample']}/{{split}}.parquet", split=["train", "val"]),
    output:
        "results/train/{name}/trained.json",
    wildcard_constraints:
        name="|".join(PID_TORCH) or "^$",
    params:
        rule="train_pid",
        model=model_params("train"),
    threads: 1
    log:
        "logs/train/{name}.log",
    conda:
        "../envs/train.yaml"
    shell:
        "export FLASHSIM_SMK_RULE={params.rule} FLASHSIM_SMK_WILDCARDS='{wildcards}'; FLASHSIM_THREADS={threads} flashsim train {wildcards.name} > {log} 2>&1"


rule assemble_pid_pipeline:
    input:
        lambda wc: [f"results/train/{n}/trained.json" for n in MODEL_CONFIGS[wc.name]["stages"].values()],
    output:
        "results/train/{name}/trained.json",
    wildcard_constraints:
        name="|".join(PID_PIPELINES) or "^$",
    params:
        rule="assemble_pid_pipeline",
        model=model_params("train"),
    threads: 1
    log:
        "logs/train/{name}.log",
    conda:
        "../envs/train.yaml"
    shell:
        "export FLASHSIM_SMK_RULE={params.rule} FLASHSIM_SMK_WILDCARDS='{wildcards}'; FLASHSIM_THREADS={threads} flashsim train {wildcards.name} > {log} 2>&1"


rule export_pid:
    input:
        "results/train/{name}/trained.json",
        lambda wc: f"{PREPARED}/{MODEL_CONFIGS[wc.name]['sample']}/test.parquet",
    output:
        onnx="models/{name}.onnx",
        card="models/{name}.json",
    wildcard_constraints:
        name="|".join(PID_MODELS) or "^$",
    params:
        rule="export_pid",
        model=model_params("export"),
    threads: 1
    log:
        "logs/export/{name}.log",
    conda:
        "../envs/train.yaml"
    shell:
        "export FLASHSIM_SMK_RULE={params.rule} FLASHSIM_SMK_WILDCARDS='{wildcards}'; FLASHSIM_THREADS={threads} flashsim export {wildcards.name} > {log} 2>&1"


rule validate_pid:
    input:
        "models/{name}.onnx",
        "models/{name}.json",
        lambda wc: f"{PREPARED}/{MODEL_CONFIGS[wc.name]['sample']}/test.parquet",
    output:
        "reports/{name}/metrics.json",
        "reports/{name}/index.html",
    wildcard_constraints:
        name="|".join(PID_MODELS) or "^$",
    params:
        rule="validate_pid",
        model=model_params("validate"),
    threads: 1
    log:
        "logs/validate/{name}.log",
    conda:
        "../envs/validate.yaml"
    shell:
        "export FLASHSIM_SMK_RULE={params.rule} FLASHSIM_SMK_WILDCARDS='{wildcards}'; FLASHSIM_THREADS={threads} flashsim validate {wildcards.name} > {log} 2>&1"


rule pid_all:
    input:
        expand("reports/{name}/index.html", name=PID_MODELS),
