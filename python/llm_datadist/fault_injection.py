# SPDX-License-Identifier: Apache-2.0
"""CUDA fault injection: make the CUDA stack under a process fail the way a GPU with a given XID
fails, and change that while it runs.

The work is done by ``libllmdd_cuda_fault.so`` (fault_injection/cuda_fault_shim.c, whose header
comment is the manual), loaded with ``LD_PRELOAD``. This module finds it, describes its XID table,
builds its environment, runs commands under it and drives it live::

    from llm_datadist import fault_injection as fi

    fi.run(["python", "decode.py"], fi.FaultConfig(xid=48, after_calls=100))

    with fi.ControlFile(tmp / "fault.ctl") as ctl:          # live control of a child
        proc = fi.spawn(cmd, fi.FaultConfig(control_file=ctl.path))
        ctl.arm(xid=79)                                      # waits until the child applied it
        ...
        ctl.disarm()

    # inside a process that runs under the shim (started by run()/spawn()/`llm-datadist fault`):
    with fi.armed(fi.FaultConfig(code=701, transient=2)):
        ...                                                  # CUDA calls of this block fail

Importing this module loads nothing; the shim is opened (with ctypes, inert) only to read its
tables. The XID table lives in the shim (fault_injection/cuda_fault_table.def), not here.
"""
from __future__ import annotations

import ctypes
import dataclasses
import functools
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = [
    "SHIM_NAME",
    "shim_path",
    "XidInfo",
    "CudaErrorInfo",
    "xid_table",
    "xid_info",
    "error_table",
    "hooked_functions",
    "FaultConfig",
    "env_for",
    "run",
    "spawn",
    "ControlFile",
    "under_shim",
    "shim_state",
    "armed",
]

SHIM_NAME = "libllmdd_cuda_fault.so"
_ENV_PREFIX = "LLMDD_FAULT_"
PathLike = Union[str, "os.PathLike[str]"]


def shim_path() -> str:
    """Path of the shim: $LLMDD_FAULT_SHIM when set, else the copy installed with the package
    (llm_datadist/_testing/libllmdd_cuda_fault.so). Raises FileNotFoundError when it is missing."""
    override = os.environ.get("LLMDD_FAULT_SHIM")
    if override:
        path = Path(override)
        if not path.is_file():
            raise FileNotFoundError(f"LLMDD_FAULT_SHIM={override}: no such file")
        return str(path.resolve())
    path = Path(__file__).resolve().parent / "_testing" / SHIM_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"the CUDA fault-injection shim is not installed at {path}; rebuild the package "
            f"(pip install .) or point LLMDD_FAULT_SHIM at a libllmdd_cuda_fault.so")
    return str(path)


# ---- The shim's tables, read through ctypes ----
class _XidRow(ctypes.Structure):
    _fields_ = [
        ("xid", ctypes.c_int),
        ("code", ctypes.c_int),
        ("init_code", ctypes.c_int),
        ("mnemonic", ctypes.c_char_p),
        ("driver_name", ctypes.c_char_p),
        ("runtime_name", ctypes.c_char_p),
        ("init_driver_name", ctypes.c_char_p),
        ("catalog_action", ctypes.c_char_p),
        ("description", ctypes.c_char_p),
    ]


class _ErrorRow(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_int),
        ("driver_name", ctypes.c_char_p),
        ("runtime_name", ctypes.c_char_p),
        ("text", ctypes.c_char_p),
    ]


@dataclasses.dataclass(frozen=True)
class XidInfo:
    """One row of the shim's XID table."""

    xid: int
    mnemonic: str
    code: int                # CUresult == cudaError_t the intercepted calls return
    error: str               # CUDA_ERROR_... (driver name)
    runtime_error: str       # cudaError... (runtime name)
    init_code: int           # what cuInit/cu(da)GetDeviceCount return once fired; 0: they work
    init_error: str
    catalog_action: str      # NVIDIA's immediate resolution bucket (RESTART_APP, RESET_GPU, ...)
    description: str


@dataclasses.dataclass(frozen=True)
class CudaErrorInfo:
    """A CUDA error the shim names."""

    code: int
    error: str
    runtime_error: str
    text: str


@functools.lru_cache(maxsize=None)
def _tables() -> Tuple[Tuple[XidInfo, ...], Tuple[CudaErrorInfo, ...], Tuple[Tuple[str, str, str], ...]]:
    # RTLD_LOCAL: a copy opened here stays out of the global scope and intercepts nothing (the
    # shim checks that); in a process running under the shim this is the preloaded copy.
    lib = ctypes.CDLL(shim_path())
    lib.llmdd_fault_xid_count.restype = ctypes.c_size_t
    lib.llmdd_fault_xid_at.restype = ctypes.POINTER(_XidRow)
    lib.llmdd_fault_xid_at.argtypes = [ctypes.c_size_t]
    lib.llmdd_fault_error_count.restype = ctypes.c_size_t
    lib.llmdd_fault_error_at.restype = ctypes.POINTER(_ErrorRow)
    lib.llmdd_fault_error_at.argtypes = [ctypes.c_size_t]
    lib.llmdd_fault_hook_count.restype = ctypes.c_size_t
    for name in ("llmdd_fault_hook_name", "llmdd_fault_hook_api", "llmdd_fault_hook_kind"):
        getattr(lib, name).restype = ctypes.c_char_p
        getattr(lib, name).argtypes = [ctypes.c_size_t]

    def text(raw: Optional[bytes]) -> str:
        return raw.decode() if raw is not None else ""

    xids = []
    for i in range(lib.llmdd_fault_xid_count()):
        row = lib.llmdd_fault_xid_at(i).contents
        xids.append(XidInfo(row.xid, text(row.mnemonic), row.code, text(row.driver_name),
                            text(row.runtime_name), row.init_code, text(row.init_driver_name),
                            text(row.catalog_action), text(row.description)))
    errors = []
    for i in range(lib.llmdd_fault_error_count()):
        row = lib.llmdd_fault_error_at(i).contents
        errors.append(CudaErrorInfo(row.code, text(row.driver_name), text(row.runtime_name), text(row.text)))
    hooks = tuple((text(lib.llmdd_fault_hook_name(i)), text(lib.llmdd_fault_hook_api(i)),
                   text(lib.llmdd_fault_hook_kind(i))) for i in range(lib.llmdd_fault_hook_count()))
    return tuple(xids), tuple(errors), hooks


def xid_table() -> List[XidInfo]:
    """The XIDs the shim simulates and the CUDA error each one makes calls return."""
    return list(_tables()[0])


def xid_info(xid: int) -> XidInfo:
    """The table row of `xid`; ValueError naming the known XIDs when it has none."""
    for row in _tables()[0]:
        if row.xid == xid:
            return row
    known = ", ".join(str(r.xid) for r in _tables()[0])
    raise ValueError(f"XID {xid} is not in the fault table (known: {known}); give an explicit code instead")


def error_table() -> List[CudaErrorInfo]:
    """The CUDA errors the shim names in its logs (any other code can still be injected)."""
    return list(_tables()[1])


def hooked_functions() -> List[Tuple[str, str, str]]:
    """(name, api, kind) of every entry point the shim intercepts; api is "driver" or
    "runtime", kind "init", "call", "report" or "lookup"."""
    return list(_tables()[2])


# ---- Settings ----
def _check_int(name: str, value: object, low: int, high: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name}={value} is out of range {bound}")
    return value


def _check_number(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not low <= float(value) <= high:
        raise ValueError(f"{name}={value} is out of range [{low}, {high}]")
    return float(value)


@dataclasses.dataclass
class FaultConfig:
    """What to inject, when, and how the shim is controlled. Field names are the control-file
    keys and, upper-cased with the LLMDD_FAULT_ prefix, the environment variables.

    xid or code: the fault (an XID from xid_table(), or an explicit CUDA error code).
    enabled: False starts the process with the fault disarmed ("passthrough"), to be armed
        through the control file or armed().
    sticky / transient / repeat: latched (default), K failures then recovery, re-arm after that.
    after_calls / after_seconds / prob / seed / device / functions: the triggers.
    delay_ms: the firing call blocks this long first.
    control_file / poll_ms / log_json / quiet / process: process-level, environment only.
    """

    xid: Optional[int] = None
    code: Optional[int] = None
    enabled: bool = True
    sticky: bool = True
    transient: int = 0
    repeat: bool = False
    after_calls: int = 0
    after_seconds: float = 0.0
    prob: float = 1.0
    seed: Optional[int] = None
    device: Optional[int] = None
    functions: Optional[Union[str, Sequence[str]]] = None
    delay_ms: int = 0
    control_file: Optional[PathLike] = None
    poll_ms: Optional[int] = None
    log_json: Optional[PathLike] = None
    quiet: bool = False
    process: Optional[Union[str, Sequence[str]]] = None

    def __post_init__(self) -> None:
        for name in ("enabled", "sticky", "repeat", "quiet"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {type(getattr(self, name)).__name__}")
        if self.xid is not None:
            _check_int("xid", self.xid, 1)
            xid_info(self.xid)
        if self.code is not None:
            _check_int("code", self.code, 1, 1_000_000)
        if self.enabled and self.xid is None and self.code is None:
            raise ValueError("an enabled fault needs an xid or a code (or enabled=False to start "
                             "disarmed and arm it later)")
        _check_int("transient", self.transient, 0)
        _check_int("after_calls", self.after_calls, 0)
        _check_number("after_seconds", self.after_seconds, 0.0, 1e9)
        _check_number("prob", self.prob, 0.0, 1.0)
        _check_int("delay_ms", self.delay_ms, 0, 3_600_000)
        if self.seed is not None:
            _check_int("seed", self.seed, 0, 2**64 - 1)
        if self.device is not None:
            _check_int("device", self.device, 0)
        if self.poll_ms is not None:
            _check_int("poll_ms", self.poll_ms, 1, 60_000)
        self.functions = self._globs("functions", self.functions)
        self.process = self._globs("process", self.process)

    @staticmethod
    def _globs(name: str, value: object) -> Optional[str]:
        if value is None:
            return None
        if isinstance(value, str):
            items = [value]
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            items = list(value)
        else:
            raise TypeError(f"{name} must be a str or a sequence of str")
        text = ",".join(item.strip() for item in items if item.strip())
        if any(ch in text for ch in ";\n#="):
            raise ValueError(f"{name}={text!r}: patterns cannot contain ';', '=', '#' or newlines")
        if len(text) > 255:
            raise ValueError(f"{name} is longer than 255 characters")
        return text or None

    def settings(self) -> Dict[str, str]:
        """The shim settings this config sets, as control-file key/value strings."""
        out: Dict[str, str] = {"enabled": "1" if self.enabled else "0"}
        if self.xid is not None:
            out["xid"] = str(self.xid)
        if self.code is not None:
            out["code"] = str(self.code)
        if not self.sticky:
            out["sticky"] = "0"
        if self.transient:
            out["transient"] = str(self.transient)
        if self.repeat:
            out["repeat"] = "1"
        if self.after_calls:
            out["after_calls"] = str(self.after_calls)
        if self.after_seconds:
            out["after_seconds"] = repr(float(self.after_seconds))
        if self.prob != 1.0:
            out["prob"] = repr(float(self.prob))
        if self.seed is not None:
            out["seed"] = str(self.seed)
        if self.device is not None:
            out["device"] = str(self.device)
        if self.functions:
            out["functions"] = str(self.functions)
        if self.delay_ms:
            out["delay_ms"] = str(self.delay_ms)
        return out

    def settings_text(self, generation: Optional[int] = None) -> str:
        """The settings as control-file lines (what llmdd_fault_configure also accepts)."""
        lines = [f"{k}={v}" for k, v in self.settings().items()]
        if generation is not None:
            lines.append(f"generation={int(generation)}")
        return "\n".join(lines) + "\n"

    def to_env(self) -> Dict[str, str]:
        """The LLMDD_FAULT_* variables for a process started under the shim."""
        env = {_ENV_PREFIX + k.upper(): v for k, v in self.settings().items()}
        if self.control_file is not None:  # absolute: the process may change directory
            env[_ENV_PREFIX + "CONTROL_FILE"] = os.path.abspath(os.fspath(self.control_file))
        if self.poll_ms is not None:
            env[_ENV_PREFIX + "POLL_MS"] = str(self.poll_ms)
        if self.log_json is not None:
            env[_ENV_PREFIX + "LOG_JSON"] = os.path.abspath(os.fspath(self.log_json))
        if self.quiet:
            env[_ENV_PREFIX + "QUIET"] = "1"
        if self.process:
            env[_ENV_PREFIX + "PROCESS"] = str(self.process)
        return env


def env_for(config: Optional[FaultConfig] = None, base: Optional[Mapping[str, str]] = None,
            shim: Optional[PathLike] = None) -> Dict[str, str]:
    """A full environment for a subprocess under the shim: `base` (default os.environ) without
    its LLMDD_FAULT_* settings, the shim first in LD_PRELOAD, and `config`'s variables. With no
    config the process runs under the shim disarmed (armable through armed())."""
    env = dict(os.environ if base is None else base)
    for key in list(env):
        if key.startswith(_ENV_PREFIX) and key != _ENV_PREFIX + "SHIM":
            del env[key]
    path = os.fspath(shim) if shim is not None else shim_path()
    preload = [p for p in env.get("LD_PRELOAD", "").replace(" ", ":").split(":") if p and p != path]
    env["LD_PRELOAD"] = ":".join([path] + preload)
    if config is not None:
        env.update(config.to_env())
    return env


def run(command: Sequence[str], config: Optional[FaultConfig] = None, *,
        env: Optional[Mapping[str, str]] = None, **kwargs: Any) -> "subprocess.CompletedProcess[Any]":
    """subprocess.run(command) under the shim with `config` (keyword arguments pass through)."""
    return subprocess.run(list(command), env=env_for(config, env), **kwargs)


def spawn(command: Sequence[str], config: Optional[FaultConfig] = None, *,
          env: Optional[Mapping[str, str]] = None, **kwargs: Any) -> "subprocess.Popen[Any]":
    """subprocess.Popen(command) under the shim with `config`, for live control."""
    return subprocess.Popen(list(command), env=env_for(config, env), **kwargs)


# ---- Live control ----
class ControlFile:
    """The shim's control file (LLMDD_FAULT_CONTROL_FILE), written atomically.

    ``arm()``/``disarm()``/``write()`` replace the file's settings (they apply over the
    environment's) and, unless ``wait`` is None, wait until a process under the shim answered
    with the new generation in ``<path>.ack.<pid>``; ``toggle()`` writes Dynamo's ``1``/``0``
    file, which carries no generation and so cannot be waited for. As a context manager it
    disarms on exit (and deletes the file when ``remove=True``: the processes then go back to
    their environment's settings).
    """

    def __init__(self, path: PathLike, *, remove: bool = False) -> None:
        self.path = Path(path)
        self._remove = remove
        self._generation = 0
        self._written = False

    def __enter__(self) -> "ControlFile":
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._written:
            self.disarm(wait=None)
        if self._remove:
            self.remove()

    def _next_generation(self) -> int:
        self._generation = max(self._generation + 1, time.time_ns() // 1000)
        return self._generation

    def _replace(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)  # a new inode: the shim sees the change at its next poll
        self._written = True

    def write(self, config: FaultConfig, *, wait: Optional[float] = 5.0,
              pid: Optional[int] = None) -> int:
        """Writes `config`'s settings with a new generation; returns the generation."""
        generation = self._next_generation()
        self._replace(config.settings_text(generation))
        if wait is not None:
            self.wait_applied(generation, timeout=wait, pid=pid)
        return generation

    def arm(self, config: Optional[FaultConfig] = None, *, wait: Optional[float] = 5.0,
            pid: Optional[int] = None, **settings: object) -> int:
        """Arms a fault: a FaultConfig, or its fields as keywords (``arm(xid=48, after_calls=3)``)."""
        if config is None:
            config = FaultConfig(**settings)  # type: ignore[arg-type]
        elif settings:
            config = dataclasses.replace(config, **settings)  # type: ignore[arg-type]
        if not config.enabled:
            config = dataclasses.replace(config, enabled=True)
        return self.write(config, wait=wait, pid=pid)

    def disarm(self, *, wait: Optional[float] = 5.0, pid: Optional[int] = None) -> int:
        """Disarms (the processes keep running; latched faults are cleared)."""
        generation = self._next_generation()
        self._replace(f"enabled=0\ngeneration={generation}\n")
        if wait is not None:
            self.wait_applied(generation, timeout=wait, pid=pid)
        return generation

    def toggle(self, enabled: bool) -> None:
        """Dynamo's toggle file: ``1`` arms the environment's fault, ``0`` disarms it."""
        self._replace("1\n" if enabled else "0\n")

    def acks(self) -> Dict[int, Dict[str, str]]:
        """What each process under the shim last answered: {pid: {"generation": .., "state": ..
        or "error": ..}}."""
        out: Dict[int, Dict[str, str]] = {}
        for ack in self.path.parent.glob(self.path.name + ".ack.*"):
            suffix = ack.name.rsplit(".", 1)[-1]
            if not suffix.isdigit():
                continue
            try:
                lines = ack.read_text().splitlines()
            except OSError:
                continue
            fields = dict(line.split("=", 1) for line in lines if "=" in line)
            out[int(suffix)] = fields
        return out

    def wait_applied(self, generation: int, *, timeout: float = 5.0, pid: Optional[int] = None) -> int:
        """Waits until a process under the shim (`pid`, or any) applied `generation`; returns its
        pid. Raises ValueError with the shim's reason when it rejected the settings, TimeoutError
        when no process answered in time (is LLMDD_FAULT_CONTROL_FILE set to this path?)."""
        deadline = time.monotonic() + timeout
        while True:
            for ack_pid, fields in self.acks().items():
                if pid is not None and ack_pid != pid:
                    continue
                try:
                    acked = int(fields.get("generation", "0"))
                except ValueError:
                    continue
                if acked < generation:
                    continue
                if "error" in fields:
                    raise ValueError(f"the fault shim (pid {ack_pid}) rejected {self.path}: {fields['error']}")
                return ack_pid
            if time.monotonic() >= deadline:
                who = f"process {pid}" if pid is not None else "no process"
                raise TimeoutError(f"{who} under the fault shim applied generation {generation} of "
                                   f"{self.path} within {timeout} s (is its LLMDD_FAULT_CONTROL_FILE "
                                   f"this path, and is it still running?)")
            time.sleep(0.01)

    def remove(self) -> None:
        """Deletes the control file (the processes go back to their environment's settings)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


# ---- This process, when it runs under the shim ----
@functools.lru_cache(maxsize=None)
def _self_shim() -> Optional[ctypes.CDLL]:
    lib = ctypes.CDLL(None)
    try:
        lib.llmdd_fault_configure
    except AttributeError:
        return None
    lib.llmdd_fault_configure.restype = ctypes.c_int
    lib.llmdd_fault_configure.argtypes = [ctypes.c_char_p]
    lib.llmdd_fault_settings.restype = ctypes.c_int
    lib.llmdd_fault_settings.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.llmdd_fault_state.restype = ctypes.c_char_p
    lib.llmdd_fault_last_xid.restype = ctypes.c_int
    lib.llmdd_fault_last_code.restype = ctypes.c_int
    lib.llmdd_fault_injections.restype = ctypes.c_ulonglong
    return lib


def under_shim() -> bool:
    """Whether this process runs under the shim (it was preloaded)."""
    return _self_shim() is not None


def shim_state() -> Optional[Dict[str, object]]:
    """This process's fault: {"state": "off"|"armed"|"fired"|"recovered", "last_xid",
    "last_code", "injections"}, or None when it does not run under the shim."""
    lib = _self_shim()
    if lib is None:
        return None
    return {
        "state": lib.llmdd_fault_state().decode(),
        "last_xid": int(lib.llmdd_fault_last_xid()),
        "last_code": int(lib.llmdd_fault_last_code()),
        "injections": int(lib.llmdd_fault_injections()),
    }


def _configure(lib: ctypes.CDLL, text: Optional[str]) -> None:
    if lib.llmdd_fault_configure(text.encode() if text is not None else None) != 0:
        raise ValueError(f"the fault shim rejected the settings {text!r} (its stderr says why)")


@contextmanager
def armed(config: Optional[FaultConfig] = None, **settings: object) -> Iterator[None]:
    """Arms a fault in this process for the block (a new episode), then restores the previous
    settings. The process must run under the shim (run()/spawn()/`llm-datadist fault`, e.g.
    with no config: disarmed until here). Process-level fields (control_file, log_json, ...) of
    `config` are ignored here."""
    lib = _self_shim()
    if lib is None:
        raise RuntimeError("this process does not run under the CUDA fault shim; start it with "
                           "llm_datadist.fault_injection.run()/spawn() or `llm-datadist fault -- ...`")
    if config is None:
        config = FaultConfig(**settings)  # type: ignore[arg-type]
    elif settings:
        config = dataclasses.replace(config, **settings)  # type: ignore[arg-type]
    size = lib.llmdd_fault_settings(None, 0) + 1
    buf = ctypes.create_string_buffer(size)
    lib.llmdd_fault_settings(buf, size)
    previous = buf.value.decode()
    _configure(lib, config.settings_text())
    try:
        yield
    finally:
        _configure(lib, previous)
