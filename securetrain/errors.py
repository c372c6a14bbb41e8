"""Typed exceptions raised by securetrain, attacks and defenses.

Every error derives from :class:`SecureTrainError` and, where one fits, from the
matching built-in exception, so ``except ValueError`` keeps working for callers
that do not know this library. Messages say what was wrong and how to fix it.

Example:
    >>> from securetrain.errors import UnknownNameError
    >>> try:
    ...     raise UnknownNameError("model", "cnnn", ["cnn", "mlp"])
    ... except KeyError as e:
    ...     print(e.args[0])
    unknown model 'cnnn'; choose one of: cnn, mlp
"""

from __future__ import annotations

from collections.abc import Iterable


class SecureTrainError(Exception):
    """Base class of every error raised by securetrain."""


class ConfigurationError(SecureTrainError, ValueError):
    """An option or a combination of options is invalid."""


class SpecError(ConfigurationError):
    """An import-path spec (``package.module:name``) cannot be imported, names nothing callable,
    or names a callable with the wrong signature. The message names the spec and what was expected."""


class UnknownNameError(SecureTrainError, KeyError):
    """A name looked up in a registry (model, data set, attack, defense) does not exist."""

    def __init__(self, kind: str, name: str, choices: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.choices = sorted(choices)
        super().__init__(f"unknown {kind} {name!r}; choose one of: {', '.join(self.choices)}")

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return str(self.args[0])


class DataError(SecureTrainError, ValueError):
    """Input data is malformed: wrong shape, non-finite values, labels out of range."""


class DataNotFoundError(SecureTrainError, FileNotFoundError):
    """Local data files that a loader needs are missing."""


class ModelError(SecureTrainError, ValueError):
    """A model does not fit the data, or contains layers that cannot be used."""


class EngineUnsupported(ModelError):
    """A per-sample gradient engine cannot handle a layer or a model (another engine may).

    ``modules`` names the offending submodules (empty when the model as a whole is the problem).
    """

    def __init__(self, message: str, modules: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.modules = list(modules)


class CheckpointError(SecureTrainError, ValueError):
    """A checkpoint or weights file is missing, corrupted, truncated or unsafe."""


class RunDirectoryLocked(SecureTrainError, RuntimeError):
    """Another securetrain command is writing to the same run directory."""


class PrivacyError(SecureTrainError, ValueError):
    """A differential-privacy setting is invalid or a budget cannot be met."""


class PrivacyBudgetExhausted(SecureTrainError, RuntimeError):
    """Training would spend more privacy budget than allowed."""


class AttackError(SecureTrainError, ValueError):
    """An attack was configured or called with invalid arguments."""


class EncryptionError(SecureTrainError, ValueError):
    """A model or a ciphertext cannot be evaluated under homomorphic encryption."""


class ReportError(SecureTrainError, ValueError):
    """A report file is missing, malformed, or of an unknown schema."""


class TrainingDiverged(SecureTrainError, RuntimeError):
    """Training produced a non-finite loss or non-finite weights; the model is not kept as the run's result."""


__all__ = [
    "AttackError",
    "CheckpointError",
    "ConfigurationError",
    "DataError",
    "DataNotFoundError",
    "EncryptionError",
    "EngineUnsupported",
    "ModelError",
    "PrivacyBudgetExhausted",
    "PrivacyError",
    "ReportError",
    "RunDirectoryLocked",
    "SecureTrainError",
    "SpecError",
    "TrainingDiverged",
    "UnknownNameError",
]
