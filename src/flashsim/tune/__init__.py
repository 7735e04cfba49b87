"""Hyperparameter optimisation campaigns: ``flashsim tune NAME`` (Optuna studies over a model's ``tune:`` block).

Modules: :mod:`~flashsim.tune.space` (the ``tune:`` block, checked against the family's schema),
:mod:`~flashsim.tune.storage` (embedded journal file, SQLite or PostgreSQL; credentials never logged),
:mod:`~flashsim.tune.objective` (one trial: train with the family's public API, validate on the validation split),
:mod:`~flashsim.tune.cost` (inference cost of the exported graph), :mod:`~flashsim.tune.worker` (studies and
workers), :mod:`~flashsim.tuned` (the reviewed ``tuned/NAME.yaml`` the workflow picks up),
:mod:`~flashsim.tune.cli` (the verb). Families stay free of Optuna. Docs: docs/tuning.md.
"""
