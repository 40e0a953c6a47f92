# SPDX-License-Identifier: Apache-2.0
"""`LLMRole`, `LlmConfig` (alias `LLMConfig`) and `LLMClusterInfo`, as upstream LLM-DataDist has
them: same property names, checks, defaults and generated option keys, so an options dict built
for Ascend builds the same here (`generate_options()` is byte-for-byte upstream's for the same
settings).

One extension, not upstream: `LlmConfig.device_backend` ("auto", "cuda" or "cpu"), emitted as
`llmdd.DeviceBackend` only when set.
"""
from __future__ import annotations

import json
import socket
from enum import IntEnum
from typing import Dict, List, Optional, Tuple, Union

from ._validation import check_dict, check_int, check_type, param_invalid

__all__ = ["LLMRole", "LlmConfig", "LLMConfig", "LLMClusterInfo"]

_UINT32_MAX = 2**32 - 1
_DEVICE_BACKENDS = ("auto", "cuda", "cpu")
_TRANSFER_BACKENDS = ("hixl",)
# Memory-pool JSON limits (upstream validates these at init; we do it when the value is set).
_PAGE_SHIFT_DEFAULT = 16
_PAGE_SHIFT_MIN = 10
_PAGE_SHIFT_MAX = 30


class LLMRole(IntEnum):
    """Role of an LLMDataDist instance. In CacheManager mode it is only a label."""

    PROMPT = 1
    DECODER = 2
    MIX = 3

    def __str__(self) -> str:
        return f"{self.__class__.__name__}.{self.name}"

    def _to_option_str(self) -> str:
        """The value of option `llm.Role`: "Prompt", "Decoder" or "Mix"."""
        return self.name.capitalize()


def _ip_str_to_int(ip: str, name: str = "ip") -> int:
    """Upstream's IP conversion: inet_aton, then the 4 bytes read as a little-endian integer
    (so "1.2.3.4" -> 0x04030201). Bad text -> LLMException LLM_PARAM_INVALID naming it."""
    try:
        packed = socket.inet_aton(ip)
    except (OSError, ValueError):
        raise param_invalid(f"{name} {ip!r} is not a valid IPv4 address.") from None
    return int.from_bytes(packed, byteorder="little")


def _parse_listen_ip_info(listen_ip_info: str) -> Tuple[str, int]:
    """Split `llm.listenIpInfo` "ip:port" (or "[ipv6]:port") into (ip, port), as
    LLMDataDist.init and switch_role must. LLMException LLM_PARAM_INVALID naming the value
    when the format is wrong or the port is outside [0, 65535]."""
    check_type(listen_ip_info, "listen_ip_info", str)
    host, sep, port = listen_ip_info.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # a bare IPv6 address needs brackets to tell it from the port
    if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise param_invalid(f'llm.listenIpInfo "{listen_ip_info}" is invalid, format should be '
                            f'"ip:port" (or "[ipv6]:port") with port in [0, 65535].')
    return host, int(port)


def _check_pool_cfg(value: str, name: str) -> None:
    """`mem_pool_cfg`/`host_mem_pool_cfg` must be "" (no pool) or a JSON object with an integer
    `memory_size` > 0 and an optional integer `page_shift` in [10, 30] (default 16), where a page
    fits in the pool and the page count fits uint32 (upstream's init-time rules)."""
    if value == "":
        return
    try:
        cfg = json.loads(value)
    except ValueError:
        raise param_invalid(f"{name} {value!r} is not valid JSON.") from None
    if not isinstance(cfg, dict):
        raise param_invalid(f"{name} {value!r} must be a JSON object.")
    size = cfg.get("memory_size")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= 2**64 - 1:
        raise param_invalid(f"{name} {value!r}: memory_size must be an integer in (0, 2^64-1], "
                            f"but got {size!r}.")
    shift = cfg.get("page_shift", _PAGE_SHIFT_DEFAULT)
    if isinstance(shift, bool) or not isinstance(shift, int) or not (
            _PAGE_SHIFT_MIN <= shift <= _PAGE_SHIFT_MAX):
        raise param_invalid(f"{name} {value!r}: page_shift must be an integer in "
                            f"[{_PAGE_SHIFT_MIN}, {_PAGE_SHIFT_MAX}], but got {shift!r}.")
    if (1 << shift) > size:
        raise param_invalid(f"{name} {value!r}: memory_size {size} is smaller than one page "
                            f"(1 << page_shift = {1 << shift}).")
    if (size >> shift) >= _UINT32_MAX:
        raise param_invalid(f"{name} {value!r}: memory_size {size} holds too many pages of "
                            f"{1 << shift} bytes (limit {_UINT32_MAX - 1}); raise page_shift.")


class LLMClusterInfo:
    """A remote cluster to link with (`link_clusters` / `unlink_clusters`).

    IPs are kept as upstream keeps them: an int holding the IPv4 bytes in little-endian order
    (a str given to append_*_ip_info is converted); `_ip_to_str` converts back.
    """

    def __init__(self) -> None:
        self._remote_cluster_id: Optional[int] = None
        self._remote_role_type: Optional[Union[LLMRole, int]] = None
        self._local_ip_info_list: List[Tuple[int, int]] = []
        self._remote_ip_info_list: List[Tuple[int, int]] = []

    @property
    def remote_cluster_id(self) -> Optional[int]:
        """cluster_id of the remote instance (uint64); None until set."""
        return self._remote_cluster_id

    @remote_cluster_id.setter
    def remote_cluster_id(self, remote_cluster_id: int) -> None:
        check_int(remote_cluster_id, "remote_cluster_id", "uint64")
        self._remote_cluster_id = remote_cluster_id

    @property
    def remote_role_type(self) -> Optional[Union[LLMRole, int]]:
        """Upstream keeps it but never sends it (the wire always carries 0); kept for API
        compatibility only."""
        return self._remote_role_type

    @remote_role_type.setter
    def remote_role_type(self, remote_role_type: Union[LLMRole, int]) -> None:
        check_type(remote_role_type, "remote_role_type", (LLMRole, int), allow_none=True)
        if remote_role_type is not None:
            check_int(int(remote_role_type), "remote_role_type", "int32")
        self._remote_role_type = remote_role_type

    @property
    def local_ip_info_list(self) -> List[Tuple[int, int]]:
        """[(ip as little-endian int, port)]: this side's host IP (port unused)."""
        return self._local_ip_info_list

    @property
    def remote_ip_info_list(self) -> List[Tuple[int, int]]:
        """[(ip as little-endian int, port)]: the remote's listen address."""
        return self._remote_ip_info_list

    @staticmethod
    def _to_ip_info(ip: Union[str, int], port: int) -> Tuple[int, int]:
        check_type(ip, "ip", (str, int))
        check_int(port, "port", "uint16")
        if isinstance(ip, str):
            return _ip_str_to_int(ip), port
        check_int(ip, "ip", "uint32")
        return ip, port

    def append_local_ip_info(self, ip: Union[str, int], port: int) -> None:
        """Add this side's IP (str "a.b.c.d" or the little-endian int) and port (uint16)."""
        self._local_ip_info_list.append(self._to_ip_info(ip, port))

    def append_remote_ip_info(self, ip: Union[str, int], port: int) -> None:
        """Add the remote's listen IP (str or little-endian int) and port (uint16)."""
        self._remote_ip_info_list.append(self._to_ip_info(ip, port))

    @staticmethod
    def _ip_to_str(ip: int) -> str:
        """The dotted form of an IP held as upstream holds it (little-endian int)."""
        check_int(ip, "ip", "uint32")
        return socket.inet_ntoa(ip.to_bytes(4, byteorder="little"))

    def __repr__(self) -> str:
        def fmt(infos: List[Tuple[int, int]]) -> str:
            return "[" + ", ".join(f"{self._ip_to_str(ip)}:{port}" for ip, port in infos) + "]"

        return (f"LLMClusterInfo(remote_cluster_id={self._remote_cluster_id}, "
                f"local_ip_info={fmt(self._local_ip_info_list)}, "
                f"remote_ip_info={fmt(self._remote_ip_info_list)})")


class LlmConfig:
    """Builds the options dict for `LLMDataDist.init` (`generate_options()`).

    Every field is a validated property; a field left unset emits nothing, except
    `llm.MemoryUtilization`, which upstream always emits (default "0.95"). The dict is kept and
    updated in place: `generate_options()` (alias `gen_options()`) returns the same object every
    time, with `ge_options` merged first and then the keys in upstream's order.
    """

    def __init__(self) -> None:
        self._options: Dict[str, str] = {}
        self._ge_options: Dict[str, str] = {}
        self._device_id: Optional[Union[int, List[int], Tuple[int, ...]]] = None
        self._sync_kv_timeout: Optional[Union[int, str]] = None
        self._deploy_res_path = ""
        self._buf_pool_cfg = ""
        self._mem_pool_cfg = ""
        self._host_mem_pool_cfg = ""
        self._enable_cache_manager: Optional[bool] = None
        self._enable_remote_cache_accessible: Optional[bool] = None
        self._listen_ip_info = ""
        self._link_total_time: Optional[int] = None
        self._link_retry_count: Optional[int] = None
        self._rdma_traffic_class: Optional[int] = None
        self._rdma_service_level: Optional[int] = None
        self._local_comm_res: Optional[str] = None
        self._transfer_backend: Optional[str] = None
        self._global_resource_config: Optional[str] = None
        self._cluster_info = ""
        self._output_max_size: Optional[int] = None
        self._enable_switch_role = False
        self._mem_utilization = 0.95
        self._device_backend: Optional[str] = None

    # ---- option generation -------------------------------------------------------------------

    def generate_options(self) -> Dict[str, str]:
        """The options dict for LLMDataDist.init (the same dict object on every call)."""
        return self.gen_options()

    def gen_options(self) -> Dict[str, str]:
        """Alias of generate_options (upstream has both)."""
        return self._fill(self._options)

    def _fill(self, opts: Dict[str, str]) -> Dict[str, str]:
        """Write this config's keys into `opts` in upstream's order; returns `opts`."""
        if self._ge_options:
            opts.update(self._ge_options)
        if self._device_id is not None:
            if isinstance(self._device_id, int):
                opts["ge.exec.deviceId"] = str(self._device_id)
                opts["ge.session_device_id"] = str(self._device_id)
            else:
                # Upstream inserts the session id first for a list; the order is kept.
                opts["ge.session_device_id"] = str(self._device_id[0])
                opts["ge.exec.deviceId"] = ";".join(str(d) for d in self._device_id)
        if self._sync_kv_timeout is not None:
            opts["llm.SyncKvCacheWaitTime"] = str(self._sync_kv_timeout)
        if self._deploy_res_path:
            opts["llm.deployResPath"] = self._deploy_res_path
        # memory
        if self._buf_pool_cfg:
            opts["llm.BufPoolCfg"] = self._buf_pool_cfg
        if self._mem_pool_cfg:
            opts["llm.MemPoolConfig"] = self._mem_pool_cfg
        if self._host_mem_pool_cfg:
            opts["llm.HostMemPoolConfig"] = self._host_mem_pool_cfg
        if self._enable_cache_manager is not None:
            opts["llm.EnableCacheManager"] = "1" if self._enable_cache_manager else "0"
        if self._enable_remote_cache_accessible is not None:
            opts["llm.EnableRemoteCacheAccessible"] = (
                "1" if self._enable_remote_cache_accessible else "0")
        # connection
        if self._listen_ip_info:
            opts["llm.listenIpInfo"] = self._listen_ip_info  # lower-case "l", as upstream
        if self._link_total_time is not None:
            opts["llm.LinkTotalTime"] = str(self._link_total_time)
        if self._link_retry_count is not None:
            opts["llm.LinkRetryCount"] = str(self._link_retry_count)
        if self._rdma_traffic_class is not None:
            opts["llm.RdmaTrafficClass"] = str(self._rdma_traffic_class)
        if self._rdma_service_level is not None:
            opts["llm.RdmaServiceLevel"] = str(self._rdma_service_level)
        if self._local_comm_res is not None:
            opts["llm.LocalCommRes"] = self._local_comm_res
        if self._transfer_backend is not None:
            opts["llm.TransferBackend"] = self._transfer_backend
        if self._global_resource_config is not None:
            opts["llm.GlobalResourceConfig"] = self._global_resource_config
        # legacy / offline
        if self._cluster_info:
            opts["llm.ClusterInfo"] = self._cluster_info
        if self._output_max_size is not None:
            opts["llm.OutputMaxSize"] = str(self._output_max_size)
        if self._enable_switch_role:
            opts["llm.EnableSwitchRole"] = "1"
        opts["llm.MemoryUtilization"] = str(self._mem_utilization)
        # ours, not upstream: only when set, so the default dict stays upstream's
        if self._device_backend is not None:
            opts["llmdd.DeviceBackend"] = self._device_backend
        return opts

    @property
    def options(self) -> Dict[str, str]:
        """The accumulated options dict (filled by generate_options)."""
        return self._options

    # ---- general -----------------------------------------------------------------------------

    @property
    def ge_options(self) -> Dict[str, str]:
        """Extra options copied verbatim, first (dict[str, str]; default {})."""
        return self._ge_options

    @ge_options.setter
    def ge_options(self, ge_options: Optional[Dict[str, str]]) -> None:
        check_dict(ge_options, "ge_options", str, str, allow_none=True)
        self._ge_options = {} if ge_options is None else ge_options

    @property
    def device_id(self) -> Optional[Union[int, List[int], Tuple[int, ...]]]:
        """Device ordinal (the CUDA ordinal here), or a list/tuple of them (only the first is
        used in CacheManager mode); each in [0, 2^31-1]. None until set."""
        return self._device_id

    @device_id.setter
    def device_id(self, device_id: Union[int, List[int], Tuple[int, ...]]) -> None:
        check_type(device_id, "device_id", (int, list, tuple))
        ids = [device_id] if isinstance(device_id, int) else device_id
        for i, dev in enumerate(ids):
            check_type(dev, "device_id" if isinstance(device_id, int) else f"device_id[{i}]", int)
        if not ids:
            raise param_invalid(f"device_id must not be an empty list, but got {device_id!r}.")
        for dev in ids:
            if dev < 0:
                raise param_invalid(f"device_id should be greater than or equal to zero, "
                                    f"but got {dev}.")
            check_int(dev, "device_id", "int32")
        self._device_id = device_id

    @property
    def sync_kv_timeout(self) -> Optional[Union[int, str]]:
        """Timeout of pull/push calls in ms (int or digit string, > 0, int32; kept as given).
        None until set (the engine then uses 1000 ms)."""
        return self._sync_kv_timeout

    @sync_kv_timeout.setter
    def sync_kv_timeout(self, sync_kv_timeout: Union[int, str]) -> None:
        check_type(sync_kv_timeout, "sync_kv_timeout", (int, str))
        if isinstance(sync_kv_timeout, str) and not (
                sync_kv_timeout.isascii() and sync_kv_timeout.isdigit()):
            raise param_invalid(f"sync_kv_timeout must be digit, but got {sync_kv_timeout!r}.")
        value = int(sync_kv_timeout)
        if value <= 0:
            raise param_invalid(f"sync_kv_timeout should be greater than zero, but got "
                                f"{sync_kv_timeout!r}.")
        check_int(value, "sync_kv_timeout", "int32")
        self._sync_kv_timeout = sync_kv_timeout

    @property
    def deploy_res_path(self) -> str:
        """Legacy (v1) deployment resource path; "" = unset."""
        return self._deploy_res_path

    @deploy_res_path.setter
    def deploy_res_path(self, deploy_res_path: Optional[str]) -> None:
        check_type(deploy_res_path, "deploy_res_path", str, allow_none=True)
        self._deploy_res_path = deploy_res_path or ""

    # ---- memory ------------------------------------------------------------------------------

    @property
    def buf_pool_cfg(self) -> str:
        """Legacy (v1) buffer pool JSON; "" = unset."""
        return self._buf_pool_cfg

    @buf_pool_cfg.setter
    def buf_pool_cfg(self, buf_pool_cfg: Optional[str]) -> None:
        check_type(buf_pool_cfg, "buf_pool_cfg", str, allow_none=True)
        self._buf_pool_cfg = buf_pool_cfg or ""

    @property
    def mem_pool_cfg(self) -> str:
        """Device memory pool JSON '{"memory_size": N, "page_shift": S}'; "" = no pool."""
        return self._mem_pool_cfg

    @mem_pool_cfg.setter
    def mem_pool_cfg(self, mem_pool_cfg: Optional[str]) -> None:
        check_type(mem_pool_cfg, "mem_pool_cfg", str, allow_none=True)
        _check_pool_cfg(mem_pool_cfg or "", "mem_pool_cfg")
        self._mem_pool_cfg = mem_pool_cfg or ""

    @property
    def host_mem_pool_cfg(self) -> str:
        """Host memory pool JSON, same format as mem_pool_cfg; "" = no pool."""
        return self._host_mem_pool_cfg

    @host_mem_pool_cfg.setter
    def host_mem_pool_cfg(self, host_mem_pool_cfg: Optional[str]) -> None:
        check_type(host_mem_pool_cfg, "host_mem_pool_cfg", str, allow_none=True)
        _check_pool_cfg(host_mem_pool_cfg or "", "host_mem_pool_cfg")
        self._host_mem_pool_cfg = host_mem_pool_cfg or ""

    @property
    def enable_cache_manager(self) -> bool:
        """CacheManager mode (`llm.EnableCacheManager`); emitted only when set; default False."""
        return bool(self._enable_cache_manager)

    @enable_cache_manager.setter
    def enable_cache_manager(self, enable_cache_manager: Optional[bool]) -> None:
        check_type(enable_cache_manager, "enable_cache_manager", bool, allow_none=True)
        self._enable_cache_manager = enable_cache_manager

    @property
    def enable_remote_cache_accessible(self) -> bool:
        """One-sided pulls from a snapshot of the remote cache table; emitted only when set;
        default False."""
        return bool(self._enable_remote_cache_accessible)

    @enable_remote_cache_accessible.setter
    def enable_remote_cache_accessible(self,
                                       enable_remote_cache_accessible: Optional[bool]) -> None:
        check_type(enable_remote_cache_accessible, "enable_remote_cache_accessible", bool,
                   allow_none=True)
        self._enable_remote_cache_accessible = enable_remote_cache_accessible

    @property
    def mem_utilization(self) -> float:
        """Legacy memory scale in [0, 1] (float); always emitted, default 0.95."""
        return self._mem_utilization

    @mem_utilization.setter
    def mem_utilization(self, mem_utilization: float) -> None:
        check_type(mem_utilization, "mem_utilization", float)
        if not 0.0 <= mem_utilization <= 1.0:
            raise param_invalid(f"mem_utilization must be in range [0,1], but got "
                                f"{mem_utilization}.")
        self._mem_utilization = mem_utilization

    # ---- connection --------------------------------------------------------------------------

    @property
    def listen_ip_info(self) -> str:
        """"host_ip:port" this instance listens on (option `llm.listenIpInfo`); "" = unset.
        Parsed by LLMDataDist.init, as upstream."""
        return self._listen_ip_info

    @listen_ip_info.setter
    def listen_ip_info(self, listen_ip_info: Optional[str]) -> None:
        check_type(listen_ip_info, "listen_ip_info", str, allow_none=True)
        self._listen_ip_info = listen_ip_info or ""

    @property
    def link_total_time(self) -> int:
        """Total link-setup time in seconds, [0, 2^32-1]; default 0 (engine default)."""
        return 0 if self._link_total_time is None else self._link_total_time

    @link_total_time.setter
    def link_total_time(self, link_total_time: int) -> None:
        check_type(link_total_time, "link_total_time", int)
        if not 0 <= link_total_time <= _UINT32_MAX:
            raise param_invalid(f"link_total_time should be an integer between [0, 2^32-1], "
                                f"but got {link_total_time}.")
        self._link_total_time = link_total_time

    @property
    def link_retry_count(self) -> int:
        """Link attempts within link_total_time, [1, 100]; default 1."""
        return 1 if self._link_retry_count is None else self._link_retry_count

    @link_retry_count.setter
    def link_retry_count(self, link_retry_count: int) -> None:
        check_type(link_retry_count, "link_retry_count", int)
        if not 1 <= link_retry_count <= 100:
            raise param_invalid(f"link_retry_count should be an integer between [1, 100], "
                                f"but got {link_retry_count}.")
        self._link_retry_count = link_retry_count

    @property
    def rdma_traffic_class(self) -> Optional[int]:
        """RDMA traffic class (uint32; upstream docs: [0, 255], multiple of 4); None = unset."""
        return self._rdma_traffic_class

    @rdma_traffic_class.setter
    def rdma_traffic_class(self, rdma_traffic_class: int) -> None:
        check_int(rdma_traffic_class, "rdma_traffic_class", "uint32")
        self._rdma_traffic_class = rdma_traffic_class

    @property
    def rdma_service_level(self) -> Optional[int]:
        """RDMA service level (uint32; upstream docs: [0, 7]); None = unset."""
        return self._rdma_service_level

    @rdma_service_level.setter
    def rdma_service_level(self, rdma_service_level: int) -> None:
        check_int(rdma_service_level, "rdma_service_level", "uint32")
        self._rdma_service_level = rdma_service_level

    @property
    def local_comm_res(self) -> str:
        """Local communication resource JSON; emitted when set, even to ""; default ""."""
        return "" if self._local_comm_res is None else self._local_comm_res

    @local_comm_res.setter
    def local_comm_res(self, local_comm_res: Optional[str]) -> None:
        check_type(local_comm_res, "local_comm_res", str, allow_none=True)
        self._local_comm_res = local_comm_res

    @property
    def transfer_backend(self) -> str:
        """Transfer backend; upstream accepts only "hixl"; default ""."""
        return "" if self._transfer_backend is None else self._transfer_backend

    @transfer_backend.setter
    def transfer_backend(self, transfer_backend: Optional[str]) -> None:
        check_type(transfer_backend, "transfer_backend", str, allow_none=True)
        if transfer_backend is not None and transfer_backend not in _TRANSFER_BACKENDS:
            raise param_invalid(f"transfer_backend only supports {list(_TRANSFER_BACKENDS)}, "
                                f"but got {transfer_backend!r}.")
        self._transfer_backend = transfer_backend

    @property
    def global_resource_config(self) -> str:
        """Global resource JSON passed through to the transfer backend; default ""."""
        return "" if self._global_resource_config is None else self._global_resource_config

    @global_resource_config.setter
    def global_resource_config(self, global_resource_config: Optional[str]) -> None:
        check_type(global_resource_config, "global_resource_config", str, allow_none=True)
        self._global_resource_config = global_resource_config

    # ---- legacy / offline --------------------------------------------------------------------

    @property
    def cluster_info(self) -> str:
        """Legacy cluster JSON. On set, every `listen_ip_info[*].ip` given as a dotted string
        is converted to its little-endian int (as upstream) and the JSON re-serialized."""
        return self._cluster_info

    @cluster_info.setter
    def cluster_info(self, cluster_info: str) -> None:
        check_type(cluster_info, "cluster_info", str)
        try:
            info = json.loads(cluster_info)
        except ValueError:
            raise param_invalid(f"cluster_info {cluster_info!r} is not valid JSON.") from None
        if not isinstance(info, dict):
            raise param_invalid(f"cluster_info {cluster_info!r} must be a JSON object.")
        if "listen_ip_info" in info:
            entries = info["listen_ip_info"]
            if not isinstance(entries, list):
                raise param_invalid(f"cluster_info listen_ip_info must be a list, but got "
                                    f"{entries!r}.")
            for entry in entries:
                if not isinstance(entry, dict) or "ip" not in entry:
                    raise param_invalid(f"cluster_info listen_ip_info entry {entry!r} must be "
                                        f"an object with an \"ip\".")
                if isinstance(entry["ip"], str):
                    entry["ip"] = _ip_str_to_int(entry["ip"], "cluster_info listen_ip_info ip")
        self._cluster_info = json.dumps(info)

    @property
    def output_max_size(self) -> Optional[int]:
        """Legacy output size limit (int64); None = unset."""
        return self._output_max_size

    @output_max_size.setter
    def output_max_size(self, output_max_size: int) -> None:
        check_int(output_max_size, "output_max_size", "int64")
        self._output_max_size = output_max_size

    @property
    def enable_switch_role(self) -> bool:
        """Legacy v1 switch_role permission; emitted ("1") only when True; default False."""
        return self._enable_switch_role

    @enable_switch_role.setter
    def enable_switch_role(self, enable_switch_role: Optional[bool]) -> None:
        check_type(enable_switch_role, "enable_switch_role", bool, allow_none=True)
        self._enable_switch_role = bool(enable_switch_role)

    # ---- ours --------------------------------------------------------------------------------

    @property
    def device_backend(self) -> str:
        """Not upstream. Where "device" memory lives: "cuda" (a CUDA device), "cpu" (host
        memory standing in for a device) or "auto" (CUDA when a device is present, else cpu);
        default "auto". Emitted as `llmdd.DeviceBackend` only when set."""
        return "auto" if self._device_backend is None else self._device_backend

    @device_backend.setter
    def device_backend(self, device_backend: Optional[str]) -> None:
        check_type(device_backend, "device_backend", str, allow_none=True)
        if device_backend is not None and device_backend not in _DEVICE_BACKENDS:
            raise param_invalid(f"device_backend only supports {list(_DEVICE_BACKENDS)}, "
                                f"but got {device_backend!r}.")
        self._device_backend = device_backend

    def __repr__(self) -> str:
        return f"LlmConfig({self._fill({})!r})"


LLMConfig = LlmConfig
