# Reference detector simulation and ingestion: data/raw/<sample>.root -> results/prepared/<sample>/*.parquet


rule generate:
    output:
        "data/raw/{sample}.root",
    params:
        size=lambda wc: scaled(config["detsim"]["samples"][wc.sample]["size"]),
        # the ECAL sample is generated in the configured geometry: a geometry change regenerates it
        detector=lambda wc: config.get("detector") if config["detsim"]["samples"][wc.sample]["kind"] == "ecal" else "",
    log:
        "logs/generate/{sample}.log",
    conda:
        "../envs/data.yaml"
    shell:
        "flashsim generate {wildcards.sample} --output {output} > {log} 2>&1"


rule prepare:
    input:
        prepare_inputs,
    output:
        train=f"{PREPARED}/{{sample}}/train.parquet",
        val=f"{PREPARED}/{{sample}}/val.parquet",
        test=f"{PREPARED}/{{sample}}/test.parquet",
    params:
        outdir=lambda wc: f"{PREPARED}/{wc.sample}",
        # re-run when the sample's inputs, the split seed or the prepare settings change
        inputs=lambda wc: config["inputs"][wc.sample],
        settings={"seed": config["seed"], **config["prepare"]},
    log:
        "logs/prepare/{sample}.log",
    conda:
        "../envs/data.yaml"
    shell:
        "flashsim prepare {wildcards.sample} --outdir {params.outdir} > {log} 2>&1"


rule data_all:
    input:
        expand(f"{PREPARED}/{{sample}}/{{split}}.parquet", sample=SAMPLES, split=["train", "val", "test"]),
