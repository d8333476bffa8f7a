"""The one door to TVM: import it without pulling PyTorch into the device runtime."""

from __future__ import annotations

import sys
from types import ModuleType


def import_tvm() -> ModuleType:
    """Import and return ``tvm`` (with ``tvm.relax`` loaded), keeping ``torch`` out of ``sys.modules``."""
    if "tvm" in sys.modules and "tvm.relax" in sys.modules:
        return sys.modules["tvm"]
    # tvm_ffi's __init__ does `try: import torch`; a None entry in sys.modules makes that import raise
    # ImportError, so it is skipped. The entry is removed afterwards so a host process can still import torch.
    blocked = "torch" not in sys.modules
    if blocked:
        sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        import tvm
        import tvm.relax  # noqa: F401  (the VM lives here; load it while torch is still blocked)
    finally:
        if blocked and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    return tvm
