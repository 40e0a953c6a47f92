# SPDX-License-Identifier: Apache-2.0
"""The injected error reaches a caller however it obtained the CUDA function: linked against the
runtime, looked up with dlsym (handle or global scope), or fetched with cuGetProcAddress /
cudaGetDriverEntryPoint. Every XID of the table, and every intercepted entry point."""
from __future__ import annotations

import pytest

from fault_harness import run_probe
from llm_datadist import fault_injection as fi

XIDS = [row.xid for row in fi.xid_table()]

# (path, function): a runtime API caller, two dlsym callers, a cuGetProcAddress caller.
PATHS = {
    "runtime-api": ("rt", "cudaMemcpyAsync"),
    "dlsym-runtime": ("dl", "cudaMemcpyAsync"),
    "dlsym-driver": ("dl", "cuMemcpyAsync"),
    "cuGetProcAddress": ("pa", "cuMemcpyAsync"),
}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("xid", XIDS)
def test_every_xid_reaches_every_kind_of_caller(fault_build, xid, path):
    how, fn = PATHS[path]
    op = f"{how}:{fn}"
    code = fi.xid_info(xid).code
    run = run_probe(fault_build, ["setup", op, f"arm:xid={xid}", op, op, "state", "reset", op])
    assert run.line("setup") == "setup 0"
    before, first, second, after = run.codes(op)
    assert before == 0, "disarmed: the call goes through"
    assert first == code and second == code, f"XID {xid} must make {op} return {code}"
    assert run.line("state") == f"state fired xid={xid} code={code} injections=2"
    assert after == 0, "reset to the (disarmed) environment: the call goes through again"
    assert f"event=fired xid={xid} code={code}" in run.stderr


@pytest.mark.parametrize("op", ["drv:cuMemcpyAsync", "pt:cuMemcpyAsync_ptsz", "pa1:cuMemcpy",
                                "ep:cuMemcpyAsync", "pa:cuMemcpyHtoD_v2", "pt:cuMemcpyHtoD_v2_ptds",
                                "pa:cuLaunchKernel", "pt:cuGraphLaunch_ptsz", "pa:cuEventQuery",
                                "drv:cuCtxSynchronize", "dl:cudaDeviceSynchronize"])
def test_other_lookup_paths(fault_build, op):
    run = run_probe(fault_build, ["setup", op, "arm:xid=48", op])
    assert run.codes(op) == [0, 214]


def test_runtime_failure_is_reported_by_get_last_error_and_the_launch_is_dropped(fault_build):
    run = run_probe(fault_build, ["setup", "rt:__cudaLaunchKernel", "kernels", "arm:xid=13",
                                  "rt:__cudaLaunchKernel", "kernels", "lasterr", "lasterr",
                                  "peekerr"])
    assert run.codes("rt:__cudaLaunchKernel") == [0, 700]
    assert run.lines[2] == "kernels 1 graphs 0"
    assert run.lines[5] == "kernels 1 graphs 0", "the injected launch never ran"
    # Latched: reading the error does not clear it, as with a real sticky error.
    assert [run.lines[6], run.lines[7], run.lines[8]] == ["lasterr 700", "lasterr 700", "peekerr 700"]


def test_every_intercepted_entry_point(fault_build):
    """Each hooked function, through dlsym and (runtime ones) through the linked symbol, returns
    what it returns without the shim while disarmed, and the injected code once a sticky fault
    fired; lookups are never failed, init calls only by an XID whose GPU is gone."""
    hooks = fi.hooked_functions()
    names = [name for name, _, _ in hooks]
    assert len(names) == len(set(names))
    ops = []
    for name, api, kind in hooks:
        ops.append(f"dl:{name}")
        if api == "runtime":
            ops.append(f"rt:{name}")
    plain = run_probe(fault_build, ["setup", *ops], shim=False)
    disarmed = run_probe(fault_build, ["setup", *ops])
    assert plain.rcs() == disarmed.rcs(), "a disarmed shim changes nothing"
    assert all(rc == 0 for _, rc in plain.rcs()), plain.rcs()
    assert disarmed.stderr == ""

    # Fire the fault with a copy first, then every entry point sees the latched error.
    for xid, init_code in ((48, 0), (79, 100)):
        code = fi.xid_info(xid).code
        armed = run_probe(fault_build, ["setup", f"arm:xid={xid};functions=cuMemcpy", "dl:cuMemcpy",
                                        *ops])
        got = dict((op, rc) for op, rc in armed.rcs()[1:])
        for name, api, kind in hooks:
            for op in ([f"dl:{name}"] + ([f"rt:{name}"] if api == "runtime" else [])):
                expected = {"call": code, "report": code, "lookup": 0, "init": init_code}[kind]
                assert got[op] == expected, f"{op} ({kind}) under XID {xid}: {got[op]} != {expected}"


def test_hook_list_covers_the_entry_points_that_matter():
    names = {name for name, _, _ in fi.hooked_functions()}
    # cudart 13 reaches the driver through these; nvcc 13's <<<>>> stubs call __cudaLaunchKernel.
    for required in ("cuGetProcAddress_v2", "cuGetProcAddress",
                     "cudaGetDriverEntryPoint", "cudaGetDriverEntryPointByVersion_ptsz",
                     "__cudaLaunchKernel", "__cudaLaunchKernel_ptsz", "cudaLaunchKernel",
                     "cudaGraphLaunch", "cuGraphLaunch", "cuLaunchKernelEx", "cudaGetLastError",
                     "cudaPeekAtLastError", "cuMemcpyAsync_ptsz", "cuCtxCreate_v4", "cudaEventQuery",
                     "cuStreamQuery", "cudaMallocAsync", "cuMemAlloc_v2"):
        assert required in names, required


def test_a_name_no_library_defines_is_not_invented(fault_build, tmp_path):
    """dlsym of an intercepted name with no real definition loaded answers NULL (not the hook),
    and a call that reaches a hook without a real function aborts loudly."""
    import subprocess
    import sys

    from fault_harness import clean_env, compile_program

    code = ("import ctypes\n"
            "try:\n    ctypes.CDLL(None).cuMemcpyAsync\n    print('found')\n"
            "except AttributeError:\n    print('absent')\n")
    env = clean_env(fault_build)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout.strip() == "absent", proc.stderr

    # A program linked against a library that defines cuStreamQuery at build time, run with a
    # same-named library that does not: the call binds to the shim and there is no real one.
    (tmp_path / "with").mkdir()
    (tmp_path / "without").mkdir()
    (tmp_path / "with.c").write_text("int cuStreamQuery(void *stream) { (void)stream; return 0; }\n")
    (tmp_path / "without.c").write_text("int not_cuda(void) { return 0; }\n")
    for variant in ("with", "without"):
        compile_program([tmp_path / f"{variant}.c"], tmp_path / variant / "libcudastub.so",
                        ["-shared", "-fPIC", "-Wl,-soname,libcudastub.so"])
    src = tmp_path / "caller.c"
    src.write_text("int cuStreamQuery(void *stream);\n"
                   "int main(void) { return cuStreamQuery(0); }\n")
    exe = compile_program([src], tmp_path / "caller", [f"-L{tmp_path / 'with'}", "-lcudastub"])
    env["LD_LIBRARY_PATH"] = str(tmp_path / "without")
    proc = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode != 0
    assert "FATAL: cuStreamQuery was called through the fault shim, but no loaded library defines" in proc.stderr


def _nvcc():
    import glob
    import shutil
    found = shutil.which("nvcc")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/local/cuda*/bin/nvcc"), reverse=True)
    return candidates[0] if candidates else None


NVCC_PROGRAM = r"""
#include <cstdio>
#include <dlfcn.h>
__global__ void kernel(int *p) { if (p) *p = 1; }
int main() {
  kernel<<<1, 1>>>(nullptr);            // the stub ignores what the launch returns
  int launch = (int)cudaGetLastError();
  int sync = (int)cudaDeviceSynchronize();
  auto ran = (int (*)(void))dlsym(RTLD_DEFAULT, "fake_cudart_kernel_launches");  // the fake's count
  std::printf("launch=%d sync=%d ran=%d\n", launch, sync, ran ? ran() : -1);
  return 0;
}
"""


def test_nvcc_built_kernel_launch(fault_build, tmp_path):
    """A real nvcc 13 <<<>>> launch goes through __cudaLaunchKernel (not cudaLaunchKernel) and
    discards its result: the shim must fail it and report the error through cudaGetLastError."""
    import subprocess

    from fault_harness import clean_env
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("no nvcc on this machine")
    src = tmp_path / "launch.cu"
    src.write_text(NVCC_PROGRAM)
    exe = tmp_path / "launch"
    proc = subprocess.run([nvcc, "--cudart", "shared", "-o", str(exe), str(src), "-ldl"],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.skip(f"nvcc could not build the test program: {proc.stderr[-500:]}")
    imports = subprocess.run(["nm", "-D", "--undefined-only", str(exe)], capture_output=True, text=True).stdout
    assert "__cudaLaunchKernel" in imports

    def launch(**faults):
        env = clean_env(fault_build, faults=faults, extra={"LD_LIBRARY_PATH": str(fault_build.runtime.parent)})
        out = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert launch() == "launch=0 sync=0 ran=1"
    assert launch(xid=13) == "launch=700 sync=700 ran=0"
    assert launch(code=701, transient=1) == "launch=701 sync=0 ran=0"
