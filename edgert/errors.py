"""Exceptions: user-fixable problems vs broken invariants (the split follows executorch's exir/error.py)."""


class EdgertError(Exception):
    """A problem the user can fix; the CLI prints it without a traceback."""


class IRValidationError(EdgertError):
    """A graph or node is malformed: bad attributes, shapes that do not line up, dangling names."""


class UnsupportedOpError(EdgertError):
    """A model uses an operation edgert cannot compile."""


class TargetError(EdgertError):
    """A target file is missing, malformed, or unknown."""


class ArtifactError(EdgertError):
    """An .edgert file cannot be used; subclasses say why."""


class ArtifactTruncatedError(ArtifactError):
    """The file ends early or is not a complete .edgert archive."""


class ArtifactTamperedError(ArtifactError):
    """A member's SHA-256 does not match the manifest."""


class ArtifactTargetError(ArtifactError):
    """The artifact was compiled for a different machine than this one."""


class ArtifactSchemaError(ArtifactError):
    """The artifact's schema version is newer (or older) than this edgert reads."""


class InputError(EdgertError):
    """Input given to Engine.run has the wrong shape or dtype, or holds NaN/Inf."""


class InternalError(Exception):
    """A broken invariant: a bug in edgert, not in the user's model or input."""
