# SPDX-License-Identifier: Apache-2.0
"""CacheManager: upstream LLM-DataDist's cache API (CacheManager mode) over the native engine.

Argument checks follow upstream's convention and the one-owner rule of _validation: Python
raises the TypeError / ValueError upstream's Python raises before its native call, and the
LLM_PARAM_INVALID checks only the Python API has; the core owns every other LLM_PARAM_INVALID.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as _np

from . import _core, _validation
from ._layerwise import LayerDestination, LayerwisePush
from ._logging import warn_once
from ._validation import check_dict, check_int, check_int_list, check_range, check_type, param_invalid
from .llm_types import (BlocksCacheKey, Cache, CacheDesc, CacheKey, CacheKeyByIdAndIndex, CacheTask,
                        LayerSynchronizer, MemInfo, Memtype, Placement, TransferConfig,
                        TransferWithCacheKeyConfig)
from .status import LLMException, LLMStatusCode, not_initialized

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["CacheManager"]

logger = logging.getLogger("llm_datadist")

TransferConfigs = Union[TransferConfig, TransferWithCacheKeyConfig]
_TENSORS_PER_LAYER = 2  # transfer_cache_async moves K and V of a layer (upstream's fixed 2)
# The core's RemoteKeyKind (link/messages.h) of a push by address, as the int transfer() takes
# (the keys carry their own: llm_types).
_KEY_KIND_ADDRESS = int(_core.RemoteKeyKind.ADDRESS)  # a push to a slot named by its address

U64 = _validation.INT_RANGES["uint64"][1]
_MAX_UINT32 = _validation.INT_RANGES["uint32"][1]
_MIN_INT64, _MAX_INT64 = _validation.INT_RANGES["int64"]
# (remote_begin, remote_end, local_begin, local_end, tensor_num_per_layer) as the core's transfer takes them
_Layers = Tuple[int, int, int, int, int]
# What pull_blocks / push_blocks take as block indices (the binding converts them in one pass)
BlockIndices = Union[Sequence[int], "NDArray[_np.integer[Any]]"]


def _key_tuple(key: CacheKey) -> Tuple[int, int, int, int]:
    return (key.cluster_id, key.req_id, key.model_id, key.prefix_id)


def _desc_args(desc: CacheDesc) -> Tuple[int, List[int], int, int]:
    return (desc.num_tensors, list(desc.shape), desc.data_type.value, int(desc.placement))


class CacheManager:
    """Obtained from `LLMDataDist.cache_manager`; never constructed by users."""

    def __init__(self, datadist: Any, engine: Any) -> None:
        self._datadist = datadist
        self._engine = engine
        self._valid = True
        # What upstream's CacheManager keeps to refuse some calls; here they only warn (warn_once).
        self._remote_cache_accessible = datadist._options.get("llm.EnableRemoteCacheAccessible", "0") == "1"
        self._linked_by_rank_table = False  # set by LLMDataDist.link, upstream's set_is_call_linked

    # -- helpers --------------------------------------------------------------------------
    def _check_valid(self) -> None:
        if not self._valid or not self._engine.initialized:
            raise not_initialized(finalized=not self._valid)

    def _invalidate(self) -> None:
        self._valid = False

    def _check_pool(self, desc: CacheDesc, func: str) -> None:
        if self._engine.pool_stats(int(desc.placement)) is None:
            option = "host_mem_pool_cfg" if desc.placement == Placement.HOST else "mem_pool_cfg"
            raise param_invalid(
                f"{func} with placement {desc.placement!s} needs a memory pool: set LLMConfig.{option} "
                f"before init.")

    def _warn_remote_accessible_after_link(self, func: str, remote_accessible: Optional[bool]) -> None:
        if remote_accessible and self._linked_by_rank_table:
            warn_once("register.remote_accessible_after_link",
                      f"{func}(remote_accessible=True) after link(): accepted here, but upstream raises "
                      f"LLM_PARAM_INVALID (\"you can not register remote accessible cache after link\").")

    def _warn_push_without_remote_access(self, func: str) -> None:
        if not self._remote_cache_accessible:
            warn_once("push.without_remote_cache_accessible",
                      f"{func} without LLMConfig.enable_remote_cache_accessible: accepted here, but upstream "
                      f"raises LLM_PARAM_INVALID (\"{func} is only supported while "
                      f"enable_remote_cache_accessible is True\").")

    @staticmethod
    def _check_keys(cache_keys: Any, name: str = "cache_keys") -> List[CacheKey]:
        check_type(cache_keys, name, (list, tuple))
        for i, key in enumerate(cache_keys):
            check_type(key, f"{name}[{i}]", CacheKey)
        return list(cache_keys)

    @staticmethod
    def _check_desc(value: Any) -> CacheDesc:
        cache_desc: CacheDesc = check_type(value, "cache_desc", CacheDesc)
        if cache_desc.num_tensors <= 0:
            raise param_invalid(f"cache_desc.num_tensors must be > 0, but got {cache_desc.num_tensors}.")
        return cache_desc

    def _check_cache(self, value: Any, name: str = "cache") -> Cache:
        cache: Cache = check_type(value, name, Cache)
        owner = getattr(cache, "_cache_manager", None)
        if owner is not None and owner is not self:
            raise param_invalid(f"{name} (cache_id {cache.cache_id}) belongs to another LLMDataDist instance.")
        return cache

    def _make_cache(self, result: Tuple[int, List[int]], desc: CacheDesc, registered: bool, blocks: bool) -> Cache:
        cache_id, addrs = result
        desc._is_blocks = blocks
        return Cache(cache_id, desc, list(addrs), self, is_registered=registered, is_blocks_cache=blocks)

    # -- allocation -----------------------------------------------------------------------
    def allocate_cache(self, cache_desc: CacheDesc, cache_keys: Union[Tuple[CacheKey, ...], List[CacheKey]] = ()) -> Cache:
        """Allocates `num_tensors` tensors from the pool of the desc's placement; key i binds
        batch slot i (a key with req_id 2**64-1 is padding)."""
        self._check_valid()
        desc = self._check_desc(cache_desc)
        keys = self._check_keys(cache_keys)
        self._check_pool(desc, "allocate_cache")
        result = self._engine.allocate_cache(*_desc_args(desc), [_key_tuple(k) for k in keys])
        return self._make_cache(result, desc, registered=False, blocks=False)

    def allocate_blocks_cache(self, cache_desc: CacheDesc, blocks_cache_key: Optional[BlocksCacheKey] = None) -> Cache:
        """Allocates a paged cache (shape[0] = number of blocks), optionally named by a key."""
        self._check_valid()
        desc = self._check_desc(cache_desc)
        check_type(blocks_cache_key, "blocks_cache_key", BlocksCacheKey, allow_none=True)
        self._check_pool(desc, "allocate_blocks_cache")
        key = None if blocks_cache_key is None else (blocks_cache_key.cluster_id, blocks_cache_key.model_id)
        result = self._engine.allocate_blocks_cache(*_desc_args(desc), key)
        return self._make_cache(result, desc, registered=False, blocks=True)

    def deallocate_cache(self, cache: Cache) -> None:
        """Drops the cache id's reference; memory is freed once no bound key remains.
        Deallocating twice, or a registered cache, is a no-op (upstream)."""
        self._check_valid()
        cache = self._check_cache(cache)
        if cache.is_blocks_cache:
            raise param_invalid(f"cache {cache.cache_id} is a blocks cache; use deallocate_blocks_cache.")
        self._engine.deallocate_cache(cache.cache_id)
        if not cache.is_registered:
            cache._invalidate()

    def deallocate_blocks_cache(self, cache: Cache) -> None:
        """Frees a blocks cache at once, and its BlocksCacheKey."""
        self._check_valid()
        cache = self._check_cache(cache)
        if not cache.is_blocks_cache:
            raise param_invalid(f"cache {cache.cache_id} is not a blocks cache; use deallocate_cache.")
        self._engine.deallocate_blocks_cache(cache.cache_id)
        if not cache.is_registered:
            cache._invalidate()

    def remove_cache_key(self, cache_key: CacheKey) -> None:
        """Unbinds a key (no-op for unknown keys and for keys of registered caches)."""
        self._check_valid()
        check_type(cache_key, "cache_key", CacheKey)
        self._engine.remove_cache_key(_key_tuple(cache_key))

    # -- registration ---------------------------------------------------------------------
    @staticmethod
    def _check_addrs(addrs: Any, desc: CacheDesc) -> List[int]:
        check_int_list(addrs, "addrs", "uint64")
        if len(addrs) != desc.num_tensors:
            raise param_invalid(f"addrs has {len(addrs)} addresses but cache_desc.num_tensors is {desc.num_tensors}.")
        for i, addr in enumerate(addrs):
            if addr == 0:
                raise param_invalid(f"addrs[{i}] is 0.")
        return list(addrs)

    def register_cache(self, cache_desc: CacheDesc, addrs: List[int], cache_keys: Union[Tuple[CacheKey, ...], List[CacheKey]] = (),
                       remote_accessible: Optional[bool] = None) -> Cache:
        """Registers caller-owned memory (one address per tensor); never freed by the library."""
        self._check_valid()
        desc = self._check_desc(cache_desc)
        addr_list = self._check_addrs(addrs, desc)
        keys = self._check_keys(cache_keys)
        check_type(remote_accessible, "remote_accessible", bool, allow_none=True)
        self._warn_remote_accessible_after_link("register_cache", remote_accessible)
        result = self._engine.register_cache(*_desc_args(desc), addr_list, [_key_tuple(k) for k in keys])
        return self._make_cache(result, desc, registered=True, blocks=False)

    def register_blocks_cache(self, cache_desc: CacheDesc, addrs: List[int], blocks_cache_key: Optional[BlocksCacheKey] = None,
                              remote_accessible: Optional[bool] = None) -> Cache:
        """Registers caller-owned paged memory (shape[0] = number of blocks)."""
        self._check_valid()
        desc = self._check_desc(cache_desc)
        addr_list = self._check_addrs(addrs, desc)
        check_type(blocks_cache_key, "blocks_cache_key", BlocksCacheKey, allow_none=True)
        check_type(remote_accessible, "remote_accessible", bool, allow_none=True)
        self._warn_remote_accessible_after_link("register_blocks_cache", remote_accessible)
        key = None if blocks_cache_key is None else (blocks_cache_key.cluster_id, blocks_cache_key.model_id)
        result = self._engine.register_blocks_cache(*_desc_args(desc), addr_list, key)
        return self._make_cache(result, desc, registered=True, blocks=True)

    def unregister_cache(self, cache_id: int) -> None:
        """Forgets registered memory (unknown ids are a no-op)."""
        self._check_valid()
        check_int(cache_id, "cache_id", "int64")
        self._engine.unregister_cache(cache_id)

    # -- local copies ---------------------------------------------------------------------
    def copy_cache(self, dst: Cache, src: Cache, dst_batch_index: int = 0, src_batch_index: int = 0,
                   offset: int = 0, size: int = -1, req_id: Optional[int] = None) -> None:
        """Copies one batch slot of every tensor, `size` bytes (-1: to the slot's end) from `offset`."""
        self._check_valid()
        self._check_cache(dst, "dst")
        self._check_cache(src, "src")
        check_int(dst_batch_index, "dst_batch_index", "uint32")
        check_int(src_batch_index, "src_batch_index", "uint32")
        check_int(offset, "offset", "uint64")
        check_int(size, "size", "int64")
        check_int(req_id, "req_id", "uint64", allow_none=True)
        if size == 0 or size < -1:
            raise param_invalid(f"size must be -1 or > 0, but got {size}.")
        if dst.is_blocks_cache or src.is_blocks_cache:
            which = "dst" if dst.is_blocks_cache else "src"
            raise param_invalid(f"copy_cache needs contiguous caches, but {which} (cache_id "
                                f"{(dst if which == 'dst' else src).cache_id}) is a blocks cache; use copy_blocks.")
        self._engine.copy_cache(dst.cache_id, src.cache_id, dst_batch_index, src_batch_index, offset, size)

    def copy_blocks(self, cache: Cache, copy_block_info: Dict[int, List[int]]) -> None:
        """Within one blocks cache: copy block `src` to each block in `copy_block_info[src]`."""
        self._check_valid()
        self._check_cache(cache)
        check_dict(copy_block_info, "copy_block_info", int, (list, tuple))
        pairs = []
        for src, dsts in copy_block_info.items():
            check_int(src, "copy_block_info key", "uint64")
            check_int_list(dsts, f"copy_block_info[{src}]", "uint64")
            pairs.append((src, list(dsts)))
        if not cache.is_blocks_cache:
            raise param_invalid(f"copy_blocks needs a blocks cache, but cache {cache.cache_id} is contiguous; "
                                f"use copy_cache.")
        self._engine.copy_blocks(cache.cache_id, pairs)

    def swap_blocks(self, src_cache: Cache, dst_cache: Cache, src_to_dst: Dict[int, int]) -> None:
        """Moves blocks between host and device: exactly one cache is Placement.HOST (a cache made
        by Cache.create_cpu_cache works as the host side)."""
        self._check_valid()
        check_type(src_cache, "src_cache", Cache)
        check_type(dst_cache, "dst_cache", Cache)
        check_dict(src_to_dst, "src_to_dst", int, int)
        for src, dst in src_to_dst.items():
            check_int(src, "src_to_dst key", "uint64")
            check_int(dst, f"src_to_dst[{src}]", "uint64")
        if (src_cache.cache_desc.placement == Placement.HOST) == (dst_cache.cache_desc.placement == Placement.HOST):
            raise param_invalid(
                "swap_blocks needs one HOST and one DEVICE cache, but got src "
                f"{src_cache.cache_desc.placement!s} and dst {dst_cache.cache_desc.placement!s}.")
        for name, cache in (("src_cache", src_cache), ("dst_cache", dst_cache)):
            if not cache.is_blocks_cache:
                raise param_invalid(f"swap_blocks needs blocks caches, but {name} (cache_id {cache.cache_id}) is contiguous.")
        self._engine.swap_blocks(src_cache.cache_id, *_desc_args(src_cache.cache_desc), list(src_cache.tensor_addrs),
                                 dst_cache.cache_id, *_desc_args(dst_cache.cache_desc), list(dst_cache.tensor_addrs),
                                 list(src_to_dst.items()))

    # -- views (ours, not upstream) -------------------------------------------------------
    def _tensor_view(self, cache: Cache, tensor_index: int) -> Any:
        self._check_valid()
        check_int(tensor_index, "tensor_index", "uint32")
        if cache.cache_id < 0:
            raise param_invalid("a cache made by Cache.create_cpu_cache is caller memory; view it with your own array.")
        return self._engine.tensor_view(cache.cache_id, tensor_index)

    def pool_stats(self, placement: Placement = Placement.DEVICE) -> Optional[Dict[str, int]]:
        """The pool's accounting (capacity, used/free bytes, free ranges...), None without a pool."""
        self._check_valid()
        check_type(placement, "placement", Placement)
        stats: Optional[Dict[str, int]] = self._engine.pool_stats(int(placement))
        return stats

    # -- transfers between linked clusters ------------------------------------------------
    @staticmethod
    def _layer_args(src_layer_range: Any, dst_layer_range: Any, tensor_num_per_layer: Any,
                    push: bool) -> _Layers:
        """Layer ranges -> (remote_begin, remote_end, local_begin, local_end, tensor_num_per_layer)
        for the core, which resolves them against the cache and owns every LLM_PARAM_INVALID
        about them (see LayerSelection in the core). Here only what upstream's Python checks
        before its native call: the types, step 1, a non-negative start; a pull's empty range
        selects every layer, as upstream's layer_range_to_tensor_indices has it. (Step and sign
        are the range object's, which the core never sees: it takes begin/end ints, -1 for none.)"""
        if src_layer_range is None and dst_layer_range is None and type(tensor_num_per_layer) is int \
                and 0 <= tensor_num_per_layer <= _MAX_UINT32:
            return -1, -1, -1, -1, tensor_num_per_layer  # every tensor: the per-call common case
        check_int(tensor_num_per_layer, "tensor_num_per_layer", "uint32")
        spans = []
        for name, layers in (("src_layer_range", src_layer_range), ("dst_layer_range", dst_layer_range)):
            if push:
                layers = check_range(layers, name, allow_none=True)  # upstream: 0 <= start < stop
            else:
                check_type(layers, name, range, allow_none=True)
                if layers is not None:
                    if layers.step != 1:
                        raise param_invalid(f"{name} must have step 1, but got {layers!r}.")
                    if layers.stop <= layers.start:  # not len(): it overflows beyond sys.maxsize
                        layers = None
                    elif layers.start < 0:
                        raise param_invalid(f"{name} is invalid, the start value {layers.start} is < 0.")
            if layers is not None:  # upstream's check_uint32 of the first and the last layer
                check_int(layers.start, name, "uint32")
                check_int(layers.stop - 1, name, "uint32")
            spans.append((-1, -1) if layers is None else (layers.start, layers.stop))
        (src_begin, src_end), (dst_begin, dst_end) = spans
        if push:  # the local cache is the source
            return dst_begin, dst_end, src_begin, src_end, tensor_num_per_layer
        return src_begin, src_end, dst_begin, dst_end, tensor_num_per_layer

    @staticmethod
    def _warn_ignored_kwargs(kwargs: Dict[str, Any], func: str) -> None:
        if kwargs:
            # Upstream reads its three keywords with kwargs.get and ignores the rest; so do we.
            warn_once(f"{func}.kwargs", f"{func} ignores the keyword arguments {sorted(kwargs)}, as upstream does; "
                                        f"it reads src_layer_range, dst_layer_range and tensor_num_per_layer.")

    @staticmethod
    def _key_fields(key: Union[CacheKey, CacheKeyByIdAndIndex, BlocksCacheKey]) -> Tuple[int, ...]:
        """(remote cluster, key kind, req_id, prefix_id, model_id, remote cache_id, remote
        batch_index) for the native transfer: made once by the key (llm_types)."""
        return key._transfer

    def _check_transfer_cache(self, cache: Any, name: str) -> None:
        # Only what the core cannot know: the Python type and which instance made the cache.
        if type(cache) is not Cache or cache._cache_manager is not self:
            self._check_cache(cache, name)

    def _transfer(self, push: bool, key: Any, cache: Cache, blocks_api: bool, local_batch_index: int, size: int,
                  remote_blocks: Any, local_blocks: Any, layers: _Layers) -> None:
        # Positional on purpose, and the key as the one tuple it keeps (Engine.transfer's order:
        # push, key, local_cache_id, blocks_api, local_batch_index, size, remote_blocks,
        # local_blocks, remote_layer_begin, remote_layer_end, local_layer_begin, local_layer_end,
        # tensor_num_per_layer): keyword parsing, or unpacking the key, costs more than a 4 KiB
        # copy. The block lists go as given: the binding converts and checks them in one pass
        # (TypeError / ValueError as check_int_list); the core owns every LLM_PARAM_INVALID
        # (blocks destination, empty or unequal lists, key ids, layers, slots).
        self._engine.transfer(push, key._transfer, cache.cache_id, blocks_api, local_batch_index, size,
                              remote_blocks, local_blocks, *layers)

    def _check_valid_for_transfer(self) -> None:
        # The core refuses an engine that is not initialized (LLM_FAILED); only a finalized
        # instance, which the core cannot tell from one never initialized, is told here.
        if not self._valid:
            raise not_initialized(finalized=True)

    def pull_cache(self, cache_key: Union[CacheKey, CacheKeyByIdAndIndex], cache: Cache, batch_index: int = 0,
                   size: int = -1, *, src_layer_range: Optional[range] = None, dst_layer_range: Optional[range] = None,
                   tensor_num_per_layer: int = 2, **kwargs: Any) -> None:
        """Pulls one slot of a linked cluster's cache into slot `batch_index` of local contiguous
        `cache`: `size` bytes per tensor (-1: one slot), selected layers with src_layer_range /
        dst_layer_range (ranges of layers) and tensor_num_per_layer (default 2). A complete pull
        by a req CacheKey consumes the key on the owner. Waits at most sync_kv_timeout.
        Upstream takes **kwargs and reads the three layer keywords from it; they are named here
        because a keyword that lands in **kwargs costs a dict per call (0.3 us, a tenth of a
        one-sided pull). Other keywords are ignored, as upstream ignores them."""
        # The per-request case, checked and sent from this one frame (each Python call on the way
        # cost about a tenth of a one-sided 4 KiB pull; docs/transfer.md "Small pulls"): every
        # argument of the right type and range, every layer. Anything else takes the checked path.
        key_type = type(cache_key)
        if (key_type is CacheKeyByIdAndIndex or (key_type is CacheKey and not self._remote_cache_accessible)) \
                and type(cache) is Cache and cache._cache_manager is self and not cache._is_blocks_cache \
                and type(batch_index) is int and 0 <= batch_index <= _MAX_UINT32 \
                and type(size) is int and _MIN_INT64 <= size <= _MAX_INT64 and self._valid:
            if src_layer_range is None and dst_layer_range is None and not kwargs \
                    and type(tensor_num_per_layer) is int and 0 <= tensor_num_per_layer <= _MAX_UINT32:
                self._engine.transfer(False, cache_key._transfer, cache._cache_id, False, batch_index, size, (), (),
                                      -1, -1, -1, -1, tensor_num_per_layer)
                return
        self._check_valid_for_transfer()
        if key_type is not CacheKey and key_type is not CacheKeyByIdAndIndex:
            check_type(cache_key, "cache_key", (CacheKey, CacheKeyByIdAndIndex))
        if self._remote_cache_accessible and key_type is CacheKey:
            warn_once("pull_cache.cache_key_with_remote_cache_accessible",
                      "pull_cache by CacheKey with enable_remote_cache_accessible: accepted here, but upstream "
                      "raises TypeError (in that mode it takes only CacheKeyByIdAndIndex).")
        self._check_transfer_cache(cache, "cache")
        if type(batch_index) is not int or not 0 <= batch_index <= _MAX_UINT32:
            check_int(batch_index, "batch_index", "uint32")
        if type(size) is not int or not _MIN_INT64 <= size <= _MAX_INT64:
            check_int(size, "size", "int64")
        if cache.is_blocks_cache:
            # (the core lets a registered blocks cache be addressed by slot, as its C++ API does)
            raise param_invalid(f"pull_cache needs a contiguous cache, but cache {cache.cache_id} is a blocks cache; "
                                f"use pull_blocks.")
        self._warn_ignored_kwargs(kwargs, "pull_cache")
        layers = self._layer_args(src_layer_range, dst_layer_range, tensor_num_per_layer, push=False)
        self._transfer(False, cache_key, cache, False, batch_index, size, (), (), layers)

    def pull_blocks(self, src_cache_key: Union[CacheKey, CacheKeyByIdAndIndex, BlocksCacheKey], dst_cache: Cache,
                    src_blocks: BlockIndices = (), dst_blocks: BlockIndices = (), *,
                    src_layer_range: Optional[range] = None, dst_layer_range: Optional[range] = None,
                    tensor_num_per_layer: int = 2, **kwargs: Any) -> None:
        """Pulls blocks of a linked cluster into local blocks cache `dst_cache`: remote block
        src_blocks[i] -> local block dst_blocks[i] (BlocksCacheKey), or, with a CacheKey /
        CacheKeyByIdAndIndex and empty src_blocks, the remote slot cut into local blocks.
        src_blocks / dst_blocks: lists or tuples of ints, or one-dimensional integer numpy
        arrays (read without a per-element copy). The layer keywords: as in pull_cache."""
        # The per-request case, checked and sent from this one frame (as in pull_cache): a
        # BlocksCacheKey into a cache of this instance, every layer. The core checks the lists.
        if type(src_cache_key) is BlocksCacheKey and type(dst_cache) is Cache and dst_cache._cache_manager is self \
                and self._valid:
            if src_layer_range is None and dst_layer_range is None and not kwargs \
                    and type(tensor_num_per_layer) is int and 0 <= tensor_num_per_layer <= _MAX_UINT32:
                self._engine.transfer(False, src_cache_key._transfer, dst_cache._cache_id, True, 0, -1, src_blocks,
                                      dst_blocks, -1, -1, -1, -1, tensor_num_per_layer)
                return
        self._check_valid_for_transfer()
        key_type = type(src_cache_key)
        if key_type is not BlocksCacheKey:
            check_type(src_cache_key, "src_cache_key", (CacheKey, CacheKeyByIdAndIndex, BlocksCacheKey))
        self._check_transfer_cache(dst_cache, "dst_cache")
        if not isinstance(src_cache_key, BlocksCacheKey):
            # A rule of this API (upstream's Python), not the core's: its C++ API reads remote
            # blocks of a cache named by CacheKeyByIdAndIndex. The elements are checked first, as
            # before; the message names the key as this API spells it.
            if not isinstance(src_blocks, _np.ndarray):
                check_int_list(src_blocks, "src_blocks", "uint64")
            if len(src_blocks):
                raise param_invalid(f"src_blocks must be empty when pulling a remote contiguous cache "
                                    f"({src_cache_key!r}) into blocks, but got {len(src_blocks)} entries.")
        self._warn_ignored_kwargs(kwargs, "pull_blocks")
        layers = self._layer_args(src_layer_range, dst_layer_range, tensor_num_per_layer, push=False)
        self._transfer(False, src_cache_key, dst_cache, True, 0, -1, src_blocks, dst_blocks, layers)

    def push_cache(self, dst_cache_key: CacheKeyByIdAndIndex, src_cache: Cache, src_batch_index: int = 0,
                   src_layer_range: Optional[range] = None, dst_layer_range: Optional[range] = None,
                   size: int = -1, tensor_num_per_layer: int = 2) -> None:
        """Writes slot `src_batch_index` of local `src_cache` into the linked cluster's cache
        (cache_id, batch_index) named by `dst_cache_key`."""
        self._check_valid_for_transfer()
        check_type(dst_cache_key, "dst_cache_key", CacheKeyByIdAndIndex)
        self._warn_push_without_remote_access("push_cache")
        self._check_transfer_cache(src_cache, "src_cache")
        check_int(src_batch_index, "src_batch_index", "uint32")
        check_int(size, "size", "int64")
        if size != -1:  # (the core takes any size: for pushes by address)
            raise param_invalid(f"push_cache size must be -1 (one slot), but got {size}.")
        if src_cache.is_blocks_cache:
            raise param_invalid(f"push_cache needs a contiguous src_cache, but cache {src_cache.cache_id} is a blocks "
                                f"cache; use push_blocks.")
        layers = self._layer_args(src_layer_range, dst_layer_range, tensor_num_per_layer, push=True)
        self._transfer(True, dst_cache_key, src_cache, False, src_batch_index, -1, (), (), layers)

    def push_blocks(self, dst_cache_key: BlocksCacheKey, src_cache: Cache, src_blocks: BlockIndices = (),
                    dst_blocks: BlockIndices = (), src_layer_range: Optional[range] = None,
                    dst_layer_range: Optional[range] = None, tensor_num_per_layer: int = 2) -> None:
        """Writes local blocks src_blocks[i] of `src_cache` into the linked cluster's blocks cache
        (named by `dst_cache_key`) at dst_blocks[i]."""
        self._check_valid_for_transfer()
        check_type(dst_cache_key, "dst_cache_key", BlocksCacheKey)
        self._warn_push_without_remote_access("push_blocks")
        self._check_transfer_cache(src_cache, "src_cache")
        layers = self._layer_args(src_layer_range, dst_layer_range, tensor_num_per_layer, push=True)
        self._transfer(True, dst_cache_key, src_cache, True, 0, -1, dst_blocks, src_blocks, layers)

    # -- layer-wise push -------------------------------------------------------------------
    def transfer_cache_async(self, src_cache: Cache, layer_synchronizer: LayerSynchronizer,
                             transfer_configs: Union[List[TransferConfigs], Tuple[TransferConfigs, ...]],
                             src_block_indices: Optional[Sequence[int]] = None,
                             dst_block_indices: Optional[Sequence[int]] = None,
                             dst_block_memory_size: Optional[int] = None) -> CacheTask:
        """Pushes `src_cache` layer by layer (2 tensors a layer) to every config's destination:
        layer i moves as soon as `layer_synchronizer.synchronize_layer(i, timeout)` returns
        True, while the caller computes the next layers. Returns at once with a CacheTask
        (one result per config). Arguments are checked here, as upstream, and raise; what
        happens during the push is reported by the task (see _layerwise).

        Destinations: TransferConfig (slot `src_batch_index` of each tensor to the remote
        address dst_addrs gives it: the start of a slot of a cache the remote cluster holds),
        TransferWithCacheKeyConfig with a CacheKeyByIdAndIndex (a slot of a remote contiguous
        cache) or a BlocksCacheKey (blocks `src_block_indices[j]` -> `dst_block_indices[j]`;
        without block indices, block `src_batch_index` -> block 0; from a contiguous source,
        slot `src_batch_index` cut into pieces of `dst_block_memory_size` bytes, piece j ->
        `dst_block_indices[j]`). A TransferConfig with block indices names the remote tensors'
        bases."""
        self._check_valid()
        check_type(src_cache, "src_cache", Cache)
        self._check_cache(src_cache, "src_cache")
        if src_cache.cache_desc.placement == Placement.HOST:
            raise param_invalid(f"src cache not support placement HOST (src_cache {src_cache.cache_id}).")
        check_int_list(dst_block_indices, "dst_block_indices", "uint64", allow_none=True)
        check_int_list(src_block_indices, "src_block_indices", "uint64", allow_none=True)
        check_int(dst_block_memory_size, "dst_block_memory_size", "uint64", allow_none=True)
        if src_block_indices:
            if not dst_block_indices:
                raise param_invalid("transfer from blocks to cache is not supported: src_block_indices "
                                    "needs dst_block_indices.")
            if len(src_block_indices) != len(dst_block_indices):
                raise param_invalid(f"num_block_indices mismatches, src_num = {len(src_block_indices)}, "
                                    f"dst_num = {len(dst_block_indices)}.")
        elif dst_block_indices and dst_block_memory_size is None:
            raise param_invalid("dst_block_memory_size must be set when transfer from cache to blocks.")
        check_type(layer_synchronizer, "layer_synchronizer", LayerSynchronizer)
        check_type(transfer_configs, "transfer_configs", (list, tuple))
        remote_mode = self._remote_cache_accessible
        allowed = (TransferWithCacheKeyConfig,) if remote_mode else (TransferConfig, TransferWithCacheKeyConfig)
        prefix = "While enable_remote_cache_accessible is True, " if remote_mode else ""
        for i, config in enumerate(transfer_configs):
            if type(config) not in allowed:
                raise TypeError(f"{prefix}transfer_configs[{i}] only support {[t.__name__ for t in allowed]}, "
                                f"but got {type(config).__name__}.")
        if not dst_block_indices and dst_block_memory_size not in (None, 0):
            raise param_invalid(f"dst_block_memory_size ({dst_block_memory_size}) is neither None nor 0 while dst "
                                f"is not blocks.")
        num_tensors = src_cache.cache_desc.num_tensors
        if num_tensors % _TENSORS_PER_LAYER != 0:
            raise param_invalid(f"cache_desc.num_tensors ({num_tensors}) is not even: transfer_cache_async moves "
                                f"{_TENSORS_PER_LAYER} tensors (K, V) a layer.")
        blocks = _BlockArgs(list(src_block_indices or ()), list(dst_block_indices or ()), dst_block_memory_size or 0)
        destinations = [self._layer_destination(i, config, src_cache, num_tensors // _TENSORS_PER_LAYER, blocks)
                        for i, config in enumerate(transfer_configs)]
        if not remote_mode and any(isinstance(c, TransferWithCacheKeyConfig) for c in transfer_configs):
            warn_once("transfer_cache_async_key_config",
                       "transfer_cache_async with TransferWithCacheKeyConfig runs here without "
                       "enable_remote_cache_accessible; upstream raises TypeError for it unless "
                       "LLMConfig.enable_remote_cache_accessible is True.")
        # the engine's parsed sync_kv_timeout (llm.SyncKvCacheWaitTime), its default included
        return CacheTask(LayerwisePush(destinations, layer_synchronizer, self._engine.sync_kv_timeout_ms).start())

    def _layer_destination(self, index: int, config: TransferConfigs, src_cache: Cache, num_layers: int,
                           blocks: "_BlockArgs") -> LayerDestination:
        """Checks one transfer config against the source cache (upstream checks these when the
        task starts) and returns how to push one of its layers."""
        name = f"transfer_configs[{index}]"
        src_range = config.src_layer_range if config.src_layer_range is not None else range(0, num_layers)
        if blocks.src and config.src_batch_index != 0:
            raise param_invalid(f"Invalid {name}, src_batch_index ({config.src_batch_index}) != 0 while src is "
                                f"blocks.")
        if not 0 <= src_range.start < src_range.stop <= num_layers:
            raise param_invalid(f"{name}.src_layer_range: {src_range!r} out of range, src_layer_num = {num_layers}.")
        num_layers_sent = src_range.stop - src_range.start
        if isinstance(config, TransferConfig):
            if len(config.dst_addrs) != num_layers_sent * _TENSORS_PER_LAYER:
                raise param_invalid(f"{name}: expect {num_layers_sent * _TENSORS_PER_LAYER} dst_addrs, but "
                                    f"len(dst_addrs) = {len(config.dst_addrs)}, range = {src_range!r}.")
            return self._address_destination(name, config, src_cache, src_range, blocks)
        key: Union[BlocksCacheKey, CacheKeyByIdAndIndex] = check_type(
            config.cache_key, f"{name}.cache_key", (BlocksCacheKey, CacheKeyByIdAndIndex))
        if isinstance(key, BlocksCacheKey) and config.src_batch_index != 0:
            raise param_invalid(f"{name}: src_batch_index should be 0 when cache_key is BlocksCacheKey, but got "
                                f"{config.src_batch_index}.")
        dst_range = config.dst_layer_range
        if dst_range is not None and dst_range.stop - dst_range.start != num_layers_sent:
            raise param_invalid(f"{name}: src_layer_range {src_range!r} size ({num_layers_sent}) should be equal "
                                f"to dst_layer_range {dst_range!r} size ({dst_range.stop - dst_range.start}).")
        if blocks.src and blocks.block_bytes:
            block_bytes = src_cache.cache_desc.size // src_cache.cache_desc.shape[0]
            if blocks.block_bytes != block_bytes:
                raise param_invalid(f"dst_block_memory_size ({blocks.block_bytes}) differs from the block size "
                                    f"({block_bytes} bytes) of src_cache {src_cache.cache_id}; the blocks of both "
                                    f"sides must be equal.")
        dst_start = src_range.start if dst_range is None else dst_range.start
        shift = dst_start - src_range.start
        fields = self._key_fields(key)
        engine, local_id, batch = self._engine, src_cache.cache_id, config.src_batch_index
        into_blocks = 0        # a contiguous slot cut into remote blocks of this many bytes
        if blocks.src:
            local_blocks, remote_blocks, blocks_api = blocks.src, blocks.dst, True
        elif blocks.dst:
            if not isinstance(key, BlocksCacheKey):
                raise param_invalid(f"{name}: dst_block_indices need a BlocksCacheKey destination, got "
                                    f"{type(key).__name__}.")
            local_blocks, remote_blocks, blocks_api, into_blocks = [], blocks.dst, False, blocks.block_bytes
        elif isinstance(key, BlocksCacheKey):
            # upstream moves slot src_batch_index (0) of each tensor to the remote slot 0: for a
            # blocks cache, block 0 to block 0
            local_blocks, remote_blocks, blocks_api = [batch], [0], True
        else:
            local_blocks, remote_blocks, blocks_api = [], [], False

        def send(src_layer: int, dst_layer: int) -> None:
            n = _TENSORS_PER_LAYER
            engine.transfer(True, fields, local_id, blocks_api, 0 if blocks_api else batch, -1, remote_blocks,
                            local_blocks, dst_layer, dst_layer + 1, src_layer, src_layer + 1, n, into_blocks)

        return LayerDestination(name=f"{name} (cluster {key.cluster_id})", src_layers=src_range,
                                dst_layer_of=lambda layer: layer + shift, send=send)

    def _address_destination(self, name: str, config: TransferConfig, src_cache: Cache,
                             src_range: range, blocks: "_BlockArgs") -> LayerDestination:
        """A TransferConfig: layer i's K and V go to dst_addrs[2k], dst_addrs[2k+1] (k = i - start),
        addresses of slot starts in the owner's memory, which the owner resolves to its cache
        and slot. One push per tensor, so K and V may live in different remote caches. With
        block indices (a blocks source), the addresses are the remote tensors' bases and block
        src_block_indices[j] goes to base + dst_block_indices[j] * block bytes (upstream's
        GenerateBlocksToBlocksTask): one push per tensor and block. From a contiguous source
        with dst_block_indices, piece j (dst_block_memory_size bytes) of the slot goes to base +
        dst_block_indices[j] * dst_block_memory_size (GenerateCacheToBlocksTask)."""
        engine, local_id, batch = self._engine, src_cache.cache_id, config.src_batch_index
        cluster, addrs, start = config.dst_cluster_id, list(config.dst_addrs), src_range.start
        slot_bytes = src_cache.cache_desc.size // src_cache.cache_desc.shape[0]
        block_bytes = blocks.block_bytes or slot_bytes
        # (local slot, offset in it, bytes or -1 for the slot, remote block or None for the address)
        pieces: List[Tuple[int, int, int, Optional[int]]]
        if blocks.src:
            pieces = [(s, 0, -1, d) for s, d in zip(blocks.src, blocks.dst)]
        elif blocks.dst:
            if not 0 < block_bytes < slot_bytes or len(blocks.dst) * block_bytes >= slot_bytes + block_bytes:
                raise param_invalid(f"{name}: dst_block_memory_size ({block_bytes}) cuts the {slot_bytes}-byte slot "
                                    f"into fewer pieces than the {len(blocks.dst)} dst_block_indices.")
            pieces = [(batch, j * block_bytes, min(block_bytes, slot_bytes - j * block_bytes), d)
                      for j, d in enumerate(blocks.dst)]
        else:
            pieces = [(batch, 0, -1, None)]

        def send(src_layer: int, _dst_layer: int) -> None:
            for j in range(_TENSORS_PER_LAYER):
                tensor = src_layer * _TENSORS_PER_LAYER + j
                addr = addrs[(src_layer - start) * _TENSORS_PER_LAYER + j]
                for src_slot, offset, size, dst_block in pieces:
                    at = addr if dst_block is None else addr + dst_block * block_bytes
                    engine.transfer(True, (cluster, _KEY_KIND_ADDRESS, U64, U64, 0, -1, 0), local_id, False, src_slot,
                                    size, [at], [], 0, 1, tensor, tensor + 1, 1, 0, offset)

        return LayerDestination(name=f"{name} (cluster {cluster})", src_layers=src_range,
                                dst_layer_of=lambda layer: layer, send=send)

    def remap_registered_memory(self, mem_infos: Union[MemInfo, List[MemInfo]]) -> None:
        """Upstream re-registers device memory with the NIC after a memory fault remapped its
        physical pages. Validated as upstream (LLM_PARAM_INVALID for every bad input); then
        there is nothing to redo here: tcp and CMA reach memory through its virtual address on
        every transfer and shm maps the pool's memfd, so none holds a registration a remap
        invalidates; cuda_ipc maps a CUDA allocation, whose physical memory CUDA does not swap
        behind its address (a device with an uncorrectable error needs a reset and a relink)."""
        self._check_valid()
        if not isinstance(mem_infos, (list, MemInfo)):
            raise param_invalid(f"mem_infos type only support list of MemInfo or MemInfo, but got "
                                f"{type(mem_infos).__name__}.")
        infos = [mem_infos] if isinstance(mem_infos, MemInfo) else mem_infos
        for i, info in enumerate(infos):
            if not isinstance(info, MemInfo):
                raise param_invalid(f"mem_infos[{i}] type only support MemInfo, but got {type(info).__name__}.")
            if info.mem_type != Memtype.MEM_TYPE_DEVICE:
                raise param_invalid(f"check mem_info.mem_type failed, only support Memtype.MEM_TYPE_DEVICE, "
                                    f"index={i} ({info.mem_type}).")
            if info.addr == 0:
                raise param_invalid(f"check mem_info.addr failed, addr can not be zero, index={i}.")
            if info.size <= 0:
                raise param_invalid(f"check mem_info.size failed, size must be > 0, index={i}.")
        logger.info("[remap_registered_memory] %d range(s): nothing to re-register with this implementation's "
                    "transports", len(infos))


@dataclass(frozen=True)
class _BlockArgs:
    """transfer_cache_async's block arguments, checked: empty lists when not given."""
    src: List[int]
    dst: List[int]
    block_bytes: int

