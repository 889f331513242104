"""Read TensorFlow (TF1 "V2" / TF2) checkpoints without TensorFlow.

A checkpoint `PREFIX` is a tensor bundle: `PREFIX.index`, an SSTable (LevelDB table format without
filter blocks; tensorflow/core/lib/io/table_format.txt) mapping each variable name to a serialized
`BundleEntryProto` (tensorflow/core/protobuf/tensor_bundle.proto: dtype, shape, shard_id, offset,
size, crc32c), with a `BundleHeaderProto` under the empty key; and `PREFIX.data-0000k-of-0000n`,
the raw little-endian tensor bytes at those offsets. TensorFlow writes the index table without
compression (tensor_bundle.cc). This module parses exactly that: varints, the table footer and
blocks (block CRCs verified), the two protobuf messages, and numeric tensors.

`TFCheckpoint(path)` accepts `PREFIX.index`, a `PREFIX.data-*` file, the prefix itself, a directory
holding one checkpoint, or a `.zip` holding one (SimCLR v1's release format). Tensors are read
lazily, so a converter that needs the backbone does not read optimizer slots.
"""

from __future__ import annotations

import re
import struct
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np

__all__ = ["TFCheckpoint", "TFCheckpointError", "read_tf_checkpoint", "masked_crc32c"]

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48  # two BlockHandles padded to 2 * 20 bytes + 8 bytes magic
_BLOCK_TRAILER = 5  # compression type (1 byte) + masked crc32c (4 bytes)

# tensorflow/core/framework/types.proto DataType -> numpy dtype (little-endian). 14 (bfloat16) is special.
_DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?", 17: "<u2",
           19: "<f2", 22: "<u4", 23: "<u8"}
_DT_BFLOAT16, _DT_STRING = 14, 7


class TFCheckpointError(ValueError):
    """The file is not a TensorFlow checkpoint clzoo can read."""


def _crc32c_table() -> List[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """LevelDB/TF checksum masking: rotate right by 15 bits and add a constant."""
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(buf: bytes, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise TFCheckpointError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise TFCheckpointError("varint too long")


def _proto_fields(buf: bytes) -> Iterator[Tuple[int, int, Union[int, bytes]]]:
    """(field number, wire type, value) of a serialized protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise TFCheckpointError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _parse_shape(buf: bytes) -> Tuple[int, ...]:
    dims = []
    for field, _, value in _proto_fields(buf):
        if field == 2:  # repeated Dim {int64 size = 1; string name = 2}
            size = 0
            for f, _, v in _proto_fields(value):
                if f == 1:
                    size = v - (1 << 64) if v >= 1 << 63 else v
            dims.append(size)
        elif field == 3 and value:
            raise TFCheckpointError("tensor of unknown rank")
    return tuple(dims)


class _Entry:
    __slots__ = ("dtype", "shape", "shard", "offset", "size", "sliced")

    def __init__(self, buf: bytes):
        self.dtype, self.shape, self.shard, self.offset, self.size, self.sliced = 1, (), 0, 0, 0, False
        for field, _, value in _proto_fields(buf):
            if field == 1:
                self.dtype = value
            elif field == 2:
                self.shape = _parse_shape(value)
            elif field == 3:
                self.shard = value
            elif field == 4:
                self.offset = value
            elif field == 5:
                self.size = value
            elif field == 7:
                self.sliced = True


def _read_block(data: bytes, offset: int, size: int, what: str) -> bytes:
    end = offset + size + _BLOCK_TRAILER
    if end > len(data):
        raise TFCheckpointError(f"truncated {what} block")
    contents, kind = data[offset:offset + size], data[offset + size]
    expected = struct.unpack_from("<I", data, offset + size + 1)[0]
    if masked_crc32c(data[offset:offset + size + 1]) != expected:
        raise TFCheckpointError(f"{what} block checksum mismatch (the index file is corrupted)")
    if kind != 0:
        raise TFCheckpointError(f"{what} block uses compression type {kind}; TensorFlow writes bundle "
                                "indexes uncompressed, so this is not a tensor bundle index")
    return contents


def _block_entries(block: bytes) -> Iterator[Tuple[bytes, bytes]]:
    if len(block) < 4:
        raise TFCheckpointError("bad table block")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 * (1 + num_restarts)
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        yield key, block[pos:pos + value_len]
        pos += value_len


def _read_table(data: bytes) -> Dict[bytes, bytes]:
    if len(data) < _FOOTER_LEN:
        raise TFCheckpointError("file too short for a TensorFlow index")
    footer = data[-_FOOTER_LEN:]
    lo, hi = struct.unpack_from("<II", footer, _FOOTER_LEN - 8)
    if (hi << 32) | lo != _TABLE_MAGIC:
        raise TFCheckpointError("not a TensorFlow checkpoint index (bad table magic number)")
    _, pos = _varint(footer, 0)  # metaindex handle (unused: TF writes no filter blocks)
    _, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, _ = _varint(footer, pos)
    table = {}
    for _, handle in _block_entries(_read_block(data, index_offset, index_size, "index")):
        offset, p = _varint(handle, 0)
        size, _ = _varint(handle, p)
        for key, value in _block_entries(_read_block(data, offset, size, "data")):
            table[key] = value
    return table


class TFCheckpoint(Mapping[str, np.ndarray]):
    """A read-only mapping {variable name: numpy array} over a TensorFlow checkpoint (lazy reads)."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        self._zip: Optional[zipfile.ZipFile] = None
        index_bytes, self._data_names = self._locate(self.path)
        table = _read_table(index_bytes)
        header = table.pop(b"", None)
        if header is None:
            raise TFCheckpointError(f"{self.path}: index has no bundle header (an old V1 checkpoint?)")
        self.num_shards, endianness = 1, 0
        for field, _, value in _proto_fields(header):
            if field == 1:
                self.num_shards = value
            elif field == 2:
                endianness = value
        if endianness != 0:
            raise TFCheckpointError(f"{self.path}: big-endian checkpoints are not supported")
        self._entries = {k.decode("utf-8"): _Entry(v) for k, v in table.items()}

    # -- locating the files ------------------------------------------------------------------
    def _locate(self, path: Path) -> Tuple[bytes, Dict[int, str]]:
        if path.suffix == ".zip" and path.is_file():
            self._zip = zipfile.ZipFile(path)
            indexes = [n for n in self._zip.namelist() if n.endswith(".index") and "/hub/" not in f"/{n}"]
            if len(indexes) != 1:
                raise TFCheckpointError(f"{path}: expected one TensorFlow checkpoint (*.index) in the zip, "
                                        f"found {indexes or 'none'}")
            prefix = indexes[0][: -len(".index")]
            return self._zip.read(indexes[0]), self._shards(self._zip.namelist(), prefix)
        if path.is_dir():
            indexes = sorted(path.glob("*.index"))
            if len(indexes) != 1:
                raise TFCheckpointError(f"{path}: expected one *.index file in the directory, found "
                                        f"{[p.name for p in indexes] or 'none'}")
            path = indexes[0]
        prefix = str(path)
        if ".data-" in path.name:
            prefix = str(path.with_name(path.name.split(".data-")[0]))
        elif path.name.endswith(".index"):
            prefix = prefix[: -len(".index")]
        index = Path(prefix + ".index")
        if not index.is_file():
            raise TFCheckpointError(f"TensorFlow checkpoint index not found: {index}")
        names = [str(p) for p in index.parent.glob(Path(prefix).name + ".data-*")]
        return index.read_bytes(), self._shards(names, prefix)

    @staticmethod
    def _shards(names: List[str], prefix: str) -> Dict[int, str]:
        """{shard: file} among `names` (other files, e.g. download sidecars, are ignored)."""
        pattern = re.compile(re.escape(prefix) + r"\.data-(\d+)-of-(\d+)")
        return {int(m.group(1)): n for n in names if (m := pattern.fullmatch(n))}

    # -- mapping API ---------------------------------------------------------------------------
    def __iter__(self):
        return iter(self._entries)

    def __len__(self):
        return len(self._entries)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def shape(self, name: str) -> Tuple[int, ...]:
        return self._entries[name].shape

    def shapes(self) -> Dict[str, Tuple[int, ...]]:
        """{name: shape} of every variable, from the index alone."""
        return {name: entry.shape for name, entry in self._entries.items()}

    def __getitem__(self, name: str) -> np.ndarray:
        return self.read([name])[name]

    def read(self, names: Optional[List[str]] = None) -> Dict[str, np.ndarray]:
        """Numeric tensors by name (all of them when `names` is None); read in file order."""
        explicit = names is not None
        names = list(names) if explicit else list(self._entries)
        entries = []
        for name in names:
            entry = self._entries[name]  # KeyError for unknown names, like a dict
            if entry.sliced:
                raise TFCheckpointError(f"{name} is a partitioned variable; not supported")
            if entry.dtype == _DT_STRING or (entry.dtype not in _DTYPES and entry.dtype != _DT_BFLOAT16):
                if explicit:
                    raise TFCheckpointError(f"{name} has a non-numeric dtype ({entry.dtype})")
                continue
            entries.append((entry.shard, entry.offset, name, entry))
        out: Dict[str, np.ndarray] = {}
        for shard in sorted({e[0] for e in entries}):
            with self._open_shard(shard) as fh:
                for _, offset, name, entry in sorted(e for e in entries if e[0] == shard):
                    fh.seek(offset)
                    raw = fh.read(entry.size)
                    if len(raw) != entry.size:
                        raise TFCheckpointError(f"{name}: data file is truncated")
                    out[name] = self._decode(name, entry, raw)
        return out

    def _open_shard(self, shard: int):
        if shard not in self._data_names:
            raise TFCheckpointError(f"{self.path}: data shard {shard} of {self.num_shards} is missing "
                                    f"(expected PREFIX.data-{shard:05d}-of-{self.num_shards:05d})")
        name = self._data_names[shard]
        return self._zip.open(name) if self._zip is not None else open(name, "rb")

    @staticmethod
    def _decode(name: str, entry: _Entry, raw: bytes) -> np.ndarray:
        count = int(np.prod(entry.shape, dtype=np.int64))
        if entry.dtype == _DT_BFLOAT16:
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=_DTYPES[entry.dtype])
        if arr.size != count:
            raise TFCheckpointError(f"{name}: {arr.size} values stored for shape {entry.shape}")
        return arr.reshape(entry.shape).copy()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def read_tf_checkpoint(path: Union[str, Path], names: Optional[List[str]] = None) -> Dict[str, np.ndarray]:
    """{variable name: array} of a TensorFlow checkpoint (see TFCheckpoint for accepted paths)."""
    ckpt = TFCheckpoint(path)
    try:
        return ckpt.read(names)
    finally:
        ckpt.close()
