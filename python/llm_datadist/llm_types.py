# SPDX-License-Identifier: Apache-2.0
"""The value types of upstream LLM-DataDist's CacheManager API: `Placement`, `CacheDesc`, the
three key kinds, `Cache`, the layer-wise transfer helpers (`LayerSynchronizer`,
`TransferConfig`, `TransferWithCacheKeyConfig`, `CacheTask`), `MemInfo` and the small enums.

Constructors, defaults, properties and the errors they raise follow upstream, so code written
for Ascend constructs them unchanged. They hold data only; the work is done by CacheManager.
"""
from __future__ import annotations

import concurrent.futures
import threading
from abc import ABC, abstractmethod
from enum import Enum, IntEnum
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from . import _core
from ._validation import (U64_MAX, check_int, check_int_list, check_range, check_type,
                          param_invalid)
from .data_type import DataType
from .status import LLMException, LLMStatusCode, code_2_status

__all__ = [
    "INVALID_ID",
    "Placement",
    "RegisterMemStatus",
    "Memtype",
    "MemInfo",
    "PushType",
    "CacheDesc",
    "CacheKey",
    "CacheKeyByIdAndIndex",
    "BlocksCacheKey",
    "Cache",
    "LayerSynchronizer",
    "TransferConfig",
    "TransferWithCacheKeyConfig",
    "CacheTask",
    "is_valid_id",
]

#: 2**64-1: "no id" for req_id / prefix_id (a req_id of INVALID_ID is a padding slot).
INVALID_ID = U64_MAX


def is_valid_id(req_or_prefix_id: int) -> bool:
    """Upstream's rule: a req_id/prefix_id is valid when 0 <= id < 2**64-1."""
    return 0 <= req_or_prefix_id < INVALID_ID


# ---- enums -------------------------------------------------------------------------------------


class Placement(IntEnum):
    """Where a cache's memory lives: HOST memory or the DEVICE (a CUDA device, or host memory
    standing in for one on a CPU-only host)."""

    HOST = 0
    DEVICE = 1

    def __str__(self) -> str:
        return f"{self.__class__.__name__}.{self.name}"


class RegisterMemStatus(Enum):
    """Result of `LLMDataDist.query_register_mem_status` for a rank-table link."""

    OK = 0
    PREPARING = 1
    FAILED = 2


class Memtype(Enum):
    """Memory kind of a `MemInfo`."""

    MEM_TYPE_DEVICE = 0
    MEM_TYPE_HOST = 1


class PushType(Enum):
    """Internal: how a layer-wise push names its destination."""

    NO_CACHE_KEY = 0
    BLOCKS_CACHE_KEY = 1
    CACHE_KEY_BY_ID = 2


class MemInfo:
    """A registered memory range, for `CacheManager.remap_registered_memory`."""

    def __init__(self, mem_type: Memtype, addr: int, size: int) -> None:
        check_type(mem_type, "mem_type", Memtype)
        check_int(addr, "addr", "uint64")
        check_int(size, "size", "uint64")
        self._mem_type = mem_type
        self._addr = addr
        self._size = size

    @property
    def mem_type(self) -> Memtype:
        return self._mem_type

    @property
    def addr(self) -> int:
        return self._addr

    @property
    def size(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return f"MemInfo(mem_type={self._mem_type}, addr={self._addr}, size={self._size})"


# ---- CacheDesc ---------------------------------------------------------------------------------


class CacheDesc:
    """Describes a cache: `num_tensors` tensors of one `shape` and `data_type`, in `placement`.

    For a contiguous cache `shape[batch_dim_index]` is the batch size and each tensor splits
    into that many equal slots; for a blocks cache `shape[0]` is the number of blocks.
    `size` is the bytes of ONE tensor.
    """

    def __init__(self,
                 num_tensors: int,
                 shape: Union[List[int], Tuple[int, ...]],
                 data_type: DataType,
                 placement: Placement = Placement.DEVICE,
                 batch_dim_index: int = 0,
                 seq_len_dim_index: int = -1,
                 kv_tensor_format: Optional[str] = None) -> None:
        check_int(num_tensors, "num_tensors", "uint32")
        check_int_list(shape, "shape", "int64")
        check_type(data_type, "data_type", DataType)
        check_type(placement, "placement", Placement)
        check_int(batch_dim_index, "batch_dim_index", "int32")
        check_int(seq_len_dim_index, "seq_len_dim_index", "int32")
        check_type(kv_tensor_format, "kv_tensor_format", str, allow_none=True)
        if not 0 <= batch_dim_index < len(shape):
            raise param_invalid(f"batch_dim_index {batch_dim_index} out of range, should be in "
                                f"[0, {len(shape)}) for shape {list(shape)}.")
        if not (seq_len_dim_index == -1 or 0 <= seq_len_dim_index < len(shape)):
            raise param_invalid(f"seq_len_dim_index {seq_len_dim_index} is invalid, should be -1 "
                                f"or in [0, {len(shape)}) for shape {list(shape)}.")
        self._num_tensors = num_tensors
        self._shape: List[int] = list(shape)
        self._data_type = data_type
        self._placement = placement
        self._batch_dim = batch_dim_index
        self._seq_len_dim_index = seq_len_dim_index
        self._kv_tensor_format = kv_tensor_format
        self._size = -1
        #: set by allocate_blocks_cache / register_blocks_cache
        self._is_blocks = False

    @property
    def num_tensors(self) -> int:
        return self._num_tensors

    @property
    def shape(self) -> List[int]:
        """A copy of the shape (change it with update_dim, which keeps `size` right)."""
        return list(self._shape)

    @property
    def data_type(self) -> DataType:
        return self._data_type

    @property
    def placement(self) -> Placement:
        return self._placement

    @property
    def batch_dim(self) -> int:
        """batch_dim_index given at construction."""
        return self._batch_dim

    @property
    def batch_size(self) -> int:
        """shape[batch_dim_index]."""
        return self._shape[self._batch_dim]

    @property
    def seq_len_dim_index(self) -> int:
        return self._seq_len_dim_index

    @property
    def kv_tensor_format(self) -> Optional[str]:
        return self._kv_tensor_format

    @property
    def size(self) -> int:
        """Bytes of one tensor, computed by the core (as upstream) and cached. LLMException
        LLM_PARAM_INVALID for a shape or type with no size (negative dim, DT_STRING, ...)."""
        if self._size < 0:
            size = _core.calc_tensor_size(self._shape, self._data_type.value)
            if size < 0:
                raise param_invalid(f"Failed to calc tensor size, shape = {self._shape}, "
                                    f"data_type = {self._data_type}.")
            self._size = size
        return self._size

    def update_dim(self, dim_index: int, dim_value: int) -> None:
        """Set shape[dim_index] = dim_value and forget the cached size."""
        check_int(dim_index, "dim_index", "int32")
        check_int(dim_value, "dim_value", "int64")
        if not 0 <= dim_index < len(self._shape):
            raise param_invalid(f"dim_index {dim_index} out of range, should be in "
                                f"[0, {len(self._shape)}).")
        self._shape[dim_index] = dim_value
        self._size = -1

    def _clone(self) -> "CacheDesc":
        """An independent copy (the blocks flag included)."""
        desc = CacheDesc(self._num_tensors, list(self._shape), self._data_type, self._placement,
                         self._batch_dim, self._seq_len_dim_index, self._kv_tensor_format)
        desc._is_blocks = self._is_blocks
        return desc

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CacheDesc):
            return NotImplemented
        return (self._num_tensors, self._shape, self._data_type, self._placement) == (
            other._num_tensors, other._shape, other._data_type, other._placement)

    # Mutable (update_dim) and compared by value, so not hashable.
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"CacheDesc(num_tensors={self._num_tensors}, shape={self._shape}, "
                f"data_type={self._data_type}, placement={self._placement}, "
                f"batch_dim_index={self._batch_dim}, seq_len_dim_index={self._seq_len_dim_index}, "
                f"kv_tensor_format={self._kv_tensor_format!r})")


# ---- keys --------------------------------------------------------------------------------------


def _bind_key_args(cls_name: str, args: Tuple[Any, ...], kwargs: Dict[str, Any],
                   names: Tuple[str, ...], required: Tuple[str, ...]) -> Tuple[Dict[str, Any], str]:
    """Bind upstream's flexible key arguments: positional in `names` order, keywords by name,
    `prompt_cluster_id` as another spelling of `cluster_id`. Returns (values, the spelling the
    caller used for the cluster id). Every misuse is LLMException LLM_PARAM_INVALID."""
    given = len(args) + len(kwargs)
    if given > len(names):
        raise param_invalid(f"{cls_name} takes at most {len(names)} params, but got {given}.")
    valid = ("prompt_cluster_id",) + names
    for key in kwargs:
        if key not in valid:
            raise param_invalid(f"{cls_name} got unsupported param {key!r}, supported: "
                                f"{list(valid)}.")
    if "prompt_cluster_id" in kwargs and "cluster_id" in kwargs:
        raise param_invalid(f"{cls_name} got both prompt_cluster_id and cluster_id; give one.")
    cluster_key = "prompt_cluster_id" if "prompt_cluster_id" in kwargs else "cluster_id"
    values = {("cluster_id" if k == "prompt_cluster_id" else k): v for k, v in kwargs.items()}
    for name, value in zip(names, args):
        if name in values:
            spelled = cluster_key if name == "cluster_id" else name
            raise param_invalid(f"{cls_name} got multiple values for param {spelled!r}.")
        values[name] = value
    for name in required:
        if name not in values:
            missing = "prompt_cluster_id or cluster_id" if name == "cluster_id" else name
            raise param_invalid(f"{cls_name} param {missing} is required.")
    return values, cluster_key


# The core's RemoteKeyKind (link/messages.h) as ints. Each key keeps `_transfer`, the
# (remote cluster, key kind, req_id, prefix_id, model_id, remote cache_id, remote batch_index)
# Engine.transfer takes as one tuple, made once: keys are immutable and a pull should not rebuild it.
_KEY_KIND_CACHE_KEY = int(_core.RemoteKeyKind.CACHE_KEY)
_KEY_KIND_ID_AND_INDEX = int(_core.RemoteKeyKind.CACHE_ID_AND_INDEX)
_KEY_KIND_BLOCKS_KEY = int(_core.RemoteKeyKind.BLOCKS_KEY)
_TransferKey = Tuple[int, int, int, int, int, int, int]


class _ValueKey:
    """Keys compare and hash by value (their `_fields()`), and only equal keys of one type."""

    __slots__ = ()

    def _fields(self) -> Tuple[int, ...]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash((type(self).__name__,) + self._fields())


class CacheKey(_ValueKey):
    """Names a batch slot of a cache by request (or prefix):
    ``CacheKey(prompt_cluster_id|cluster_id, req_id, model_id=0, prefix_id=2**64-1)``, all
    uint64. `cluster_id` is the cluster that owns the cache (ignored when allocating locally).
    """

    __slots__ = ("_cluster_id", "_req_id", "_model_id", "_prefix_id", "_cluster_key", "_transfer")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        values, self._cluster_key = _bind_key_args(
            "CacheKey", args, kwargs, ("cluster_id", "req_id", "model_id", "prefix_id"),
            ("cluster_id", "req_id"))
        self._cluster_id: int = values["cluster_id"]
        self._req_id: int = values["req_id"]
        self._model_id: int = values.get("model_id", 0)
        self._prefix_id: int = values.get("prefix_id", INVALID_ID)
        check_int(self._cluster_id, self._cluster_key, "uint64")
        check_int(self._req_id, "req_id", "uint64")
        check_int(self._model_id, "model_id", "uint64")
        check_int(self._prefix_id, "prefix_id", "uint64")
        self._transfer: _TransferKey = (self._cluster_id, _KEY_KIND_CACHE_KEY, self._req_id, self._prefix_id, self._model_id, -1, 0)

    @property
    def cluster_id(self) -> int:
        return self._cluster_id

    @property
    def prompt_cluster_id(self) -> int:
        return self._cluster_id

    @property
    def req_id(self) -> int:
        return self._req_id

    @property
    def model_id(self) -> int:
        return self._model_id

    @property
    def prefix_id(self) -> int:
        return self._prefix_id

    def _pack(self) -> Tuple[int, int, int, int, int, int, bool]:
        """Wire form (cluster_id, cache_id, batch_index, req_id, prefix_id, model_id, blocks)."""
        return (self._cluster_id, -1, 0, self._req_id, self._prefix_id, self._model_id, False)

    def _fields(self) -> Tuple[int, int, int, int]:
        return (self._cluster_id, self._req_id, self._model_id, self._prefix_id)

    def __repr__(self) -> str:
        return (f"CacheKey({self._cluster_key}={self._cluster_id}, req_id={self._req_id}, "
                f"model_id={self._model_id}, prefix_id={self._prefix_id})")


class CacheKeyByIdAndIndex(_ValueKey):
    """Names one batch slot of a remote cache directly: (cluster_id uint64, cache_id int64,
    batch_index uint32)."""

    __slots__ = ("_cluster_id", "_cache_id", "_batch_index", "_transfer")

    def __init__(self, cluster_id: int, cache_id: int, batch_index: int = 0) -> None:
        check_int(cluster_id, "cluster_id", "uint64")
        check_int(cache_id, "cache_id", "int64")
        check_int(batch_index, "batch_index", "uint32")
        self._cluster_id = cluster_id
        self._cache_id = cache_id
        self._batch_index = batch_index
        self._transfer: _TransferKey = (cluster_id, _KEY_KIND_ID_AND_INDEX, INVALID_ID, INVALID_ID, 0, cache_id, batch_index)

    @property
    def cluster_id(self) -> int:
        return self._cluster_id

    @property
    def cache_id(self) -> int:
        return self._cache_id

    @property
    def batch_index(self) -> int:
        return self._batch_index

    def _pack(self) -> Tuple[int, int, int, int, int, int, bool]:
        """Wire form (cluster_id, cache_id, batch_index, req_id, prefix_id, model_id, blocks)."""
        return (self._cluster_id, self._cache_id, self._batch_index, INVALID_ID, INVALID_ID, 0,
                False)

    def _fields(self) -> Tuple[int, int, int]:
        return (self._cluster_id, self._cache_id, self._batch_index)

    def __repr__(self) -> str:
        return (f"CacheKeyByIdAndIndex(cluster_id={self._cluster_id}, cache_id={self._cache_id}, "
                f"batch_index={self._batch_index})")


class BlocksCacheKey(_ValueKey):
    """Names a blocks (paged) cache: ``BlocksCacheKey(prompt_cluster_id|cluster_id,
    model_id=0)``, both uint64."""

    __slots__ = ("_cluster_id", "_model_id", "_cluster_key", "_transfer")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        values, self._cluster_key = _bind_key_args(
            "BlocksCacheKey", args, kwargs, ("cluster_id", "model_id"), ("cluster_id",))
        self._cluster_id: int = values["cluster_id"]
        self._model_id: int = values.get("model_id", 0)
        check_int(self._cluster_id, self._cluster_key, "uint64")
        check_int(self._model_id, "model_id", "uint64")
        self._transfer: _TransferKey = (self._cluster_id, _KEY_KIND_BLOCKS_KEY, INVALID_ID, INVALID_ID, self._model_id, -1, 0)

    @property
    def cluster_id(self) -> int:
        return self._cluster_id

    @property
    def prompt_cluster_id(self) -> int:
        return self._cluster_id

    @property
    def model_id(self) -> int:
        return self._model_id

    def _pack(self) -> Tuple[int, int, int, int, int, int, bool]:
        """Wire form (cluster_id, cache_id, batch_index, req_id, prefix_id, model_id, blocks)."""
        return (self._cluster_id, -1, 0, INVALID_ID, INVALID_ID, self._model_id, True)

    def _fields(self) -> Tuple[int, int]:
        return (self._cluster_id, self._model_id)

    def __repr__(self) -> str:
        return f"BlocksCacheKey({self._cluster_key}={self._cluster_id}, model_id={self._model_id})"


# ---- Cache -------------------------------------------------------------------------------------


class Cache:
    """A cache returned by CacheManager.allocate_*/register_* (users do not construct it):
    `num_tensors` tensors described by `cache_desc`, one address per tensor in `tensor_addrs`.
    After deallocation the object is invalidated (`tensor_addrs == []`)."""

    def __init__(self,
                 cache_id: int,
                 cache_desc: CacheDesc,
                 tensor_addrs: Union[List[int], Tuple[int, ...]],
                 cache_manager: Any = None,
                 is_registered: bool = False,
                 is_blocks_cache: bool = False) -> None:
        check_int(cache_id, "cache_id", "int64")
        check_type(cache_desc, "cache_desc", CacheDesc)
        check_int_list(tensor_addrs, "tensor_addrs", "uint64")
        check_type(is_registered, "is_registered", bool)
        check_type(is_blocks_cache, "is_blocks_cache", bool)
        self._cache_id = cache_id
        self._cache_desc = cache_desc
        self._tensor_addrs: List[int] = list(tensor_addrs)
        self._cache_manager = cache_manager
        self._is_registered = is_registered
        self._is_blocks_cache = is_blocks_cache
        self._valid = True

    @property
    def cache_id(self) -> int:
        """Engine id (ids start at 1 per process); -1 for a cpu cache."""
        return self._cache_id

    @property
    def cache_desc(self) -> CacheDesc:
        return self._cache_desc

    @property
    def tensor_addrs(self) -> List[int]:
        """One address per tensor; [] once deallocated."""
        return self._tensor_addrs

    @property
    def is_blocks_cache(self) -> bool:
        return self._is_blocks_cache

    @property
    def is_registered(self) -> bool:
        """True for user memory given to register_*; False for pool memory."""
        return self._is_registered

    def _invalidate(self) -> None:
        """Called after deallocate: the addresses no longer belong to this cache."""
        self._tensor_addrs = []
        self._valid = False

    @classmethod
    def create_cpu_cache(cls, cache_desc: CacheDesc, addrs: List[int]) -> "Cache":
        """Wrap host memory the caller owns (e.g. for swap_blocks): placement must be HOST and
        there must be one address per tensor. The cache has id -1 and is a blocks cache."""
        check_type(cache_desc, "cache_desc", CacheDesc)
        check_int_list(addrs, "addrs", "uint64")
        if cache_desc.placement != Placement.HOST:
            raise param_invalid(f"cache_desc placement must be {Placement.HOST}, but got "
                                f"{cache_desc.placement}.")
        if len(addrs) != cache_desc.num_tensors:
            raise param_invalid(f"cache_desc num_tensors:{cache_desc.num_tensors} not equal "
                                f"addrs num:{len(addrs)}.")
        return cls(-1, cache_desc, list(addrs), None, False, True)

    def __repr__(self) -> str:
        return (f"Cache(cache_id={self._cache_id}, num_tensors={len(self._tensor_addrs)}, "
                f"is_blocks_cache={self._is_blocks_cache}, is_registered={self._is_registered})")

    # -- zero-copy views (ours, not upstream) -----------------------------------------------
    # A view pins the cache's memory: it stays valid, and is not reused by the pool, until the
    # view is dropped, even if the cache is deallocated or the instance finalized meanwhile.

    def _views(self, tensor_index: Optional[int]) -> List[Any]:
        if self._cache_manager is None:
            raise param_invalid("a cache made by Cache.create_cpu_cache is caller memory; "
                                "view it with your own array.")
        if tensor_index is None:
            return [self._cache_manager._tensor_view(self, i) for i in range(self._cache_desc.num_tensors)]
        return [self._cache_manager._tensor_view(self, tensor_index)]

    def numpy(self, tensor_index: Optional[int] = None) -> Any:
        """numpy arrays over the cache's tensors (shape and dtype of cache_desc; DT_BF16 appears
        as uint16 bit patterns), one per tensor, or the one at `tensor_index`. Host and CPU-device
        memory only; use torch() for CUDA memory."""
        views = [view.as_numpy() for view in self._views(tensor_index)]
        return views if tensor_index is None else views[0]

    def torch(self, tensor_index: Optional[int] = None) -> Any:
        """torch tensors over the cache's tensors (through DLPack; on the CUDA device for CUDA
        memory). Needs torch, which is imported only here."""
        from torch.utils.dlpack import from_dlpack  # optional dependency: imported on use only
        views = [from_dlpack(view) for view in self._views(tensor_index)]
        return views if tensor_index is None else views[0]


# ---- layer-wise transfer -----------------------------------------------------------------------


class LayerSynchronizer(ABC):
    """Implemented by the user for transfer_cache_async: block until a layer's KV is ready."""

    @abstractmethod
    def synchronize_layer(self, layer_index: int, timeout_in_millis: Optional[int]) -> bool:
        """Wait until layer `layer_index` is computed; True to send it, False to abort (the
        transfers that include the layer then report LLM_PARAM_INVALID, as upstream).

        transfer_cache_async calls it from its own thread, for the layers in ascending order,
        with `timeout_in_millis` = the instance's sync_kv_timeout (upstream passes None): a call
        that has not returned by then fails those transfers with LLM_TIMEOUT, so the task ends
        even when a layer never becomes ready."""


class TransferConfig:
    """A layer-wise push destination by address: `dst_addrs` holds the absolute remote tensor
    addresses, 2 per transferred layer (K, V), already offset to the target batch slot."""

    def __init__(self,
                 dst_cluster_id: int,
                 dst_addrs: List[int],
                 src_layer_range: Optional[range] = None,
                 src_batch_index: int = 0) -> None:
        check_int(dst_cluster_id, "dst_cluster_id", "uint64")
        check_int_list(dst_addrs, "dst_addrs", "uint64")
        check_range(src_layer_range, "src_layer_range", allow_none=True)
        check_int(src_batch_index, "src_batch_index", "uint32")
        self._dst_cluster_id = dst_cluster_id
        self._dst_addrs = dst_addrs
        self._src_layer_range = src_layer_range
        self._src_batch_index = src_batch_index
        #: always None for an address-based config (upstream keeps the attribute)
        self.dst_layer_range: Optional[range] = None

    @property
    def dst_cluster_id(self) -> int:
        return self._dst_cluster_id

    @dst_cluster_id.setter
    def dst_cluster_id(self, dst_cluster_id: int) -> None:
        check_int(dst_cluster_id, "dst_cluster_id", "uint64")
        self._dst_cluster_id = dst_cluster_id

    @property
    def dst_addrs(self) -> List[int]:
        return self._dst_addrs

    @dst_addrs.setter
    def dst_addrs(self, dst_addrs: List[int]) -> None:
        check_int_list(dst_addrs, "dst_addrs", "uint64")
        self._dst_addrs = dst_addrs

    @property
    def src_layer_range(self) -> Optional[range]:
        """None = every layer of the source cache."""
        return self._src_layer_range

    @src_layer_range.setter
    def src_layer_range(self, src_layer_range: Optional[range]) -> None:
        check_range(src_layer_range, "src_layer_range", allow_none=True)
        self._src_layer_range = src_layer_range

    @property
    def src_batch_index(self) -> int:
        return self._src_batch_index

    @src_batch_index.setter
    def src_batch_index(self, src_batch_index: int) -> None:
        check_int(src_batch_index, "src_batch_index", "uint32")
        self._src_batch_index = src_batch_index

    def __repr__(self) -> str:
        return (f"TransferConfig(dst_cluster_id={self._dst_cluster_id}, "
                f"dst_addrs={self._dst_addrs}, src_layer_range={self._src_layer_range}, "
                f"src_batch_index={self._src_batch_index})")


class TransferWithCacheKeyConfig:
    """A layer-wise push destination by key: source layers `src_layer_range` go to the remote
    cache's layers `dst_layer_range`.

    As upstream, the constructor checks its arguments (both ranges given, step 1,
    0 <= start < stop, equal lengths; `src_batch_index` 0 for a BlocksCacheKey), and after that
    the fields are plain attributes: the setters check only the value's own type and form, so
    `src_layer_range` and `dst_layer_range` can be changed one after the other to a new length,
    a range can be set to None (src: every layer; dst: the same layer indices as the source),
    and `dst_cluster_id` is writable (it starts as the key's cluster id; the push goes to the
    key's cluster). The whole config is checked when it is used, by transfer_cache_async."""

    def __init__(self,
                 cache_key: Union[BlocksCacheKey, CacheKeyByIdAndIndex],
                 src_layer_range: range = None,  # type: ignore[assignment]  # required
                 dst_layer_range: range = None,  # type: ignore[assignment]  # required
                 src_batch_index: int = 0) -> None:
        check_type(cache_key, "cache_key", (BlocksCacheKey, CacheKeyByIdAndIndex))
        check_range(src_layer_range, "src_layer_range")
        check_range(dst_layer_range, "dst_layer_range")
        # both have step 1 (check_range); stop - start, as len() of a range longer than
        # sys.maxsize raises OverflowError
        src_len = src_layer_range.stop - src_layer_range.start
        dst_len = dst_layer_range.stop - dst_layer_range.start
        if src_len != dst_len:
            raise param_invalid(f"src_layer_range {src_layer_range!r} size ({src_len}) should be equal to "
                                f"dst_layer_range {dst_layer_range!r} size ({dst_len}).")
        check_int(src_batch_index, "src_batch_index", "uint32")
        self._check_batch_index(cache_key, src_batch_index)
        self._cache_key: Optional[Union[BlocksCacheKey, CacheKeyByIdAndIndex]] = cache_key
        self._src_layer_range: Optional[range] = src_layer_range
        self._dst_layer_range: Optional[range] = dst_layer_range
        self._src_batch_index = src_batch_index
        #: a plain attribute, as upstream: the key's cluster at construction
        self.dst_cluster_id: Any = cache_key.cluster_id

    @staticmethod
    def _check_batch_index(cache_key: Any, src_batch_index: Any) -> None:
        if isinstance(cache_key, BlocksCacheKey) and src_batch_index != 0:
            raise param_invalid(f"src_batch_index should be 0 when cache_key is BlocksCacheKey, "
                                f"but got {src_batch_index!r}.")

    @property
    def cache_key(self) -> Optional[Union[BlocksCacheKey, CacheKeyByIdAndIndex]]:
        return self._cache_key

    @cache_key.setter
    def cache_key(self, cache_key: Optional[Union[BlocksCacheKey, CacheKeyByIdAndIndex]]) -> None:
        check_type(cache_key, "cache_key", (BlocksCacheKey, CacheKeyByIdAndIndex), allow_none=True)
        self._cache_key = cache_key

    @property
    def src_layer_range(self) -> Optional[range]:
        return self._src_layer_range

    @src_layer_range.setter
    def src_layer_range(self, src_layer_range: Optional[range]) -> None:
        check_range(src_layer_range, "src_layer_range", allow_none=True)
        self._src_layer_range = src_layer_range

    @property
    def dst_layer_range(self) -> Optional[range]:
        return self._dst_layer_range

    @dst_layer_range.setter
    def dst_layer_range(self, dst_layer_range: Optional[range]) -> None:
        check_range(dst_layer_range, "dst_layer_range", allow_none=True)
        self._dst_layer_range = dst_layer_range

    @property
    def src_batch_index(self) -> int:
        return self._src_batch_index

    @src_batch_index.setter
    def src_batch_index(self, src_batch_index: int) -> None:
        # upstream's order: the BlocksCacheKey rule first, then the type and range
        self._check_batch_index(self._cache_key, src_batch_index)
        check_int(src_batch_index, "src_batch_index", "uint32")
        self._src_batch_index = src_batch_index

    def __repr__(self) -> str:
        return (f"TransferWithCacheKeyConfig(cache_key={self._cache_key}, "
                f"src_layer_range={self._src_layer_range}, "
                f"dst_layer_range={self._dst_layer_range}, "
                f"src_batch_index={self._src_batch_index})")


class CacheTask:
    """Handle of a transfer_cache_async call: one future per transfer config, each resolving
    to that config's LLMStatusCode: LLM_SUCCESS once its last layer was sent, the code of the
    first failure of one of its layers, or None when it neither finished nor failed (the task
    stopped at another config's failure first, as upstream). A future that raised counts as
    the LLMException's code, or LLM_FAILED for any other exception or a cancellation.
    """

    def __init__(self, futures: Sequence["concurrent.futures.Future[Any]"],
                 default_error_code: LLMStatusCode = LLMStatusCode.LLM_TIMEOUT) -> None:
        check_type(futures, "futures", (list, tuple))
        for i, fut in enumerate(futures):
            check_type(fut, f"futures[{i}]", concurrent.futures.Future)
        self._futures: List["concurrent.futures.Future[Any]"] = list(futures)
        self._default_error_code = default_error_code

    def _wait(self, timeout_in_millis: Optional[int]) -> bool:
        """Wait up to the timeout (None = forever); True when every transfer has finished."""
        check_int(timeout_in_millis, "timeout_in_millis", "uint32", allow_none=True)
        pending = [fut for fut in self._futures if not fut.done()]
        if not pending:
            return True
        if timeout_in_millis == 0:
            return False
        # Done-callbacks fire on completion and on cancel() alike (concurrent.futures.wait
        # would miss a plain cancel() and wait forever).
        finished = threading.Event()
        lock = threading.Lock()
        left = [len(pending)]

        def on_done(_: "concurrent.futures.Future[Any]") -> None:
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    finished.set()

        for fut in pending:
            fut.add_done_callback(on_done)
        timeout = None if timeout_in_millis is None else timeout_in_millis / 1000.0
        return finished.wait(timeout)

    @staticmethod
    def _result_of(fut: "concurrent.futures.Future[Any]") -> Optional[LLMStatusCode]:
        if fut.cancelled():
            return LLMStatusCode.LLM_FAILED
        exc = fut.exception()
        if exc is not None:
            return exc.status_code if isinstance(exc, LLMException) else LLMStatusCode.LLM_FAILED
        result = fut.result()
        return None if result is None else code_2_status(int(result))

    def synchronize(self, timeout_in_millis: Optional[int] = None) -> LLMStatusCode:
        """Wait for the whole task: the first non-success code among the configs (in order),
        else LLM_SUCCESS; LLM_TIMEOUT if it has not finished within the timeout."""
        if not self._wait(timeout_in_millis):
            return self._default_error_code
        for fut in self._futures:
            code = self._result_of(fut)
            if code is not None and code != LLMStatusCode.LLM_SUCCESS:
                return code
        return LLMStatusCode.LLM_SUCCESS

    def get_results(self, timeout_in_millis: Optional[int] = None) -> List[Optional[LLMStatusCode]]:
        """One code per transfer config (None = nothing of it was sent); if the task has not
        finished within the timeout, LLM_TIMEOUT for every config."""
        if not self._wait(timeout_in_millis):
            return [self._default_error_code] * len(self._futures)
        return [self._result_of(fut) for fut in self._futures]

    def __repr__(self) -> str:
        done = sum(1 for fut in self._futures if fut.done())
        return f"CacheTask(transfers={len(self._futures)}, done={done})"
