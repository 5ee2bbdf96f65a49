"""The streamed output: direct compressed chunk writes, and the same file as the join."""

from __future__ import annotations

import errno
import zlib
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pytest

from climdl.errors import OutputError
from climdl.inference import downscale
from climdl.inference.parts import parts_dir
from climdl.io.chunk_writer import ChunkWriter


@pytest.fixture(scope="module")
def perfect(sample_root: Path) -> Path:
    return sample_root / "test" / "historical" / "predictors" / "perfect" / "CNRM-CM5_1981-2000.nc"


def _define(path: Path, shape: tuple[int, ...], chunks: tuple[int, ...], **filters: Any) -> None:
    with netCDF4.Dataset(path, "w") as nc:
        for d, s in zip("tyx", shape, strict=True):
            nc.createDimension(d, s)
        nc.createVariable(
            "v", "f4", tuple("tyx"), chunksizes=chunks, fill_value=np.float32(1e20), **filters
        )


@pytest.mark.parametrize(
    ("shape", "filters"),
    [
        ((150, 40, 35), {"zlib": True, "complevel": 1, "shuffle": True}),  # edge chunks
        ((73, 32, 32), {"zlib": True, "complevel": 4, "shuffle": False}),
    ],
)
def test_direct_chunks_are_the_bytes_hdf5_writes(
    tmp_path: Path, shape: tuple[int, ...], filters: dict[str, Any]
) -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(280.0, 5.0, shape).astype(np.float32)
    values[3, 5, 7] = np.nan
    chunks = (73, 16, 16)
    ref, direct = tmp_path / "ref.nc", tmp_path / "direct.nc"
    _define(ref, shape, chunks, **filters)
    with netCDF4.Dataset(ref, "a") as nc:
        nc["v"][:] = np.ma.masked_invalid(values)
    _define(direct, shape, chunks, **filters)
    with ChunkWriter(direct, ["v"]) as w:
        for start in range(0, shape[0], 73):
            w.write("v", start, values[start : start + 73])
    with netCDF4.Dataset(ref) as a, netCDF4.Dataset(direct) as b:
        got = b["v"][:]
        np.testing.assert_array_equal(got, a["v"][:])
        assert got.mask.sum() == 1 and got.mask[3, 5, 7]  # NaN stored as the fill value
    # the same chunks: their bytes, decompressed, are HDF5's (ISA-L deflates fast levels otherwise)
    import h5py

    with h5py.File(ref) as a, h5py.File(direct) as b:
        for k in range(a["v"].id.get_num_chunks()):
            info = a["v"].id.get_chunk_info(k)
            mask_a, raw_a = a["v"].id.read_direct_chunk(info.chunk_offset)
            mask_b, raw_b = b["v"].id.read_direct_chunk(info.chunk_offset)
            unzip = zlib.decompress if filters.get("zlib") else bytes
            assert mask_a == mask_b == 0 and unzip(raw_a) == unzip(raw_b)


def test_direct_chunks_refuse_what_they_cannot_reproduce(tmp_path: Path) -> None:
    path = tmp_path / "f.nc"
    _define(path, (100, 16, 16), (50, 16, 16), zlib=True, fletcher32=True)
    with pytest.raises(ValueError, match="zlib/shuffle"):
        ChunkWriter(path, ["v"])
    _define(path, (100, 16, 16), (50, 16, 16), zlib=True)
    with ChunkWriter(path, ["v"]) as w:
        block = np.zeros((50, 16, 16), np.float32)
        with pytest.raises(ValueError, match="chunk-aligned"):
            w.write("v", 10, block)
        with pytest.raises(ValueError, match="partial chunk"):
            w.write("v", 0, block[:20])
        w.write("v", 50, block)  # the last chunk, whole


def _structure(path: Path) -> dict[str, Any]:
    with netCDF4.Dataset(path) as nc:
        out: dict[str, Any] = {
            # netCDF's dimensions and attributes are sets: their order in the header is not data
            "dims": {k: (len(d), d.isunlimited()) for k, d in nc.dimensions.items()},
            "attrs": {k: str(nc.getncattr(k)) for k in nc.ncattrs() if k != "history"},
        }
        for name, v in nc.variables.items():
            out[name] = (
                v.dimensions,
                str(v.dtype),
                {k: str(v.getncattr(k)) for k in v.ncattrs()},
                v.filters(),
                v.chunking(),
            )
        return out


def test_streamed_output_is_the_joined_file(
    tasmax_ckpt: Path, perfect: Path, tmp_path: Path
) -> None:
    streamed, joined = tmp_path / "streamed.nc", tmp_path / "joined.nc"
    downscale(tasmax_ckpt, [str(perfect)], streamed, chunk_days=100).dataset.close()
    assert not parts_dir(streamed).exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "streamed.nc"
    ]
    # a resumed run joins its parts instead: same chunks, same batches, so the same bits
    downscale(tasmax_ckpt, [str(perfect)], joined, chunk_days=100, max_chunks=1)
    downscale(tasmax_ckpt, [str(perfect)], joined, chunk_days=100, resume=True).dataset.close()
    assert _structure(streamed) == _structure(joined)
    with netCDF4.Dataset(streamed) as a, netCDF4.Dataset(joined) as b:
        for name in b.variables:
            np.testing.assert_array_equal(a[name][:], b[name][:])


def test_full_disk_while_streaming_leaves_no_output_and_stays_resumable(
    tasmax_ckpt: Path, perfect: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "full.nc"
    calls = {"n": 0}
    real = ChunkWriter.write

    def fill_up(self: ChunkWriter, name: str, start: int, block: np.ndarray) -> None:
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, name, start, block)

    monkeypatch.setattr(ChunkWriter, "write", fill_up)
    with pytest.raises(OutputError, match="no space left"):
        downscale(tasmax_ckpt, [str(perfect)], out, chunk_days=100)
    assert not out.exists()
    monkeypatch.undo()
    res = downscale(tasmax_ckpt, [str(perfect)], out, chunk_days=100, resume=True)
    res.dataset.close()
    assert res.n_days == 365 and out.exists() and not parts_dir(out).exists()


def test_streamed_run_writes_no_part_for_its_last_chunk_and_resumes_it(
    tasmax_ckpt: Path, perfect: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream holds the last chunk's days: its part is not written (a 1-year run writes
    none); a run that dies before the stream is moved onto the output recomputes that chunk."""
    from climdl.inference.parts import PartStore
    from climdl.inference.streamed import StreamedOutput

    reference = tmp_path / "ref.nc"
    downscale(tasmax_ckpt, [str(perfect)], reference, chunk_days=100).dataset.close()
    written: list[int] = []
    real_write = PartStore.write

    def record(self: PartStore, i: int, *args: Any, **kwargs: Any) -> Any:
        written.append(i)
        return real_write(self, i, *args, **kwargs)

    def die(self: StreamedOutput) -> None:
        raise KeyboardInterrupt  # the run is stopped before the stream is finished

    monkeypatch.setattr(PartStore, "write", record)
    monkeypatch.setattr(StreamedOutput, "finish", die)
    out = tmp_path / "out.nc"
    with pytest.raises(KeyboardInterrupt):
        downscale(tasmax_ckpt, [str(perfect)], out, chunk_days=100)
    assert written == [0, 1, 2] and not out.exists()  # 4 chunks of 100, 100, 100, 65 days
    monkeypatch.undo()
    res = downscale(tasmax_ckpt, [str(perfect)], out, chunk_days=100, resume=True)
    res.dataset.close()
    assert (res.chunks_resumed, res.chunks_computed, res.n_days) == (3, 1, 365)
    with netCDF4.Dataset(reference) as a, netCDF4.Dataset(out) as b:
        np.testing.assert_array_equal(a["tasmax"][:], b["tasmax"][:])
