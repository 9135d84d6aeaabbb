"""The code sandbox, for real: bubblewrap, rlimits and the seccomp filter on this machine, and every escape the
issue lists, each contained and ending in a clean outcome. Nothing of the sandbox is mocked; bwrap missing is a
failure that says how to install it, not a skip."""

from __future__ import annotations

import asyncio
import glob
import os
import resource
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import pytest

from processors.tools.sandbox import (
    BOOTSTRAP,
    FORBIDDEN_CALL,
    SANDBOX_UID,
    CallFds,
    CallPaths,
    CappedBuffer,
    Programs,
    PythonRuntime,
    Sandbox,
    SandboxLimits,
    SandboxOutcome,
    SandboxUnavailable,
    check_input_name,
    sandbox_argv,
    seccomp_filter,
)

SHORT = SandboxLimits(wall_s=5.0, cpu_s=2)  # for the escapes that run until a limit stops them
LATE_S = 10.0  # a loaded two-core machine may take this long, beyond a limit, to stop and clean up a sandbox


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    if shutil.which("bwrap") is None:
        pytest.fail(
            "bubblewrap (bwrap) is not installed, so the code sandbox cannot be tested. `make setup` installs it "
            "when it runs as root on a machine with apt (CI does); elsewhere: `sudo apt-get install bubblewrap`. "
            "If this machine cannot install packages, code_interpreter cannot run here either.",
            pytrace=False,
        )
    sandbox = Sandbox()
    try:
        asyncio.run(sandbox.probe())
    except SandboxUnavailable as error:  # e.g. a kernel that refuses unprivileged user namespaces
        pytest.fail(f"the code sandbox cannot run on this machine: {error}", pytrace=False)
    return sandbox


async def run(sandbox: Sandbox, code: str, limits: SandboxLimits = SHORT, **inputs: bytes) -> SandboxOutcome:
    return await sandbox.run(code, limits=limits, inputs=inputs or None)


def sandbox_processes(marker: str) -> list[str]:
    """Command lines of the host's processes that contain `marker` (zombies have none)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline and entry != str(os.getpid()):
                found.append(cmdline)
    return found


# The pure part.


def test_the_default_limits_are_the_issues() -> None:
    limits = SandboxLimits()
    assert (limits.memory_bytes, limits.cpu_s, limits.wall_s, limits.file_bytes) == (512 * 2**20, 10, 30.0, 10 * 2**20)
    assert limits.output_bytes == 64 * 2**10 and limits.processes >= 4 and limits.open_files >= 16
    for bad in ({"memory_bytes": 0}, {"wall_s": 0}, {"processes": 2}, {"cpu_s": 1.5}):
        with pytest.raises(ValueError):
            SandboxLimits(**bad)


def test_the_command_line_builds_every_layer(tmp_path: Path) -> None:
    runtime = PythonRuntime(executable="/opt/py/bin/python3.11", prefixes=("/opt/py",), site_dirs=("/srv/venv/site-packages",))
    programs = Programs(bwrap="/usr/bin/bwrap", prlimit="/usr/bin/prlimit", timeout="/usr/bin/timeout", setpriv="/usr/bin/setpriv")
    paths = CallPaths(root=tmp_path, has_inputs=True)
    fds = CallFds(seccomp=7, code=8, status=9)
    argv = sandbox_argv(limits=SandboxLimits(), runtime=runtime, programs=programs, paths=paths, fds=fds, as_root=False)
    line = " ".join(argv)
    assert argv[0] == "/usr/bin/prlimit" and "setpriv" not in line
    for flags in (
        "--as=536870912", "--cpu=10", "--fsize=10485760", "--core=0", "--unshare-all", "--die-with-parent",
        "--new-session", "--clearenv", f"--uid {SANDBOX_UID} --gid {SANDBOX_UID}", "--cap-drop ALL", "--ro-bind /usr /usr",
        "--proc /proc", "--dev /dev", "--tmpfs /tmp", f"--bind {tmp_path}/work /work", f"--ro-bind {tmp_path}/inputs /work/inputs",
        "--ro-bind /opt/py /opt/py", "--ro-bind /srv/venv/site-packages /sandbox/site-packages/0", "--chdir /work",
        "--remount-ro /", "--seccomp 7", "--ro-bind-data 8 /sandbox/main.py", "--json-status-fd 9",
    ):
        assert flags in line, flags
    assert "/etc" not in line and "/root" not in line and "/home" not in line  # nothing of the host but these
    assert argv[-4:] == ["-c", BOOTSTRAP, "64", "/sandbox/site-packages/0"]

    # As root: a stage makes the interpreter reachable, then everything runs as nobody.
    as_root = sandbox_argv(limits=SandboxLimits(), runtime=runtime, programs=programs, paths=paths, fds=fds, as_root=True)
    setpriv = as_root.index("/usr/bin/setpriv")
    assert as_root[0] == "/usr/bin/bwrap" and f"--reuid={SANDBOX_UID}" in as_root[setpriv:] and setpriv < as_root.index("/usr/bin/prlimit")
    assert f"--ro-bind /opt/py {tmp_path}/stage/0" in " ".join(as_root[:setpriv])
    assert f"--ro-bind {tmp_path}/stage/0 /opt/py" in " ".join(as_root[setpriv:])


def test_an_interpreter_that_would_cover_the_sandboxs_own_paths_is_refused() -> None:
    with pytest.raises(ValueError, match="collides"):
        PythonRuntime(executable="/work/py/bin/python", prefixes=("/work/py",), site_dirs=()).binds()
    with pytest.raises(ValueError, match="outside"):
        PythonRuntime(executable="/opt/other/python", prefixes=("/opt/py",), site_dirs=()).binds()
    # site-packages under /work (this repository's venv) are seen elsewhere, never over /work.
    runtime = PythonRuntime(executable="/usr/bin/python3.11", prefixes=(), site_dirs=("/work/main/.venv/lib/site-packages",))
    assert runtime.sandbox_site_dirs() == ["/sandbox/site-packages/0"]


def test_output_keeps_its_head_and_tail_and_counts_the_cut() -> None:
    buffer = CappedBuffer(100)
    buffer.write(b"a" * 10)
    assert (buffer.text(), buffer.cut) == ("a" * 10, 0)
    for _ in range(1000):
        buffer.write(b"b" * 1000)
    buffer.write(b"the end")
    assert buffer.total == 10 + 1_000_000 + 7 and buffer.cut == buffer.total - 100
    text = buffer.text()
    assert text.startswith("a" * 10 + "b" * 65) and text.endswith("b" * 18 + "the end") and f"{buffer.cut:,} bytes cut" in text


def test_input_names_are_single_path_segments() -> None:
    assert check_input_name("data.csv") == "data.csv"
    for bad in ("", ".", "..", "a/b", "../x", "x\0"):
        with pytest.raises(ValueError):
            check_input_name(bad)


def test_the_seccomp_filter_is_a_bpf_program() -> None:
    program = seccomp_filter()
    assert program and len(program) % 8 == 0  # struct sock_filter: 8 bytes an instruction


# The sandbox, for real.


async def test_code_runs_prints_and_reports_how_it_ended(sandbox: Sandbox) -> None:
    outcome = await run(sandbox, "import sys\nprint('hello')\nprint('oops', file=sys.stderr)\n6 * 7")
    assert (outcome.exit_code, outcome.stopped, outcome.ok) == (0, "", True)
    assert (outcome.stdout, outcome.stderr) == ("hello\n42\n", "oops\n")  # the last expression, as in a notebook
    assert outcome.duration_s > 0 and outcome.cpu_s > 0 and outcome.max_rss_bytes >= 0  # sampled: a quick run may end first

    failed = await run(sandbox, "def f():\n    return 1 / 0\nf()")
    assert failed.exit_code == 1 and not failed.ok
    assert 'File "/sandbox/main.py", line 2, in f' in failed.stderr and "ZeroDivisionError" in failed.stderr
    assert "<string>" not in failed.stderr  # the sandbox's own first lines are left out of the traceback

    exited = await run(sandbox, "raise SystemExit(3)")
    assert (exited.exit_code, exited.stopped) == (3, "")


async def test_the_servers_python_and_its_packages_run_inside(sandbox: Sandbox) -> None:
    outcome = await run(sandbox, "import sys, numpy\nprint(sys.version_info[:2], int(numpy.arange(10**6).sum()))")
    assert outcome.ok, outcome.stderr
    assert outcome.stdout == f"{tuple(sys.version_info[:2])} 499999500000\n"


async def test_sockets_to_an_outside_address_and_to_the_servers_own_port_are_refused(sandbox: Sandbox) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:  # stands for turnlog's own port
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        port = server.getsockname()[1]
        code = f"""
import socket
for family, address in [(socket.AF_INET, ("1.1.1.1", 80)), (socket.AF_INET, ("127.0.0.1", {port})),
                        (socket.AF_INET6, ("::1", {port}))]:
    try:
        socket.create_connection(address, timeout=2)
        print("connected", address)
    except PermissionError as error:
        print("refused", error.errno)
for family in (socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK, socket.AF_PACKET):
    try:
        socket.socket(family, socket.SOCK_RAW if family == socket.AF_PACKET else socket.SOCK_DGRAM)
        print("opened", family)
    except PermissionError:
        print("refused")
import asyncio
print(asyncio.run(asyncio.sleep(0, "asyncio works")))  # its self-pipe is an AF_UNIX socketpair
"""
        outcome = await run(sandbox, code)
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing ever reached the listener
    assert outcome.ok, outcome.stderr
    assert outcome.stdout.splitlines() == ["refused 1"] * 3 + ["refused"] * 4 + ["asyncio works"]


async def test_the_data_directory_etc_passwd_and_the_hosts_processes_are_not_visible(sandbox: Sandbox, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "secret.key").write_text("TOP-SECRET-KEY")
    (data / "log.db").write_bytes(b"SQLite format 3\0 the log")
    code = f"""
import os
for path in [{str(data / 'secret.key')!r}, {str(data / 'log.db')!r}, {str(data)!r}, "/etc/passwd", "/etc/shadow",
             "/root", "/home", {os.getcwd()!r}, "/proc/1/root/etc/passwd"]:
    try:
        with open(path, "rb") as file:
            print("READ", path, file.read()[:40])
    except FileNotFoundError:
        print("missing")
    except OSError as error:
        print("refused", type(error).__name__)
print(sorted(os.listdir("/")))
print([int(pid) for pid in os.listdir("/proc") if pid.isdigit()])
"""
    outcome = await run(sandbox, code)
    assert outcome.ok, outcome.stderr
    lines = outcome.stdout.splitlines()
    assert "READ" not in outcome.stdout and "TOP-SECRET" not in outcome.stdout and "root:" not in outcome.stdout
    assert all(line == "missing" or line.startswith("refused") for line in lines[:9]), lines
    interpreter = {prefix.split("/")[1] for prefix in PythonRuntime.current().prefixes}  # e.g. `root` for ~/.pyenv
    assert set(eval(lines[9])) <= {"bin", "dev", "lib", "lib64", "proc", "sandbox", "sbin", "tmp", "usr", "work"} | interpreter
    assert lines[10] == "[1]"  # its own interpreter alone: no process of the host


async def test_another_runs_work_directory_is_not_visible(sandbox: Sandbox) -> None:
    marker = f"secret-of-run-a-{os.getpid()}-{time.monotonic_ns()}.txt"
    first_code = f"""
import os, time
open({marker!r}, "w").write("A's secret")
while not os.path.exists("done"):
    time.sleep(0.05)
print("first run ended")
"""
    first = asyncio.ensure_future(run(sandbox, first_code, SandboxLimits(wall_s=120.0)))
    host_path = ""
    try:
        deadline = time.monotonic() + 60
        while not (found := glob.glob(os.path.join(tempfile.gettempdir(), "turnlog-sandbox-*", "work", marker))):
            assert time.monotonic() < deadline and not first.done(), "the first run never wrote its file"
            await asyncio.sleep(0.02)
        host_path = found[0]
        second_code = f"""
import os
for path in [{host_path!r}, {os.path.dirname(host_path)!r}, "/work/{marker}"]:
    try:
        print("READ", open(path).read())
    except OSError as error:
        print(type(error).__name__)
print(os.listdir("/work"), os.listdir("/tmp"))
"""
        second = await run(sandbox, second_code)
    finally:
        if host_path:
            Path(host_path).with_name("done").touch()
        else:
            first.cancel()
    assert second.ok, second.stderr
    assert "READ" not in second.stdout and "A's secret" not in second.stdout
    assert second.stdout.splitlines()[-1] == "[] []"
    first_outcome = await first
    assert first_outcome.ok and first_outcome.stdout == "first run ended\n"
    assert [file.path for file in first_outcome.files] == ["done", marker]
    assert not os.path.exists(host_path)  # each call's directory is removed when it returns


async def test_nothing_outside_the_work_directory_can_be_written(sandbox: Sandbox, tmp_path: Path) -> None:
    runtime = PythonRuntime.current()
    targets = ["/x", "/usr/x", "/usr/lib/x", "/etc/x", "/opt/x", "/dev/x", "/proc/x", "/sandbox/x", "/sandbox/main.py",
               str(tmp_path / "escaped"), *(f"{prefix}/x" for prefix in runtime.prefixes),
               *(f"{directory}/x" for directory in runtime.sandbox_site_dirs())]
    code = f"""
import os
for path in {targets!r}:
    try:
        with open(path, "w") as file:
            file.write("escaped")
        print("WROTE", path)
    except OSError:
        print("refused")
open("/tmp/scratch", "w").write("private")
open("/work/kept.txt", "w").write("kept")
print(os.listdir("/tmp"))
"""
    outcome = await run(sandbox, code)
    assert outcome.ok, outcome.stderr
    assert "WROTE" not in outcome.stdout
    assert outcome.stdout.splitlines()[-1] == "['scratch']"
    assert [file.path for file in outcome.files] == ["kept.txt"]  # /tmp is the run's own, gone with it
    assert not (tmp_path / "escaped").exists()
    assert not [path for path in targets if path.startswith(("/usr", "/opt", "/etc")) and os.path.exists(path)]
    later = await run(sandbox, "import os\nprint(os.listdir('/tmp'), os.listdir('/work'))")
    assert later.stdout == "[] []\n"


def syscall_numbers(*names: str) -> dict[str, int]:
    import pyseccomp

    return {name: pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name) for name in names}


async def test_calls_innocent_code_may_try_answer_eperm_and_the_code_goes_on(sandbox: Sandbox) -> None:
    numbers = syscall_numbers("io_uring_setup", "clone3", "syslog", "name_to_handle_at")
    code = f"""
import ctypes, errno, socket
libc = ctypes.CDLL(None, use_errno=True)
numbers = {numbers!r}
calls = {{
    "socket(inet)": lambda: libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0),
    "socket(netlink)": lambda: libc.socket(16, socket.SOCK_RAW, 0),
    "io_uring_setup": lambda: libc.syscall(numbers["io_uring_setup"], 8, None),
    "personality(ADDR_NO_RANDOMIZE)": lambda: libc.personality(0x0040000),
    "syslog(read)": lambda: libc.syscall(numbers["syslog"], 3, None, 0),
    "name_to_handle_at": lambda: libc.syscall(numbers["name_to_handle_at"], -100, b"/work", None, None, 0),
    "clone3": lambda: libc.syscall(numbers["clone3"], None, 0),
}}
for name, call in calls.items():
    result = call()
    print(name, result, errno.errorcode.get(ctypes.get_errno()))
import subprocess, threading
print(subprocess.run(["echo", "processes and threads still start"], capture_output=True, text=True).stdout.strip())
thread = threading.Thread(target=print, args=("a thread",)); thread.start(); thread.join()
"""
    outcome = await run(sandbox, code)
    assert outcome.ok and not outcome.escape_attempted, outcome.stderr
    lines = outcome.stdout.splitlines()
    assert all(line.endswith(" -1 EPERM") for line in lines[:6]), lines
    assert lines[6] == "clone3 -1 ENOSYS"  # so the C library falls back to clone(), whose flags the filter reads
    assert lines[7:] == ["processes and threads still start", "a thread"]


# Calls only an escape makes: each kills the code's process (SIGSYS) before it returns, and the outcome says so.
FORBIDDEN_CALLS = {
    "unshare(user)": "libc.unshare(0x10000000)",
    "unshare(net)": "libc.unshare(0x40000000)",
    "clone(user namespace)": "libc.syscall(numbers['clone'], 0x10000000 | 17, 0, 0, 0, 0)",
    "setns": "libc.setns(0, 0)",
    "ptrace(attach 1)": "libc.ptrace(16, 1, 0, 0)",
    "mount tmpfs": "libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)",
    "chroot": "libc.chroot(b'/tmp')",
    "pivot_root": "libc.syscall(numbers['pivot_root'], b'/tmp', b'/tmp')",
    "bpf": "libc.syscall(numbers['bpf'], 0, None, 0)",
    "keyctl": "libc.syscall(numbers['keyctl'], 0, 0, 0, 0, 0)",
    "perf_event_open": "libc.syscall(numbers['perf_event_open'], None, 0, -1, -1, 0)",
    "userfaultfd": "libc.syscall(numbers['userfaultfd'], 0)",
    "open_by_handle_at": "libc.syscall(numbers['open_by_handle_at'], -100, None, 0)",
    "kexec_load": "libc.syscall(numbers['kexec_load'], 0, 0, None, 0)",
}


@pytest.mark.parametrize("call", list(FORBIDDEN_CALLS))
async def test_a_call_only_an_escape_makes_kills_the_code_and_says_an_escape_was_attempted(sandbox: Sandbox, call: str) -> None:
    numbers = syscall_numbers("clone", "pivot_root", "bpf", "keyctl", "perf_event_open", "userfaultfd", "open_by_handle_at", "kexec_load")
    code = f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
numbers = {numbers!r}
print('before')
{FORBIDDEN_CALLS[call]}
print('after')
"""
    outcome = await run(sandbox, code)
    assert (outcome.exit_code, outcome.stopped) == (128 + 31, FORBIDDEN_CALL), (outcome.stdout, outcome.stderr)
    assert outcome.escape_attempted and not outcome.ok
    assert outcome.stdout == "before\n"  # it never returned


async def test_a_forbidden_call_from_a_thread_kills_the_whole_process(sandbox: Sandbox) -> None:
    code = """
import ctypes, threading, time
thread = threading.Thread(target=lambda: ctypes.CDLL(None).ptrace(16, 1, 0, 0))
thread.start(); thread.join()
time.sleep(1)
print('survived')
"""
    outcome = await run(sandbox, code)
    assert (outcome.stopped, outcome.escape_attempted, outcome.stdout) == (FORBIDDEN_CALL, True, "")


async def test_a_forbidden_call_from_a_child_process_kills_the_child_alone(sandbox: Sandbox) -> None:
    """A known limit (docs/tools.md): only the code's own process is watched, so this attempt goes unreported."""
    code = """
import subprocess, sys
child = subprocess.run([sys.executable, "-c", "import ctypes; ctypes.CDLL(None).ptrace(16, 1, 0, 0); print('after')"],
                       capture_output=True, text=True)
print(child.returncode, repr(child.stdout))
"""
    outcome = await run(sandbox, code)
    assert outcome.ok and not outcome.escape_attempted, outcome.stderr
    assert outcome.stdout == "-31 ''\n"  # SIGSYS


@pytest.mark.alone  # looks for its processes among the host's by their script's path, which every run shares
async def test_a_fork_bomb_is_held_to_the_process_limit_and_ends_at_the_wall_clock(sandbox: Sandbox) -> None:
    counted = await run(sandbox, """
import os, time
children = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
        children += 1
except BlockingIOError:
    print(children)
""", SandboxLimits(wall_s=60.0, processes=32))
    assert counted.ok, counted.stderr
    assert 20 <= int(counted.stdout) < 32  # the limit held; the sleeping children went with the run
    assert sandbox_processes("/sandbox/main.py") == []  # the sandbox's command line holds that path

    started = time.monotonic()
    bomb = await run(sandbox, """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
""", SandboxLimits(wall_s=4.0))
    assert bomb.exit_code is None and bomb.stopped == "killed at the wall-clock limit (4 s)"
    assert time.monotonic() - started < 4.0 + LATE_S
    assert sandbox_processes("/sandbox/main.py") == []  # every process of the bomb is gone


async def test_allocating_2_gib_is_a_memory_error_under_the_default_limits(sandbox: Sandbox) -> None:
    outcome = await run(sandbox, "x = bytearray(2 * 1024**3)", SandboxLimits())
    assert outcome.exit_code == 1 and outcome.stopped == ""
    assert outcome.stderr.rstrip().endswith("MemoryError")
    assert outcome.max_rss_bytes < 512 * 2**20


@pytest.mark.alone  # looks for its processes among the host's by their script's path, which every run shares
async def test_memory_spread_over_processes_is_held_to_the_limit_in_all(sandbox: Sandbox) -> None:
    code = """
import os, time
for _ in range(6):  # 6 x 300 MiB: each process under its 512 MiB, together far over
    if os.fork() == 0:
        block = bytearray(300 * 1024 * 1024)
        for page in range(0, len(block), 4096):
            block[page] = 1
        time.sleep(600)
for _ in range(6):
    os.wait()
"""
    started = time.monotonic()
    outcome = await run(sandbox, code, SandboxLimits(wall_s=60.0))
    assert (outcome.exit_code, outcome.stopped) == (None, "killed at the memory limit (512 MiB resident in all its processes)")
    assert time.monotonic() - started < 60.0
    assert sandbox_processes("/sandbox/main.py") == []


async def test_spinning_the_cpu_is_killed_at_the_cpu_time_limit(sandbox: Sandbox) -> None:
    started = time.monotonic()
    outcome = await run(sandbox, "while True:\n    pass", SandboxLimits(cpu_s=1, wall_s=60.0))
    assert outcome.exit_code is not None and outcome.exit_code > 128 and not outcome.ok
    assert outcome.stopped.startswith("killed at the CPU-time limit (1 s")
    assert outcome.cpu_s >= 0.8 and time.monotonic() - started < 60.0


async def test_sleeping_past_the_timeout_is_killed_at_the_wall_clock(sandbox: Sandbox) -> None:
    started = time.monotonic()
    outcome = await run(sandbox, "import time\nprint('before', flush=True)\ntime.sleep(3600)", SandboxLimits(wall_s=2.0))
    elapsed = time.monotonic() - started
    assert (outcome.exit_code, outcome.stopped) == (None, "killed at the wall-clock limit (2 s)")
    assert outcome.stdout == "before\n"  # what it printed before the kill is kept
    assert 2.0 <= elapsed < 2.0 + LATE_S


async def test_printing_1_gb_keeps_only_the_capped_output_and_turnlogs_memory_small(sandbox: Sandbox) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    code = "import sys\nline = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(line)\nprint('never cut: the end')"
    limits = SandboxLimits(wall_s=30.0)
    outcome = await run(sandbox, code, limits)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert outcome.ok or outcome.stopped.startswith("killed at")  # done, or stopped by a limit: a clean outcome
    assert len(outcome.stdout.encode()) <= limits.output_bytes + 100
    assert outcome.stdout_cut > 0
    if outcome.ok:
        assert outcome.stdout_cut == 2**30 + len("never cut: the end\n") - limits.output_bytes
        assert outcome.stdout.endswith("never cut: the end\n")
    assert grown < 200 * 2**20


async def test_writing_1_gb_is_cut_at_the_file_size_limit(sandbox: Sandbox) -> None:
    code = "block = b'x' * (1 << 20)\nwith open('big.bin', 'wb') as file:\n    for _ in range(1024):\n        file.write(block)"
    outcome = await run(sandbox, code, SandboxLimits())
    assert outcome.exit_code == 1 and "[Errno 27] File too large" in outcome.stderr  # EFBIG (Python ignores SIGXFSZ)
    [big] = outcome.files
    assert (big.path, big.size) == ("big.bin", 10 * 2**20) and big.data == b"x" * (10 * 2**20)


@pytest.mark.parametrize("how", ["child", "daemon"])
async def test_a_background_process_does_not_outlive_the_call(sandbox: Sandbox, how: str) -> None:
    seconds = f"{900000 + time.monotonic_ns() % 99999}"  # `sleep <seconds>` is the marker
    if how == "child":
        code = f"import subprocess\nsubprocess.Popen(['sleep', '{seconds}'])\nprint('left it behind')"
    else:  # double fork and a new session: a daemon, reparented to the sandbox's pid 1
        code = f"""
import os
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/usr/bin/sleep", ["sleep", "{seconds}"])
    os._exit(0)
os.wait()
print('left it behind')
"""
    outcome = await run(sandbox, code)
    assert outcome.ok and outcome.stdout == "left it behind\n", outcome.stderr
    assert sandbox_processes(f"sleep {seconds}") == []


async def test_files_come_back_links_are_never_followed_and_inputs_are_read_only(sandbox: Sandbox) -> None:
    code = """
import os
os.makedirs("out/charts")
open("out/charts/a.txt", "w").write("chart")
open("z.csv", "w").write("a,b\\n1,2\\n")
os.symlink("/etc/passwd", "passwd-link")
os.symlink("/sandbox/main.py", "code-link")
os.mkfifo("a-fifo")
print(open("inputs/data.csv").read().strip())
try:
    open("inputs/data.csv", "w")
except OSError as error:
    print(type(error).__name__)
"""
    outcome = await run(sandbox, code, **{"data.csv": b"x,y\n3,4\n"})
    assert outcome.ok, outcome.stderr
    assert outcome.stdout.splitlines() == ["x,y", "3,4", "OSError"]
    assert [(file.path, file.size, file.data) for file in outcome.files] == [
        ("out/charts/a.txt", 5, b"chart"), ("z.csv", 8, b"a,b\n1,2\n"),
    ]


async def test_returned_files_are_held_to_their_count_and_bytes(sandbox: Sandbox) -> None:
    code = "for n in range(5):\n    open(f'f{n}.bin', 'wb').write(b'x' * 1000)"
    outcome = await run(sandbox, code, SandboxLimits(wall_s=30.0, returned_files=3, returned_bytes=2500))
    assert outcome.ok, outcome.stderr
    assert [(file.path, file.data is not None) for file in outcome.files] == [
        ("f0.bin", True), ("f1.bin", True), ("f2.bin", False), ("f3.bin", False), ("f4.bin", False),
    ]


async def test_a_long_stderr_keeps_its_traceback(sandbox: Sandbox) -> None:
    outcome = await run(sandbox, "import sys\nsys.stderr.write('noise ' * 100000)\nraise ValueError('the real error')")
    assert outcome.exit_code == 1 and outcome.stderr_cut > 0
    assert outcome.stderr.rstrip().endswith("ValueError: the real error")


async def test_a_cancelled_run_leaves_nothing_behind(sandbox: Sandbox) -> None:
    seconds = f"{800000 + time.monotonic_ns() % 99999}"
    task = asyncio.ensure_future(run(sandbox, f"import subprocess\nsubprocess.run(['sleep', '{seconds}'])", SandboxLimits(wall_s=120.0)))
    deadline = time.monotonic() + 60
    while not sandbox_processes(f"sleep {seconds}"):
        assert time.monotonic() < deadline and not task.done(), "the run never started its child"
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + LATE_S
    while sandbox_processes(f"sleep {seconds}"):  # SIGKILL is sent at once; the kernel takes a moment
        assert time.monotonic() < deadline, "the cancelled run's process survived"
        await asyncio.sleep(0.02)
