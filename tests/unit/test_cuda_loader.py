# SPDX-License-Identifier: Apache-2.0
"""The run-time CUDA loader (csrc/common/cuda_driver.{h,cc}) and the fake driver.

The loader runs once per process, so every case runs in a fresh subprocess with its own
environment. No GPU is needed: the "available" paths use the fake driver built from
fault_injection/fake_cuda/fake_cuda_driver.c; on a GPU host the real driver is checked too.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_cuda import build_fake_cuda, compile_shared, fake_cuda_env  # noqa: E402
from native_programs import native_program  # noqa: E402

# Variables that would steer the loader; removed from every subprocess unless a test sets them.
_LOADER_VARS = ("LLMDD_CUDA_LIBRARY", "LLMDD_FAKE_CUDA_DEVICES", "LLMDD_FAKE_CUDA_MEM_LIMIT",
                "LLMDD_FAKE_CUDA_DRIVER_VERSION", "LLMDD_TEST_EXPECT_CUDA", "LD_PRELOAD")

_CUDA_INFO_SNIPPET = textwrap.dedent("""
    import json
    from llm_datadist import _core
    print(json.dumps(_core.cuda_info()))
""")

# A minimal LD_PRELOAD shim: interposes cuMemAlloc_v2, records each call in $SHIM_MARKER and
# forwards to the next definition (the driver) through RTLD_NEXT.
_SHIM_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

typedef int (*alloc_fn)(unsigned long long *, size_t);

int cuMemAlloc_v2(unsigned long long *dptr, size_t bytes) {
  alloc_fn real = (alloc_fn)dlsym(RTLD_NEXT, "cuMemAlloc_v2");
  const char *marker = getenv("SHIM_MARKER");
  if (marker != NULL) {
    int fd = open(marker, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      (void)write(fd, "a", 1);
      close(fd);
    }
  }
  return real != NULL ? real(dptr, bytes) : 999;
}
"""


def _env(**overrides):
    env = {k: v for k, v in os.environ.items() if k not in _LOADER_VARS}
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def _run(args, env, timeout=120):
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


def _cuda_info(env):
    proc = _run([sys.executable, "-c", _CUDA_INFO_SNIPPET], env)
    assert proc.returncode == 0, f"cuda_info() crashed (rc={proc.returncode}):\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cpp_tests_binary() -> Path:
    return native_program("llmdd_cpp_tests")


def _real_driver_loadable() -> bool:
    """Whether this machine has a libcuda the loader would find (checked in a subprocess)."""
    code = ("import ctypes, sys\n"
            "for name in ('libcuda.so.1', 'libcuda.so'):\n"
            "    try:\n        ctypes.CDLL(name); sys.exit(0)\n"
            "    except OSError:\n        pass\n"
            "sys.exit(1)\n")
    return _run([sys.executable, "-c", code], _env()).returncode == 0


@pytest.fixture(scope="module")
def fake_lib(tmp_path_factory):
    return build_fake_cuda(tmp_path_factory.mktemp("fake_cuda"))


@pytest.fixture(scope="module")
def shim_lib(tmp_path_factory):
    src = tmp_path_factory.mktemp("shim") / "alloc_shim.c"
    src.write_text(_SHIM_SOURCE)
    return compile_shared([src], src.with_name("liballoc_shim.so"), ["-ldl"])


def test_no_driver_reports_unavailable_without_crashing():
    info = _cuda_info(_env())
    if _real_driver_loadable():
        # A GPU host (or one with a driver): the answer must still be consistent.
        if info["available"]:
            assert info["device_count"] > 0 and info["reason"] == ""
            assert len(info["device_names"]) == info["device_count"]
        else:
            assert info["reason"]
        return
    assert info["available"] is False
    assert "libcuda.so.1" in info["reason"], info["reason"]
    assert info["device_count"] == 0
    assert info["device_names"] == [] and info["device_total_bytes"] == []
    assert info["interposed"] is False


def test_fake_driver_is_available(fake_lib):
    info = _cuda_info(_env(**fake_cuda_env(fake_lib)))
    assert info["available"] is True, info["reason"]
    assert info["reason"] == ""
    assert info["device_count"] == 1
    assert info["device_names"] == ["Fake CUDA Device 0"]
    assert info["device_total_bytes"] == [16 << 30]
    assert info["driver_version"] == 13000
    assert os.path.realpath(info["library_path"]) == os.path.realpath(fake_lib)
    assert info["interposed"] is False


def test_fake_driver_devices_and_memory_limit(fake_lib):
    info = _cuda_info(_env(**fake_cuda_env(fake_lib, devices=3, mem_limit=1 << 20)))
    assert info["available"] is True, info["reason"]
    assert info["device_count"] == 3
    assert info["device_names"] == [f"Fake CUDA Device {i}" for i in range(3)]
    assert info["device_total_bytes"] == [1 << 20] * 3


def test_no_device_is_unavailable_with_reason(fake_lib):
    info = _cuda_info(_env(**fake_cuda_env(fake_lib, devices=0)))
    assert info["available"] is False
    assert "CUDA_ERROR_NO_DEVICE" in info["reason"], info["reason"]
    assert "no CUDA-capable device" in info["reason"], info["reason"]
    # The library was found and answered; only the device is missing.
    assert os.path.realpath(info["library_path"]) == os.path.realpath(fake_lib)
    assert info["driver_version"] == 13000
    assert info["device_count"] == 0


def test_missing_library_names_the_path():
    info = _cuda_info(_env(LLMDD_CUDA_LIBRARY="/nonexistent/libcuda.so.1"))
    assert info["available"] is False
    assert "/nonexistent/libcuda.so.1" in info["reason"], info["reason"]
    assert "LLMDD_CUDA_LIBRARY" in info["reason"], info["reason"]


def test_library_without_driver_symbols_is_unavailable(shim_lib):
    # A loadable library that is not a driver: the reason names the missing symbols.
    info = _cuda_info(_env(LLMDD_CUDA_LIBRARY=shim_lib))
    assert info["available"] is False
    assert "cuInit" in info["reason"] and "lacks required symbols" in info["reason"], info["reason"]


def test_ld_preload_shim_interposes(fake_lib, shim_lib):
    info = _cuda_info(_env(**fake_cuda_env(fake_lib), LD_PRELOAD=shim_lib))
    assert info["available"] is True, info["reason"]
    assert info["interposed"] is True
    # The library is still named by the driver's own cuInit, not by the shim.
    assert os.path.realpath(info["library_path"]) == os.path.realpath(fake_lib)


def test_cpp_cuda_driver_tests_with_fake(fake_lib):
    binary = _cpp_tests_binary()
    env = _env(**fake_cuda_env(fake_lib, devices=2), LLMDD_TEST_EXPECT_CUDA=1)
    proc = _run([str(binary), "CudaDriver"], env)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert " 0 failed" in proc.stdout
    assert "[  OK  ] CudaDriver.MemcpyBatchIsByteExact" in proc.stdout


def test_cpp_cuda_driver_tests_without_driver():
    binary = _cpp_tests_binary()
    if _real_driver_loadable():
        pytest.skip("a CUDA driver is installed here; the unavailable path needs a host without")
    proc = _run([str(binary), "CudaDriver"], _env(LLMDD_TEST_EXPECT_CUDA=0))
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "[  OK  ] CudaDriver.UnavailablePathsNameTheReason" in proc.stdout


def test_cpp_calls_go_through_the_preloaded_shim(fake_lib, shim_lib, tmp_path):
    binary = _cpp_tests_binary()
    marker = tmp_path / "shim_calls"
    env = _env(**fake_cuda_env(fake_lib), LLMDD_TEST_EXPECT_CUDA=1, LD_PRELOAD=shim_lib,
               SHIM_MARKER=marker)
    proc = _run([str(binary), "CudaDriver.AllocMemcpyFreeRoundTrip"], env)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    # Two DeviceAlloc calls in that test, each through the shim and on to the fake driver.
    assert marker.read_text() == "aa"


@pytest.mark.cuda
def test_real_driver_if_present():
    if not _real_driver_loadable():
        pytest.skip("no CUDA driver (libcuda.so.1) on this host")
    info = _cuda_info(_env())
    if not info["available"]:
        pytest.skip(f"CUDA driver present but unusable: {info['reason']}")
    assert info["device_count"] >= 1
    assert info["driver_version"] >= 12000
    proc = _run([str(_cpp_tests_binary()), "CudaDriver"], _env(LLMDD_TEST_EXPECT_CUDA=1))
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"


# ---- The fake driver itself: IPC across processes, OOM, context rules (through ctypes) ----

_FAKE_CTYPES_PRELUDE = textwrap.dedent("""
    import ctypes, sys

    class Handle(ctypes.Structure):
        _fields_ = [("reserved", ctypes.c_char * 64)]

    lib = ctypes.CDLL(sys.argv[1])
    u64, size_t, vp = ctypes.c_ulonglong, ctypes.c_size_t, ctypes.c_void_p
    lib.cuMemAlloc_v2.argtypes = [ctypes.POINTER(u64), size_t]
    lib.cuMemFree_v2.argtypes = [u64]
    lib.cuMemcpyHtoD_v2.argtypes = [u64, ctypes.c_char_p, size_t]
    lib.cuMemcpyDtoH_v2.argtypes = [vp, u64, size_t]
    lib.cuIpcGetMemHandle.argtypes = [ctypes.POINTER(Handle), u64]
    lib.cuIpcOpenMemHandle_v2.argtypes = [ctypes.POINTER(u64), Handle, ctypes.c_uint]
    lib.cuIpcCloseMemHandle.argtypes = [u64]
    lib.cuPointerGetAttribute.argtypes = [vp, ctypes.c_int, u64]

    def ck(result, what):
        if result != 0:
            raise SystemExit(f"{what} returned {result}")

    def enter_device(ordinal=0):
        ck(lib.cuInit(0), "cuInit")
        ctx = vp()
        ck(lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), ordinal), "cuDevicePrimaryCtxRetain")
        ck(lib.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")

    N = (1 << 20) + 3
    PATTERN = bytes((i * 7 + 3) & 0xFF for i in range(N))
    MARK = b"IMPORTER-WROTE!!"
""")

_IPC_EXPORTER = _FAKE_CTYPES_PRELUDE + textwrap.dedent("""
    enter_device()
    p = u64()
    ck(lib.cuMemAlloc_v2(ctypes.byref(p), N), "cuMemAlloc_v2")
    ck(lib.cuMemcpyHtoD_v2(p, PATTERN, N), "cuMemcpyHtoD_v2")
    h = Handle()
    ck(lib.cuIpcGetMemHandle(ctypes.byref(h), u64(p.value + 100)), "cuIpcGetMemHandle")
    q = u64()
    # Like the real driver: a process cannot open its own handle (CUDA_ERROR_INVALID_CONTEXT).
    assert lib.cuIpcOpenMemHandle_v2(ctypes.byref(q), h, 1) == 201
    print(ctypes.string_at(ctypes.addressof(h), 64).hex(), flush=True)
    sys.stdin.readline()  # the importer is done
    out = ctypes.create_string_buffer(N)
    ck(lib.cuMemcpyDtoH_v2(out, p, N), "cuMemcpyDtoH_v2")
    assert out.raw[:len(MARK)] == MARK, out.raw[:16]
    assert out.raw[len(MARK):] == PATTERN[len(MARK):]
    ck(lib.cuMemFree_v2(p), "cuMemFree_v2")
    print("exporter ok", flush=True)
""")

_IPC_IMPORTER = _FAKE_CTYPES_PRELUDE + textwrap.dedent("""
    h = Handle()
    ctypes.memmove(ctypes.addressof(h), bytes.fromhex(sys.argv[2]), 64)
    q = u64()
    ck(lib.cuInit(0), "cuInit")
    # No current context yet: refused, as on a GPU.
    assert lib.cuIpcOpenMemHandle_v2(ctypes.byref(q), h, 1) == 201
    enter_device()
    ck(lib.cuIpcOpenMemHandle_v2(ctypes.byref(q), h, 1), "cuIpcOpenMemHandle_v2")
    q2 = u64()
    ck(lib.cuIpcOpenMemHandle_v2(ctypes.byref(q2), h, 1), "cuIpcOpenMemHandle_v2 again")
    assert q2.value == q.value  # reference counted, same mapping
    size, base, mtype = size_t(), u64(), ctypes.c_uint()
    ck(lib.cuPointerGetAttribute(ctypes.byref(size), 12, u64(q.value + 5)), "RANGE_SIZE")
    ck(lib.cuPointerGetAttribute(ctypes.byref(base), 11, u64(q.value + 5)), "RANGE_START_ADDR")
    ck(lib.cuPointerGetAttribute(ctypes.byref(mtype), 2, q), "MEMORY_TYPE")
    assert (size.value, base.value, mtype.value) == (N, q.value, 2)
    out = ctypes.create_string_buffer(N)
    ck(lib.cuMemcpyDtoH_v2(out, q, N), "cuMemcpyDtoH_v2")
    assert out.raw == PATTERN  # the handle names the allocation; opening gives its base
    ck(lib.cuMemcpyHtoD_v2(q, MARK, len(MARK)), "cuMemcpyHtoD_v2")
    ck(lib.cuIpcCloseMemHandle(q), "cuIpcCloseMemHandle")
    ck(lib.cuIpcCloseMemHandle(q), "cuIpcCloseMemHandle (second reference)")
    assert lib.cuIpcCloseMemHandle(q) == 1  # no longer mapped
    print("importer ok", flush=True)
""")

_OOM_AND_RULES = _FAKE_CTYPES_PRELUDE + textwrap.dedent("""
    p = u64()
    assert lib.cuMemAlloc_v2(ctypes.byref(p), 16) == 3  # before cuInit: NOT_INITIALIZED
    ck(lib.cuInit(0), "cuInit")
    assert lib.cuMemAlloc_v2(ctypes.byref(p), 16) == 201  # no current context
    enter_device(1)
    limit = 1 << 20
    ck(lib.cuMemAlloc_v2(ctypes.byref(p), limit - 4096), "cuMemAlloc_v2")
    q = u64()
    assert lib.cuMemAlloc_v2(ctypes.byref(q), 8192) == 2  # over LLMDD_FAKE_CUDA_MEM_LIMIT
    ordinal = ctypes.c_int(-1)
    ck(lib.cuPointerGetAttribute(ctypes.byref(ordinal), 9, p), "DEVICE_ORDINAL")
    assert ordinal.value == 1
    host = ctypes.create_string_buffer(64)
    assert lib.cuPointerGetAttribute(ctypes.byref(ordinal), 9, ctypes.addressof(host)) == 1
    assert lib.cuMemFree_v2(u64(p.value + 1)) == 1  # not the base
    ck(lib.cuMemFree_v2(p), "cuMemFree_v2")
    ck(lib.cuMemAlloc_v2(ctypes.byref(q), 8192), "cuMemAlloc_v2 after free")
    ck(lib.cuMemFree_v2(q), "cuMemFree_v2")
    name = ctypes.c_char_p()
    ck(lib.cuGetErrorName(700, ctypes.byref(name)), "cuGetErrorName")
    assert name.value == b"CUDA_ERROR_ILLEGAL_ADDRESS"
    assert lib.cuGetErrorName(123456, ctypes.byref(name)) == 1
    print("rules ok", flush=True)
""")


def test_fake_ipc_handle_opens_in_another_process(fake_lib):
    env = _env(**fake_cuda_env(fake_lib))
    exporter = subprocess.Popen([sys.executable, "-c", _IPC_EXPORTER, str(fake_lib)], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        handle_hex = exporter.stdout.readline().strip()
        if len(handle_hex) != 128:
            exporter.kill()
            pytest.fail(f"exporter printed {handle_hex!r}: {exporter.communicate()[1]}")
        importer = _run([sys.executable, "-c", _IPC_IMPORTER, str(fake_lib), handle_hex], env)
        assert importer.returncode == 0, importer.stdout + importer.stderr
        assert "importer ok" in importer.stdout
        out, err = exporter.communicate("done\n", timeout=60)
        assert exporter.returncode == 0, out + err
        assert "exporter ok" in out
    finally:
        if exporter.poll() is None:
            exporter.kill()
            exporter.wait()


def test_fake_memory_limit_and_context_rules(fake_lib):
    env = _env(**fake_cuda_env(fake_lib, devices=2, mem_limit=1 << 20))
    proc = _run([sys.executable, "-c", _OOM_AND_RULES, str(fake_lib)], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rules ok" in proc.stdout
