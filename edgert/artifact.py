"""The .edgert bundle: one zip file with a manifest, parameters (.npz) and compiled libraries.

Reading verifies before it trusts: the manifest's own SHA-256 (``manifest.sha256``), the SHA-256 of
every other member, and the schema version. Nothing is unpickled and no code runs while reading;
libraries are only loaded later by the runtime, after their checksums matched.

The manifest's ``stages`` list says how the runtime executes the graph: each stage is either a TVM
library (``lib/stageN.so``: a subgraph's inputs, outputs and parameters; with ``taps``, a second
library ``lib/stageN.taps.so`` that also returns the adaptation taps) or one node run by a kernel
backend such as Numba. A microcontroller artifact has no stages: its ``firmware`` entry lists the C
sources (``c/...``) and the linked image (``firmware/model.elf``) instead. An artifact for a board
without code generation has neither (estimate only).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgert import __version__, ir
from edgert.atomic import atomic_write
from edgert.errors import (ArtifactError, ArtifactSchemaError, ArtifactTamperedError,
                           ArtifactTruncatedError)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_SUM = "manifest.sha256"
PARAMS = "params.npz"


# What every reader relies on; checked before anything is used, so a bad manifest is one clear error.
_MANIFEST_FIELDS = {"target": dict, "graph": dict, "stages": list, "backends": dict, "inputs": list,
                    "outputs": list, "param_order": list, "members": dict}


ALIGN = 64  # bytes: a cache line, and one AVX-512 vector


def aligned(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``a`` starting on an ALIGN-byte boundary. Kernels read weight rows as
    vectors; from an address 16 bytes off, each 64-byte vector load spans two cache lines (measured:
    the SHD layer's row adds 41 -> 32 us once its weight is aligned)."""
    buf = np.empty(a.nbytes + ALIGN, np.uint8)
    start = -buf.ctypes.data % ALIGN
    out = buf[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    return buf.getvalue()


@dataclass(frozen=True)
class Artifact:
    """A compiled model for one target: manifest, parameter arrays and compiled libraries by member name."""

    manifest: dict[str, Any]
    params: dict[str, np.ndarray]
    libraries: dict[str, bytes]

    @staticmethod
    def create(graph: ir.Graph, target: dict[str, Any], stages: list[dict[str, Any]],
               libraries: Mapping[str, bytes], backends: Mapping[str, str],
               extra: Mapping[str, Any] | None = None) -> "Artifact":
        """Assemble an artifact; ``target`` is the target's name, arch and tvm dict."""
        specs = graph.infer_specs()
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "edgert_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "target": dict(target),
            "graph": graph.to_json(),
            "specs": {k: v.to_json() for k, v in specs.items()},
            "backends": dict(backends),
            "param_order": sorted(graph.params),
            "inputs": [{"name": n, **s.to_json()} for n, s in graph.inputs],
            "outputs": [{"name": o, **specs[o].to_json()} for o in graph.outputs],
            "stages": list(stages),
            **(extra or {}),
        }
        return Artifact(manifest, dict(graph.params), dict(libraries))

    @property
    def runnable(self) -> bool:
        """False for estimate-only artifacts (a board edgert cannot generate code for)."""
        return bool(self.manifest["stages"])

    @property
    def graph(self) -> ir.Graph:
        return ir.Graph.from_json(self.manifest["graph"], self.params)

    @property
    def target_name(self) -> str:
        return self.manifest["target"]["name"]

    def save(self, path: str | Path) -> Path:
        """Write atomically (edgert.atomic): a crash leaves the old file or the new one."""
        path = Path(path)
        members = {PARAMS: _npz_bytes(self.params), **self.libraries}
        manifest = dict(self.manifest, members={k: _sha256(v) for k, v in members.items()})
        manifest_bytes = json.dumps(manifest, indent=1, sort_keys=True).encode()
        def write(f) -> None:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr(MANIFEST, manifest_bytes)
                z.writestr(MANIFEST_SUM, _sha256(manifest_bytes))
                for name, data in members.items():
                    z.writestr(name, data)

        atomic_write(path, write)
        return path

    @staticmethod
    def read(path: str | Path) -> "Artifact":
        """Read and verify an .edgert file; each kind of damage raises its own ArtifactError."""
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"{path}: no such artifact file; make one with `edgert compile`")
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
                missing = {MANIFEST, MANIFEST_SUM, PARAMS} - names
                if missing:
                    raise ArtifactTruncatedError(f"{path}: members {sorted(missing)} are missing; the "
                                                 "file is incomplete, copy or compile it again")
                data = {n: z.read(n) for n in names}
        except zipfile.BadZipFile as e:
            if "CRC" in str(e):
                raise ArtifactTamperedError(f"{path}: a member's bytes do not match their checksum ({e}); "
                                            "the file was modified or corrupted, copy or compile it again") from None
            raise ArtifactTruncatedError(f"{path}: not a complete .edgert archive ({e}, {path.stat().st_size} "
                                         "bytes); the file is truncated or not an artifact, copy or "
                                         "compile it again") from None
        except (zlib.error, NotImplementedError, ValueError) as e:
            raise ArtifactTamperedError(f"{path}: a member cannot be decompressed ({e}); the file was "
                                        "modified or corrupted, copy or compile it again") from None
        except (EOFError, OSError) as e:
            raise ArtifactTruncatedError(f"{path}: the archive ends early ({e}); copy or compile it again") from None
        except ArtifactError:
            raise
        except Exception as e:  # zipfile on damaged bytes can raise more kinds than it documents
            raise ArtifactTamperedError(f"{path}: the archive is damaged ({type(e).__name__}: {e}); copy or "
                                        "compile it again") from None
        if _sha256(data[MANIFEST]) != data[MANIFEST_SUM].decode(errors="replace").strip():
            raise ArtifactTamperedError(f"{path}: the manifest does not match its SHA-256; the file was "
                                        "modified after compilation, compile it again")
        try:
            manifest = json.loads(data[MANIFEST])
        except ValueError as e:
            raise ArtifactTamperedError(f"{path}: manifest is not valid JSON ({e})") from None
        schema = manifest.get("schema_version")
        if schema != SCHEMA_VERSION:
            newer = isinstance(schema, int) and schema > SCHEMA_VERSION
            raise ArtifactSchemaError(
                f"{path}: artifact schema version {schema} (written by edgert "
                f"{manifest.get('edgert_version', '?')}); this edgert {__version__} reads version "
                f"{SCHEMA_VERSION}. " + ("Upgrade edgert on this device." if newer else
                                         "Recompile the model with this edgert."))
        missing = [f"{k} ({t.__name__})" for k, t in _MANIFEST_FIELDS.items() if not isinstance(manifest.get(k), t)]
        if missing:
            raise ArtifactSchemaError(f"{path}: the manifest lacks or mistypes {', '.join(missing)}; it was "
                                      "written by an incompatible edgert build. Recompile the model with "
                                      "this edgert.")
        for name, digest in manifest.get("members", {}).items():
            if name not in data:
                raise ArtifactTruncatedError(f"{path}: member {name!r} listed in the manifest is missing")
            if _sha256(data[name]) != digest:
                raise ArtifactTamperedError(f"{path}: member {name!r} does not match its SHA-256 in the "
                                            "manifest; the file was modified, compile it again")
        with np.load(io.BytesIO(data[PARAMS]), allow_pickle=False) as npz:
            params = {k: aligned(npz[k]) for k in npz.files}
        libraries = {}
        firmware = manifest.get("firmware", {}).get("members", [])  # a microcontroller's C and ELF
        for name in firmware:
            if name not in data or name not in manifest.get("members", {}):
                raise ArtifactTruncatedError(f"{path}: the firmware member {name!r} is missing; copy or "
                                             "compile the artifact again")
            libraries[name] = data[name]
        for stage in manifest.get("stages", []):
            for lib in (stage.get("library"), stage.get("taps", {}).get("library")):
                if lib is None:
                    continue
                if lib not in data or lib not in manifest.get("members", {}):
                    raise ArtifactTruncatedError(f"{path}: the library {lib!r} is missing; copy or compile "
                                                 "the artifact again")
                libraries[lib] = data[lib]
        return Artifact(manifest, params, libraries)
