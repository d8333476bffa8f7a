import json
import zipfile

import numpy as np
import pytest

from edgert import ir
from edgert.artifact import ALIGN, MANIFEST, MANIFEST_SUM, SCHEMA_VERSION, Artifact, _sha256, aligned
from edgert.errors import ArtifactError, ArtifactSchemaError, ArtifactTamperedError, ArtifactTruncatedError

TARGET = {"name": "x86-host", "arch": "x86_64", "tvm": {"kind": "llvm", "mtriple": "x86_64-linux-gnu"}}


def _artifact() -> Artifact:
    g = ir.Graph(inputs=(("x", ir.TensorSpec((None, 4))),),
                 nodes=(ir.Linear(name="l", inputs=("x", "w", "b"), output="y"),),
                 outputs=("y",),
                 params={"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(3, np.float32)})
    stage = {"backend": "tvm", "nodes": ["l"], "inputs": ["x"], "outputs": ["y"], "library": "lib/stage0.so",
             "params": ["b", "w"]}
    return Artifact.create(g, TARGET, [stage], {"lib/stage0.so": b"\x7fELF not really a library"}, {"l": "tvm"})


def _rewrite(src, dst, change):
    """Copy a zip, letting ``change(name, bytes)`` alter members (a valid archive with new contents)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, change(name, zin.read(name)))


def _rewrite_manifest(src, dst, change):
    """A genuine-looking artifact whose manifest dict went through ``change`` (checksum kept consistent)."""
    with zipfile.ZipFile(src) as z:
        manifest = json.dumps(change(json.loads(z.read(MANIFEST)))).encode()
    _rewrite(src, dst, lambda n, b: manifest if n == MANIFEST else _sha256(manifest).encode()
             if n == MANIFEST_SUM else b)


def test_round_trip_keeps_graph_params_and_library(tmp_path):
    art = _artifact()
    again = Artifact.read(art.save(tmp_path / "m.edgert"))
    assert again.graph == art.graph
    assert again.libraries == art.libraries
    assert again.manifest["members"]["params.npz"] == _sha256(
        zipfile.ZipFile(tmp_path / "m.edgert").read("params.npz"))


def test_loaded_params_start_on_a_cache_line(tmp_path):
    art = _artifact()
    params = Artifact.read(art.save(tmp_path / "m.edgert")).params
    for k, v in art.params.items():
        np.testing.assert_array_equal(params[k], v)
        assert params[k].dtype == v.dtype and params[k].ctypes.data % ALIGN == 0 and params[k].flags.c_contiguous


@pytest.mark.parametrize("a", [np.arange(7, dtype=np.float32)[1:], np.zeros((0, 3), np.int8), np.array(2.5),
                               np.arange(24, dtype=np.uint64).reshape(2, 3, 4).transpose(2, 0, 1)])
def test_aligned_copies_any_array(a):
    b = aligned(a)
    assert (b.size == 0 or b.ctypes.data % ALIGN == 0) and b.flags.c_contiguous
    assert b.shape == a.shape and b.dtype == a.dtype
    np.testing.assert_array_equal(b, a)


def test_params_are_stored_without_pickle(tmp_path):
    path = _artifact().save(tmp_path / "m.edgert")
    npz = zipfile.ZipFile(path).read("params.npz")
    assert b"pickle" not in npz and b"\x80\x04" not in npz[:200]


@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_file(tmp_path, keep):
    path = _artifact().save(tmp_path / "m.edgert")
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(ArtifactTruncatedError, match="truncated|ends early|incomplete"):
        Artifact.read(path)


def test_tampered_member(tmp_path):
    path = _artifact().save(tmp_path / "m.edgert")
    _rewrite(path, tmp_path / "t.edgert", lambda n, b: b + b"!" if n == "lib/stage0.so" else b)
    with pytest.raises(ArtifactTamperedError, match="'lib/stage0.so' does not match its SHA-256"):
        Artifact.read(tmp_path / "t.edgert")


def test_tampered_manifest(tmp_path):
    path = _artifact().save(tmp_path / "m.edgert")
    _rewrite(path, tmp_path / "t.edgert",
             lambda n, b: b.replace(b'"x86-host"', b'"rpi4"') if n == MANIFEST else b)
    with pytest.raises(ArtifactTamperedError, match="manifest does not match"):
        Artifact.read(tmp_path / "t.edgert")


def test_flipped_byte_in_any_member_is_caught(tmp_path):
    path = _artifact().save(tmp_path / "m.edgert")
    data = path.read_bytes()
    for info in zipfile.ZipFile(path).infolist():
        # member bytes start after the 30-byte local header, the name and the extra field
        start = info.header_offset + 30 + len(info.filename) + int.from_bytes(
            data[info.header_offset + 28:info.header_offset + 30], "little")
        for i in range(start, start + info.compress_size, 7):
            flipped = bytearray(data)
            flipped[i] ^= 0xFF
            path.write_bytes(bytes(flipped))
            with pytest.raises(ArtifactError):
                Artifact.read(path)


def test_newer_schema_asks_for_an_upgrade(tmp_path):
    path = _artifact().save(tmp_path / "m.edgert")
    _rewrite_manifest(path, tmp_path / "n.edgert", lambda m: {**m, "schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(ArtifactSchemaError, match="Upgrade edgert"):
        Artifact.read(tmp_path / "n.edgert")


def test_missing_file_and_non_archive(tmp_path):
    with pytest.raises(ArtifactError, match="no such artifact"):
        Artifact.read(tmp_path / "nope.edgert")
    (tmp_path / "x.edgert").write_text("hello")
    with pytest.raises(ArtifactTruncatedError):
        Artifact.read(tmp_path / "x.edgert")


def test_manifest_missing_fields_is_a_schema_error(tmp_path):
    """A manifest from an incompatible build (same schema number, other layout) fails clearly, not with KeyError."""
    path = _artifact().save(tmp_path / "m.edgert")
    _rewrite_manifest(path, tmp_path / "n.edgert", lambda m: {k: v for k, v in m.items() if k != "stages"})
    with pytest.raises(ArtifactSchemaError, match="lacks or mistypes stages"):
        Artifact.read(tmp_path / "n.edgert")


def test_missing_member_is_truncation(tmp_path):
    path = _artifact().save(tmp_path / "m.edgert")
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(tmp_path / "t.edgert", "w") as zout:
        for name in zin.namelist():
            if name != "params.npz":
                zout.writestr(name, zin.read(name))
    with pytest.raises(ArtifactTruncatedError, match="'params.npz'\\] are missing"):
        Artifact.read(tmp_path / "t.edgert")
