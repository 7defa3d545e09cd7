"""One exception root for everything a user can hit, each saying what to do next."""

from __future__ import annotations


class FxEnergyError(Exception):
    """Root of every error fxenergy raises on purpose."""


class CaptureError(FxEnergyError):
    """The model could not be traced into an fx graph by any capture method."""


class UnknownGPUError(FxEnergyError, KeyError):
    """A GPU name that is not in the spec table."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PassError(FxEnergyError):
    """A pass was misused: a missing precondition, an unknown name or a bad pipeline string."""


class InfeasibleBudgetError(FxEnergyError):
    """No plan can meet the requested deadline or memory bound."""


class PlanMismatchError(FxEnergyError):
    """A saved plan was made for another graph (its fingerprint does not match)."""


class SolverError(FxEnergyError):
    """The solver failed in a way that left no usable answer."""


class NvmlError(FxEnergyError):
    """NVML is missing, unusable, or refused an operation."""


class NvmlPermissionError(NvmlError, PermissionError):
    """Changing GPU clocks needs root or CAP_SYS_ADMIN."""


class ProfileError(FxEnergyError, ValueError):
    """A time/energy profile (Perseus CSV format) is malformed or incomplete."""


class ScheduleProblemError(FxEnergyError, ValueError):
    """A scheduling problem is malformed (bad sizes, negative costs, backward edges)."""


class InvalidScheduleError(FxEnergyError):
    """A schedule breaks a dependency, a side-effect order, or a partition rule of its problem."""


class InputShapeError(CaptureError, ValueError):
    """The model itself rejects the example inputs (wrong shapes or dtypes)."""


class ModelLoadError(FxEnergyError, ValueError):
    """A MODEL argument names no importable module, attribute, file or built-in model."""


class InvalidPlanError(FxEnergyError, ValueError):
    """A saved plan file cannot be read, is not a plan, or asks for what its GPU cannot do."""
