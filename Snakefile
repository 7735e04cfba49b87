# flashsim workflow: reference detector simulation -> prepare -> train -> export -> validate.
# All logic lives in src/flashsim; rules hold paths and resources and call `flashsim <verb>`.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "params.yaml"


validate(config, "schemas/params.schema.yaml")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/ecal.smk"
include: "rules/mlops.smk"
include: "rules/models.smk"
include: "rules/runtime.smk"
include: "rules/tune.smk"


rule all:
    input:
        rules.data_all.input,
        expand("reports/{name}/index.html", name=MODEL_CONFIGS),
        rules.ecal_all.input,
        rules.summarize.output,
        rules.runtime_all.input,
    default_target: True
