"""Exception types of dspt-geo.

Every error a user can cause derives from :class:`DsptGeoError` and from the builtin
exception that fits it, so callers may catch either. The command line turns a
:class:`DsptGeoError` into one message and a non-zero exit; anything else is a bug and
keeps its traceback.
"""

__all__ = (
    'CheckpointError',
    'ConfigError',
    'DsptGeoError',
    'EmptyRasterError',
    'IncompatibleRasterError',
    'LabelError',
    'NoRastersFoundError',
    'OutputPathError',
    'RasterReadError',
    'RunDirError',
    'RunInterruptedError',
)


class DsptGeoError(Exception):
    """Base class of the errors a user can cause and fix."""


class NoRastersFoundError(DsptGeoError, FileNotFoundError):
    """No readable, georeferenced raster was found under the given paths."""


class OutputPathError(DsptGeoError, OSError):
    """An output cannot be written where the user asked (a file in the way, no permission)."""


class RasterReadError(DsptGeoError, OSError):
    """A file exists but GDAL cannot read it as a georeferenced raster."""


class IncompatibleRasterError(DsptGeoError, ValueError):
    """A raster does not fit what is asked of it (bands, dtype, CRS, size)."""


class EmptyRasterError(DsptGeoError, ValueError):
    """A raster, or every raster of a group, holds no valid pixel."""


class CheckpointError(DsptGeoError, ValueError):
    """A weights file is missing, unsafe, corrupt, or does not fit the model."""


class ConfigError(DsptGeoError, ValueError):
    """A configuration file or option combination is invalid."""


class RunDirError(DsptGeoError, FileExistsError):
    """A run folder holds a finished or different run that would be overwritten."""


class RunInterruptedError(DsptGeoError):
    """A signal stopped a run; its checkpoint lets the same command resume it.

    Attributes:
        signum: the signal.
        exit_code: the process's exit status, 128 + *signum* (as a shell reports
            a process killed by the signal).
    """

    def __init__(self, message: str, signum: int) -> None:
        """Initialise the error.

        Args:
            message: what stopped, what was saved, how to resume.
            signum: the signal.
        """
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class LabelError(DsptGeoError, ValueError):
    """Labels that do not fit their images or their class table.

    Raised for labels whose CRS cannot be matched to the images, labels outside every
    image, a missing class column, an empty class, and mask values outside the class
    table.
    """
