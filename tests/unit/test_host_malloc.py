"""`rlaif-jax`'s host allocator settings: large buffers freed by one step are reused by the
next without page faults (what XLA's per-execution CPU buffers need), 'auto' picks the
mode by where XLA computes, and the console entry point applies them."""

import subprocess
import sys
import textwrap

import pytest

from rlaif_jax import cli, host_malloc

# Mallocs and touches three buffers of argv[2] MiB at once on a worker thread (XLA's
# buffers come from its own threads; three 30 MiB ones outgrow a thread arena's 64 MiB
# heap), frees them, and prints the minor page faults of the last three rounds. argv[1]:
# the host_malloc mode ('default': glibc's). (Through libc: numpy would ask for
# transparent huge pages.)
_PROBE = textwrap.dedent(
    """
    import ctypes, resource, sys, threading
    if sys.argv[1] != "default":
        from rlaif_jax import host_malloc
        assert host_malloc.configure(sys.argv[1]) == sys.argv[1]
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = (ctypes.c_void_p,)
    size = int(sys.argv[2]) * 2**20

    def rounds(n, out):
        for i in range(n):
            if i == n - 3:
                out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
            bufs = [libc.malloc(size) for _ in range(3)]
            for buf in bufs:
                ctypes.memset(buf, 1, size)
            for buf in bufs:
                libc.free(buf)
        out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)

    out = []
    t = threading.Thread(target=rounds, args=(6, out))
    t.start(); t.join()
    print(out[1] - out[0])
    """
)


def _faults(mode: str, mib: int) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode, str(mib)], capture_output=True, text=True, check=True
    )
    return int(done.stdout.strip().splitlines()[-1])


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")


@linux_only
def test_large_buffers_are_reused_without_page_faults():
    pages = 3 * 3 * 30 * 2**20 // 4096  # three rounds of three 30 MiB buffers
    assert _faults("default", 30) > pages // 4  # glibc maps and unmaps the one past 64 MiB
    assert _faults("bounded", 30) < pages // 50
    assert _faults("reuse", 30) < pages // 50


@linux_only
def test_only_reuse_keeps_buffers_above_the_mmap_cap():
    """A 48 MiB buffer (the logits of an 8 x 256 x 8192 fp32 step are 64 MiB) is above
    glibc's 32 MiB mmap cap: 'bounded' maps and returns it every round, 'reuse' keeps it."""
    pages = 3 * 3 * 48 * 2**20 // 4096
    assert _faults("bounded", 48) > pages // 4
    assert _faults("reuse", 48) < pages // 50


def test_auto_reuses_only_where_xla_computes_on_one_host_cpu():
    cpu_host = {}
    assert host_malloc.resolve_mode(cpu_host, device_nodes=[]) == "reuse"
    assert host_malloc.resolve_mode(cpu_host, device_nodes=["/dev/accel0"]) == "bounded"
    assert host_malloc.resolve_mode(cpu_host, device_nodes=["/dev/nvidia0"]) == "bounded"
    forced_cpu = {"JAX_PLATFORMS": "cpu"}
    assert host_malloc.resolve_mode(forced_cpu, device_nodes=["/dev/nvidia0"]) == "reuse"
    assert host_malloc.resolve_mode({"JAX_PLATFORMS": "tpu"}, device_nodes=[]) == "bounded"
    fake_devices = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert host_malloc.resolve_mode(fake_devices, device_nodes=[]) == "bounded"
    one_device = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    assert host_malloc.resolve_mode(one_device, device_nodes=[]) == "reuse"
    chosen = {host_malloc.ENV: "bounded"}
    assert host_malloc.resolve_mode(chosen, device_nodes=[]) == "bounded"


def test_bad_mode_names_the_variable():
    with pytest.raises(ValueError, match="RLAIF_JAX_MALLOC='fast'.*auto, reuse, bounded"):
        host_malloc.resolve_mode({host_malloc.ENV: "fast"}, device_nodes=[])


def test_default_env_leaves_glibc_alone(monkeypatch):
    monkeypatch.setenv(host_malloc.ENV, "default")
    assert host_malloc.configure() is None


def test_entry_point_configures_before_main(monkeypatch):
    calls = []
    monkeypatch.setattr(host_malloc, "configure", lambda: calls.append("malloc") or "reuse")
    monkeypatch.setattr(cli, "main", lambda: calls.append("main") or 0)
    with pytest.raises(SystemExit) as exit_info:
        cli.entry_point()
    assert exit_info.value.code == 0
    assert calls == ["malloc", "main"]


def test_entry_point_reports_a_bad_mode(monkeypatch):
    monkeypatch.setenv(host_malloc.ENV, "fast")
    monkeypatch.setattr(cli, "main", lambda: pytest.fail("main ran"))
    with pytest.raises(SystemExit, match="rlaif-jax: RLAIF_JAX_MALLOC='fast'"):
        cli.entry_point()
