"""Read legacy (non-zip) ``torch.save`` state dicts with pickle and numpy only (no torch).

Layout: five pickles back to back (magic number, protocol version, sys_info, the state dict, the
list of storage keys), then for each key an int64 element count followed by the raw
little-endian data.
"""

from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "LongStorage": np.dtype("<i8"),
}

# Anything a malformed pickle stream may raise while loading.
_PICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
)


class _StorageType:
    """Stand-in for a ``torch.*Storage`` class: remembers only its element dtype."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    """A storage referenced by the state dict; its data is read after the pickles."""

    def __init__(self, dtype: np.dtype, numel: int) -> None:
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _TensorRef:
    """A tensor as described by ``_rebuild_tensor_v2``, materialised once its storage is read."""

    def __init__(
        self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride

    def to_numpy(self, name: str) -> np.ndarray:
        """Return a C-contiguous copy, honouring the (possibly non-contiguous) strides."""
        data = self.storage.data
        if data is None:
            raise ValueError(f"tensor {name!r}: its storage data is missing from the file")
        if len(self.size) != len(self.stride):
            raise ValueError(f"tensor {name!r}: size {self.size} and stride {self.stride} differ")
        if self.offset < 0 or any(n < 0 for n in self.size) or any(s < 0 for s in self.stride):
            raise ValueError(f"tensor {name!r}: negative offset, size or stride")
        if all(self.size):
            last = self.offset + sum(
                (n - 1) * s for n, s in zip(self.size, self.stride, strict=True)
            )
            if last >= data.size:
                raise ValueError(f"tensor {name!r}: offset and strides run past its storage")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(s * data.itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view, order="C", copy=True)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the four globals a legacy torch state dict needs.

    ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage`` and
    ``torch.LongStorage``; every other global raises ``pickle.UnpicklingError``. Storages arrive
    as persistent ids and are collected in ``self.storages`` (key -> storage, data not yet read).
    """

    def __init__(self, file: io.BufferedIOBase) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        """Return a stand-in for an allowed global; refuse everything else."""
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")

    def persistent_load(self, pid: Any) -> _Storage:
        """Resolve ``('storage', storage_type, key, location, numel, view_metadata)`` ids."""
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel, view_metadata = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(numel, int):
            raise pickle.UnpicklingError(f"malformed storage reference {pid!r}")
        if view_metadata is not None:
            raise pickle.UnpicklingError(f"storage views are not supported: {pid!r}")
        key = str(key)
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(storage_type.dtype, numel)
        elif storage.dtype != storage_type.dtype or storage.numel != numel:
            raise pickle.UnpicklingError(f"storage {key!r} is referenced inconsistently")
        return storage

    @staticmethod
    def _rebuild_tensor_v2(
        storage: _Storage,
        storage_offset: int,
        size: tuple[int, ...],
        stride: tuple[int, ...],
        requires_grad: bool = False,
        backward_hooks: Any = None,
        metadata: Any = None,
    ) -> _TensorRef:
        """Stand-in for ``torch._utils._rebuild_tensor_v2`` (grad flags and hooks are dropped)."""
        if not isinstance(storage, _Storage):
            raise pickle.UnpicklingError("_rebuild_tensor_v2 called without a storage")
        ints = (storage_offset, *size, *stride)
        if not all(isinstance(v, int) for v in ints):
            raise pickle.UnpicklingError("_rebuild_tensor_v2 called with non-integer geometry")
        return _TensorRef(storage, storage_offset, tuple(size), tuple(stride))


def _load(unpickler: RestrictedUnpickler, what: str) -> Any:
    """Run one pickle load, turning any failure into a one-line ``ValueError``."""
    try:
        return unpickler.load()
    except _PICKLE_ERRORS as exc:
        raise ValueError(f"not a legacy torch.save file: cannot read its {what}: {exc}") from exc


def _read_exact(f: io.BytesIO, n: int, what: str) -> bytes:
    """Read exactly ``n`` bytes or raise ``ValueError`` (truncated file)."""
    chunk = f.read(n)
    if len(chunk) != n:
        raise ValueError(
            f"truncated legacy torch.save file: {what} needs {n} bytes, got {len(chunk)}"
        )
    return chunk


def read_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a legacy-format ``torch.save`` state dict into ``{name: contiguous numpy array}``.

    Raises ``ValueError`` for anything that is not this format (zip-format files included).
    """
    raw = Path(path).read_bytes()
    if raw.startswith(b"PK"):
        raise ValueError(
            f"{path}: zip-format torch file; only the legacy (pre-1.6, non-zip) format is supported"
        )
    f = io.BytesIO(raw)

    magic = _load(RestrictedUnpickler(f), "magic number")
    if magic != LEGACY_MAGIC:
        raise ValueError(f"{path}: not a legacy torch.save file (wrong magic number)")
    version = _load(RestrictedUnpickler(f), "protocol version")
    if version != LEGACY_PROTOCOL_VERSION:
        raise ValueError(f"{path}: unsupported legacy torch.save protocol version {version!r}")
    sys_info = _load(RestrictedUnpickler(f), "sys_info")
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise ValueError(f"{path}: only little-endian legacy torch.save files are supported")

    unpickler = RestrictedUnpickler(f)
    state = _load(unpickler, "state dict")
    if not isinstance(state, dict):
        raise ValueError(f"{path}: the saved object is a {type(state).__name__}, not a state dict")
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, _TensorRef):
            raise ValueError(f"{path}: state dict entry {name!r} is not a tensor")

    keys = _load(RestrictedUnpickler(f), "storage keys")
    if not isinstance(keys, list):
        raise ValueError(f"{path}: malformed storage key list")
    for key in keys:
        storage = unpickler.storages.get(str(key))
        if storage is None:
            raise ValueError(f"{path}: data for unknown storage {key!r}")
        header = _read_exact(f, 8, f"storage {key!r} header")
        numel = int(np.frombuffer(header, dtype="<i8")[0])
        if numel != storage.numel:
            raise ValueError(
                f"{path}: storage {key!r} has {numel} elements, expected {storage.numel}"
            )
        data = _read_exact(f, numel * storage.dtype.itemsize, f"storage {key!r} data")
        storage.data = np.frombuffer(data, dtype=storage.dtype)

    return {name: ref.to_numpy(name) for name, ref in state.items()}
