# SPDX-License-Identifier: Apache-2.0
"""CacheManager: upstream LLM-DataDist's cache API (CacheManager mode) over the native engine.

Argument checks follow upstream's convention (TypeError / ValueError / LLMException
LLM_PARAM_INVALID); the native core re-checks everything that touches memory.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ._validation import check_dict, check_int, check_int_list, check_type, param_invalid
from .llm_types import BlocksCacheKey, Cache, CacheDesc, CacheKey, CacheKeyByIdAndIndex, Placement
from .status import LLMException, LLMStatusCode

__all__ = ["CacheManager"]

_TRANSFER_NOT_YET = (
    "{} is not available yet: this build of llm_datadist has the local cache operations; "
    "links and transfers between processes arrive with the transfer layer."
)


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

    # -- helpers --------------------------------------------------------------------------
    def _check_valid(self) -> None:
        if not self._valid or not self._engine.initialized:
            raise RuntimeError("llm datadist is not initialized")

    def _invalidate(self) -> None:
        self._valid = False

    def _check_pool(self, desc: CacheDesc, func: str) -> None:
        if self._engine.pool_stats(int(desc.placement)) is None:
            option = "host_mem_pool_cfg" if desc.placement == Placement.HOST else "mem_pool_cfg"
            raise param_invalid(
                f"{func} with placement {desc.placement!s} needs a memory pool: set LLMConfig.{option} "
                f"before init.")

    @staticmethod
    def _check_keys(cache_keys: Any, name: str = "cache_keys") -> List[CacheKey]:
        check_type(cache_keys, name, (list, tuple))
        for i, key in enumerate(cache_keys):
            check_type(key, f"{name}[{i}]", CacheKey)
        return list(cache_keys)

    @staticmethod
    def _check_desc(cache_desc: Any) -> CacheDesc:
        check_type(cache_desc, "cache_desc", CacheDesc)
        if cache_desc.num_tensors <= 0:
            raise param_invalid(f"cache_desc.num_tensors must be > 0, but got {cache_desc.num_tensors}.")
        return cache_desc

    def _check_cache(self, cache: Any, name: str = "cache") -> Cache:
        check_type(cache, name, Cache)
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
        return self._engine.pool_stats(int(placement))

    # -- transfers: arrive with the transfer layer ----------------------------------------
    def _not_yet(self, name: str) -> LLMException:
        self._check_valid()
        return LLMException(_TRANSFER_NOT_YET.format(name), status_code=LLMStatusCode.LLM_FEATURE_NOT_ENABLED)

    def pull_cache(self, cache_key: Union[CacheKey, CacheKeyByIdAndIndex], cache: Cache, batch_index: int = 0,
                   size: int = -1, **kwargs: Any) -> None:
        raise self._not_yet("pull_cache")

    def pull_blocks(self, src_cache_key: Union[CacheKey, CacheKeyByIdAndIndex, BlocksCacheKey], dst_cache: Cache,
                    src_blocks: Sequence[int] = (), dst_blocks: Sequence[int] = (), **kwargs: Any) -> None:
        raise self._not_yet("pull_blocks")

    def push_cache(self, dst_cache_key: CacheKeyByIdAndIndex, src_cache: Cache, src_batch_index: int = 0,
                   src_layer_range: Optional[range] = None, dst_layer_range: Optional[range] = None,
                   size: int = -1, tensor_num_per_layer: int = 2) -> None:
        raise self._not_yet("push_cache")

    def push_blocks(self, dst_cache_key: BlocksCacheKey, src_cache: Cache, src_blocks: Sequence[int] = (),
                    dst_blocks: Sequence[int] = (), src_layer_range: Optional[range] = None,
                    dst_layer_range: Optional[range] = None, tensor_num_per_layer: int = 2) -> None:
        raise self._not_yet("push_blocks")

    def transfer_cache_async(self, src_cache: Cache, layer_synchronizer: Any, transfer_configs: Any,
                             src_block_indices: Any = None, dst_block_indices: Any = None,
                             dst_block_memory_size: Any = None) -> Any:
        raise self._not_yet("transfer_cache_async")

    def remap_registered_memory(self, mem_infos: Any) -> None:
        raise self._not_yet("remap_registered_memory")
