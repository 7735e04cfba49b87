# Calorimeter (ECAL GNN and Transformer) and ghost-track MLP models: train -> export -> validate, and the ECAL
# comparison page. Paths and resources only; the logic is in flashsim (families ecal_gnn, ecal_transformer,
# ghost_mlp). Torch training rules are the train_* ones (the only rules that may use a GPU).
ECAL_MODELS = [n for n in ["ecal_gnn", "ecal_transformer"] if n in MODEL_CONFIGS]  # those params.yaml defines
GHOST_MODELS = [n for n in ["ghost_mlp"] if n in MODEL_CONFIGS]


rule train_ecal:
    input:
        lambda wc: prepared_splits(wc.name, ["train", "val"]),
    output:
        "results/train/{name}/trained.json",
    wildcard_constraints:
        name="|".join(ECAL_MODELS) or "^$",
    threads: 1
    log:
        "logs/train/{name}.log",
    params:
        rule="train_ecal",
        model=model_params("train"),
    conda:
        "../envs/train.yaml"
    shell:
        "export FLASHSIM_SMK_RULE={params.rule} FLASHSIM_SMK_WILDCARDS='{wildcards}'; flashsim train {wildcards.name} > {log} 2>&1"


rule train_ghost:
    input:
        lambda wc: prepared_splits(wc.name, ["train", "val"]),
    output:
        "results/train/{name}/trained.json",
    wildcard_constraints:
        name="|".join(GHOST_MODELS) or "^$",
    threads: 1
    log:
        "logs/train/{name}.log",
    params:
        rule="train_ghost",
        model=model_params("train"),
    conda:
        "../envs/train.yaml"
    shell:
        "export FLASHSIM_SMK_RULE={params.rule} FLASHSIM_SMK_WILDCARDS='{wildcards}'; flashsim train {wildcards.name} > {log} 2>&1"


rule export_ecal_ghost:
    input:
        "results/train/{name}/trained.json",
        lambda wc: prepared_splits(wc.name, ["test"]),
    output:
        onnx="models/{name}.onnx",
        card="models/{name}.json",
    wildcard_constraints:
        name="|".join(ECAL_MODELS + GHOST_MODELS) or "^$",
    log:
        "logs/export/{name}.log",
    params:
        rule="export_ecal_ghost",
        model=model_params("export"),
    conda:
        "../envs/train.yaml"
    shell:
        "export FLASHSIM_SMK_RULE={params.rule} FLASHSIM_SMK_WILDCARDS='{wildcards}'; flashsim export {wildcards.name} > {log} 2>&1"


rule validate_ecal_ghost:
    input:
        "models/{name}.onnx",
        "models/{name}.json",
        lambda wc: prepared_splits(wc.name, ["test"]),
    output:
        "reports/{name}/metrics.json",
        "reports/{name}/index.html",
    wildcard_constraints:
        name="|".join(ECAL_MODELS + GHOST_MODELS) or "^$",
    log:
        "logs/validate/{name}.log",
    params:
        rule="validate_ecal_ghost",
        model=model_params("validate"),
    conda:
        "../envs/validate.yaml"
    shell:
        "export FLASHSIM_SMK_RULE={params.rule} FLASHSIM_SMK_WILDCARDS='{wildcards}'; flashsim validate {wildcards.name} > {log} 2>&1"


rule ecal_report:
    input:
        expand("reports/{name}/metrics.json", name=ECAL_MODELS),
    output:
        "reports/ecal/index.html",
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
        expand("reports/{name}/index.html", name=GHOST_MODELS),
