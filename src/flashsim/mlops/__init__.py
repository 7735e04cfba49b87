"""Command-line front ends of the MLOps backbone: ``flashsim promote``, ``compare`` and ``provenance``."""
