"""`rlaif-jax`'s host allocator settings: large buffers freed by one step are reused by the
next without page faults (what XLA's per-execution CPU buffers need), and the console
entry point applies them."""

import subprocess
import sys
import textwrap

import pytest

from rlaif_jax import cli, host_malloc

# Mallocs and touches three 30 MiB buffers at once on a worker thread (XLA's buffers
# come from its own threads; together they outgrow a thread arena's 64 MiB heap), frees
# them, and prints the minor page faults of the last three rounds. (Through libc: numpy
# would ask for transparent huge pages.)
_PROBE = textwrap.dedent(
    """
    import ctypes, resource, sys, threading
    if sys.argv[1] == "tuned":
        from rlaif_jax import host_malloc
        assert host_malloc.configure()
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = (ctypes.c_void_p,)
    size = 30 * 2**20

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


def _faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_large_buffers_are_reused_without_page_faults():
    pages = 3 * 3 * 30 * 2**20 // 4096  # three rounds of three 30 MiB buffers
    assert _faults("default") > pages // 4  # glibc maps and unmaps the one past 64 MiB
    assert _faults("tuned") < pages // 50


def test_default_env_leaves_glibc_alone(monkeypatch):
    monkeypatch.setenv(host_malloc.ENV, "default")
    assert host_malloc.configure() is False


def test_entry_point_configures_before_main(monkeypatch):
    calls = []
    monkeypatch.setattr(host_malloc, "configure", lambda: calls.append("malloc") or True)
    monkeypatch.setattr(cli, "main", lambda: calls.append("main") or 0)
    with pytest.raises(SystemExit) as exit_info:
        cli.entry_point()
    assert exit_info.value.code == 0
    assert calls == ["malloc", "main"]
