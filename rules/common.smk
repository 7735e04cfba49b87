# Shared helpers for the rules: sample lists and the flashsim command line.
SCALE = config["scale"]
SAMPLES = list(config["detsim"]["samples"])
PREPARED = "results/prepared"
FLASHSIM = "flashsim"


def scaled(value):
    """Resolve a {demo: x, full: y} params value for the configured scale."""
    if isinstance(value, dict) and SCALE in value:
        return value[SCALE]
    return value
