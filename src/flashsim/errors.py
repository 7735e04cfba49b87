"""Exceptions that the command line turns into one clear message and a non-zero exit."""

from __future__ import annotations


class FlashsimError(Exception):
    """Base class: a user-facing error (printed without a traceback)."""

    exit_code = 2


class InputError(FlashsimError):
    """Bad input data: names the file, the tree and the branch when known."""

    def __init__(self, message: str, *, file: str | None = None, tree: str | None = None,
                 branch: str | None = None) -> None:
        self.file, self.tree, self.branch = file, tree, branch
        where = ", ".join(f"{k} '{v}'" for k, v in (("file", file), ("tree", tree), ("branch", branch)) if v)
        super().__init__(f"{where}: {message}" if where else message)


class ConfigError(FlashsimError):
    """params.yaml does not satisfy the schema or names something unknown."""


class GateError(FlashsimError):
    """A validation or parity gate failed; the message names the metric."""

    exit_code = 3
