# Tuning campaigns (docs/tuning.md): `snakemake results/tune/NAME/report.json [--profile gpu]` creates the study of
# model NAME's `tune:` block once (tune_study), runs its `workers` worker jobs on it (train_tune_torch: one GPU
# each on Slurm; train_tune_cpu for LightGBM), then writes the report and the override proposal (tune_report).
# Not part of `all`. The storage: $FLASHSIM_TUNE_STORAGE (e.g. the team's PostgreSQL) or the journal file
# results/tune/NAME/journal.log on the shared file system.

TUNED = [n for n, e in MODEL_CONFIGS.items() if e.get("tune") and n not in BY_TRAINING["assemble"]]


rule tune_study:
    input:
        lambda wc: prepared_splits(wc.name, ["train", "val"]),
    output:
        "results/tune/{name}/study.created",
    wildcard_constraints:
        name=one_of(TUNED),
    log:
        "logs/tune/{name}/study.log",
    conda:
        "../envs/train.yaml"
    shell:
        "flashsim tune {wildcards.name} --create-only > {log} 2>&1 && touch {output}"


rule train_tune_torch:
    input:
        "results/tune/{name}/study.created",
    output:
        "results/tune/{name}/workers/{worker}.done",
    wildcard_constraints:
        name=one_of([n for n in TUNED if n in BY_TRAINING["torch"]]),
        worker=r"\d+",
    threads: model_threads
    log:
        "logs/tune/{name}/worker_{worker}.log",
    conda:
        "../envs/train.yaml"
    shell:
        "export FLASHSIM_TUNE_WORKER={wildcards.worker} FLASHSIM_THREADS={threads}; "
        "flashsim tune {wildcards.name} --worker > {log} 2>&1 && touch {output}"


use rule train_tune_torch as train_tune_cpu with:
    wildcard_constraints:
        name=one_of([n for n in TUNED if n in BY_TRAINING["cpu"]]),
        worker=r"\d+",


rule tune_report:
    input:
        tune_workers,
    output:
        "results/tune/{name}/report.json",
    wildcard_constraints:
        name=one_of(TUNED),
    log:
        "logs/tune/{name}/report.log",
    conda:
        "../envs/train.yaml"
    shell:
        "flashsim tune {wildcards.name} --report > {log} 2>&1"
