"""The device side: load and run artifacts with numpy and the TVM runtime (never torch)."""

from edgert.runtime.engine import Engine, load

__all__ = ["Engine", "load"]
