# Model rules, chosen by how the model's family trains (flashsim.models.FAMILIES `trains`): train_torch (torch: the
# only rule that may ask for a GPU), fit_cpu (LightGBM, CPU), assemble (a PID pipeline from its stage models'
# trained outputs); then export and validate for every model. A new model is one params.yaml entry: its family
# selects its rules. Paths and resources only; the logic is in `flashsim train|export|validate NAME`.
# Validation pages and their figures are flagged report(): `snakemake --report report.zip` bundles them.


rule train_torch:
    input:
        lambda wc: prepared_splits(wc.name, ["train", "val"]),
    output:
        "results/train/{name}/trained.json",
    wildcard_constraints:
        name=one_of(BY_TRAINING["torch"]),
    params:
        rule="train_torch",
        verb="train",
        model=model_params("train"),
    threads: model_threads
    log:
        "logs/train/{name}.log",
    conda:
        "../envs/train.yaml"
    shell:
        MODEL_JOB


use rule train_torch as fit_cpu with:
    params:
        rule="fit_cpu",
        verb="train",
        model=model_params("train"),
    wildcard_constraints:
        name=one_of(BY_TRAINING["cpu"]),


use rule train_torch as assemble with:
    params:
        rule="assemble",
        verb="train",
        model=model_params("train"),
    input:
        lambda wc: [f"results/train/{n}/trained.json" for n in MODEL_CONFIGS[wc.name]["stages"].values()],
    wildcard_constraints:
        name=one_of(BY_TRAINING["assemble"]),


rule export:
    input:
        "results/train/{name}/trained.json",
        lambda wc: prepared_splits(wc.name, ["test"]),
    output:
        onnx="models/{name}.onnx",
        card="models/{name}.json",
    wildcard_constraints:
        name=one_of(MODEL_CONFIGS),
    params:
        rule="export",
        verb="export",
        model=model_params("export"),
    threads: model_threads
    log:
        "logs/export/{name}.log",
    conda:
        "../envs/train.yaml"
    shell:
        MODEL_JOB


rule validate:
    input:
        "models/{name}.onnx",
        "models/{name}.json",
        lambda wc: prepared_splits(wc.name, ["test"]),
    output:
        "reports/{name}/metrics.json",
        report("reports/{name}/index.html", category="validation", subcategory="{name}",
               labels={"model": "{name}", "figure": "page"}),
        report(directory("reports/{name}/figures"), patterns=["{figure}.png"], category="validation",
               subcategory="{name}", labels={"model": "{name}", "figure": "{figure}"}),
    wildcard_constraints:
        name=one_of(MODEL_CONFIGS),
    params:
        rule="validate",
        verb="validate",
        model=model_params("validate"),
    threads: model_threads
    log:
        "logs/validate/{name}.log",
    conda:
        "../envs/validate.yaml"
    shell:
        MODEL_JOB
