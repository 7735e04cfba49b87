# flashsim workflow: reference detector simulation -> prepare -> train -> export -> validate.
# All logic lives in src/flashsim; rules hold paths and resources and call `flashsim <verb>`.
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


# The whole configuration (params.yaml schema, then each model against its family's schema) is checked here, before
# any job: `snakemake -n` fails at once with the CLI's one-line message (exit 2). No torch import.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from flashsim.errors import ConfigError
from flashsim.models.schemas import check_config

try:
    check_config(config, Path(workflow.basedir) / "schemas" / "params.schema.yaml")
except ConfigError as err:
    print(f"flashsim: error: {err}", file=sys.stderr)
    sys.exit(ConfigError.exit_code)


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
