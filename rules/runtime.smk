# Flash simulation: C-ABI shared objects of the per-particle models, the flash-simulated signal sample, and the
# end-to-end physics check against the reference detector simulation of the same decays (reports/physics_check/).

RT = config["runtime"]
PIPE = config["physics_check"]


CHAIN = ["acceptance", "efficiency", "resolution", "covariance"] + [f"pid_pipeline_{s}" for s in RT["species"]]
CHAIN_MODELS = [n for n in CHAIN if n in MODEL_CONFIGS]  # the chain's models this workflow trains
CABI_MODELS = CHAIN_MODELS + [n for n in MODEL_CONFIGS if n == "ghost_mlp"]  # per-particle models
TREE_MODELS = [n for n in CHAIN_MODELS if MODEL_CONFIGS[n].get("family") == "lgbm_classifier"]
SIGNAL_FILES = local_files(config["inputs"][PIPE["sample"]]["files"])


rule cabi:  # also writes models/{name}.so.json (route, parity), not declared: it would match `models/{name}.json`
    input:
        "models/{name}.onnx",
    output:
        "models/{name}.so",
    wildcard_constraints:
        name=r"[A-Za-z0-9_]+",
    log:
        "logs/cabi/{name}.log",
    conda:
        "../envs/runtime.yaml"
    shell:
        "flashsim cabi {wildcards.name} > {log} 2>&1"


rule flash_signal:
    input:
        gen=SIGNAL_FILES,
        models=expand("models/{name}.onnx", name=CHAIN_MODELS),
        trees=expand("models/{name}.so", name=TREE_MODELS),
    output:
        PIPE["flash"],
    params:
        sample=PIPE["sample"],
    log:
        "logs/physics_check/simulate.log",
    conda:
        "../envs/runtime.yaml"
    shell:
        "flashsim simulate {params.sample} --output {output} > {log} 2>&1"


rule physics_check:
    input:
        ref=SIGNAL_FILES,
        flash=PIPE["flash"],
    output:
        metrics="reports/physics_check/metrics.json",
        page=report("reports/physics_check/index.html", category="validation", subcategory="physics check",
                    labels={"model": "physics check", "figure": "page"}),
    log:
        "logs/physics_check/physics_check.log",
    conda:
        "../envs/runtime.yaml"
    shell:
        "flashsim physics-check --outdir reports/physics_check > {log} 2>&1"


rule runtime_all:
    input:  # grows with the models: nothing to flash-simulate before the chain's first model exists
        rules.physics_check.output if CHAIN_MODELS else [],
        expand("models/{name}.so", name=CABI_MODELS),
