"""``atomic_write``: text, bytes or a writer function; a failed write leaves the old file and no fragment."""
import numpy as np
import pytest

from lnlbench.files import atomic_write


def test_atomic_write_text_bytes_and_writer(tmp_path):
    path = tmp_path / "sub" / "a.json"
    assert atomic_write(path, "{}") == path and path.read_text() == "{}"
    atomic_write(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    npz = tmp_path / "x.npz"
    atomic_write(npz, lambda f: np.savez(f, a=np.arange(3)))
    assert np.load(npz)["a"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.json", "sub", "x.npz"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "r.json"
    atomic_write(path, "old")

    def broken(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]
