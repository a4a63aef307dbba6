"""User-facing errors.

Every error a user can cause by what they pass in (a path, a spec, an option) is a
`HookunlearnError`. Its message names the input, says what is wrong and what to do. The CLI
prints these without a traceback and exits with code 2; any other exception is a bug and keeps
its traceback.
"""

from __future__ import annotations


class HookunlearnError(Exception):
    """Base class for errors caused by user input (bad spec, missing file, mismatch)."""


class ModelLoadError(HookunlearnError):
    """A model spec could not be resolved or loaded."""


class SAELoadError(HookunlearnError):
    """An SAE spec could not be loaded, or the SAE does not fit the model."""


class ArtifactError(HookunlearnError):
    """A run directory is missing, malformed, or would be overwritten."""


class IncompatibleArtifactError(ArtifactError):
    """A run directory was made for another model, SAE, or schema version."""


class DataError(HookunlearnError):
    """A dataset or file is missing, empty, or lacks the expected columns."""


class HookunlearnWarning(UserWarning):
    """Something a user should know that does not stop the run (the CLI prints ``warning: ...``)."""


class SAEModelWarning(HookunlearnWarning):
    """An SAE's config names another model than the one it is loaded into (hook and width fit)."""
