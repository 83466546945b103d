"""Havre's seccomp profile, proven from inside a running notebook container.

Each blocked system call is tried by a probe (a short Python program calling it through
``ctypes``) inside alice's notebook container, and the same probe runs in two *control*
containers of the same image, as the same uid, with the same capabilities dropped, differing
only in the seccomp profile: Docker's default one, and none at all. The notebook must get EPERM
for every blocked call; the unconfined control shows the probe reaches the kernel (so EPERM in
the notebook is the profile's doing). Then real work runs under the profile: a kernel started
by JupyterLab fits scikit-learn models, and the demo notebook runs to the end.

Results are collected in ``SECCOMP_TABLE`` and printed at the end of the run.
"""

from __future__ import annotations

import json

import pytest

from havre.enclave.seccomp import BLOCKED, notebook_profile

pytestmark = pytest.mark.docker

#: (probe, Docker's default profile, no profile, notebook), printed by tests/enclave_fixtures.py
SECCOMP_TABLE: list[tuple[str, str, str, str]] = []
CONTROL_LABEL = "havre.test.seccomp-control"

PROBE = r"""
import ctypes, errno, json, os, socket, struct, time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def outcome(ret):
    if ret >= 0:
        return "allowed"
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

def sc(nr, *args):
    ctypes.set_errno(0)
    return outcome(libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args]))

def cstr(text):
    return ctypes.addressof(KEEP.setdefault(text, ctypes.create_string_buffer(text)))

KEEP = {}

def sock(family, kind, proto=0):
    try:
        socket.socket(family, kind, proto).close()
        return "allowed"
    except OSError as err:
        return errno.errorcode.get(err.errno, str(err.errno))

def io_uring_setup():
    params = ctypes.create_string_buffer(120)
    return sc(425, 1, ctypes.addressof(params))

def ptrace_attach():
    pid = os.fork()
    if pid == 0:
        time.sleep(5)
        os._exit(0)
    try:
        ctypes.set_errno(0)
        ret = libc.ptrace(ctypes.c_long(16), ctypes.c_long(pid), None, None)  # PTRACE_ATTACH
        result = outcome(ret)
        if ret == 0:
            os.waitpid(pid, 0)
            libc.ptrace(ctypes.c_long(17), ctypes.c_long(pid), None, None)  # PTRACE_DETACH
        return result
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)

class IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

def process_vm(nr):
    src = ctypes.create_string_buffer(b"havre", 8)
    dst = ctypes.create_string_buffer(8)
    local = IOVec(ctypes.addressof(dst if nr == 310 else src), 5)
    remote = IOVec(ctypes.addressof(src if nr == 310 else dst), 5)
    return sc(nr, os.getpid(), ctypes.addressof(local), 1, ctypes.addressof(remote), 1, 0)

def perf_event_open():
    attr = bytearray(128)
    struct.pack_into("IIQ", attr, 0, 1, 128, 0)  # PERF_TYPE_SOFTWARE, size, CPU_CLOCK
    struct.pack_into("Q", attr, 40, (1 << 5) | (1 << 6))  # exclude_kernel, exclude_hv
    buf = ctypes.create_string_buffer(bytes(attr), 128)
    return sc(298, ctypes.addressof(buf), 0, -1, -1, 0)

def bpf():
    attr = ctypes.create_string_buffer(struct.pack("IIII", 2, 4, 4, 1), 128)  # an array map
    return sc(321, 0, ctypes.addressof(attr), 128)

PROBES = {
    "io_uring_setup": io_uring_setup,
    "io_uring_enter": lambda: sc(426, -1, 0, 0, 0, 0, 0),
    "io_uring_register": lambda: sc(427, -1, 0, 0, 0),
    "ptrace": ptrace_attach,
    "process_vm_readv": lambda: process_vm(310),
    "process_vm_writev": lambda: process_vm(311),
    "userfaultfd": lambda: sc(323, 0o2000000 | 1),  # O_CLOEXEC | UFFD_USER_MODE_ONLY
    "perf_event_open": perf_event_open,
    "bpf": bpf,
    "keyctl": lambda: sc(250, 0, -3, 0),  # the session keyring's id
    "add_key": lambda: sc(248, cstr(b"user"), cstr(b"havre-probe"), cstr(b"x"), 1, -2),
    "request_key": lambda: sc(249, cstr(b"user"), cstr(b"havre-none"), 0, 0),
    "socket(AF_VSOCK)": lambda: sock(40, socket.SOCK_STREAM),
    "socket(AF_PACKET)": lambda: sock(17, socket.SOCK_DGRAM),
    "socket(NETLINK_KOBJECT_UEVENT)": lambda: sock(16, socket.SOCK_RAW, 15),
    "socket(NETLINK_SOCK_DIAG)": lambda: sock(16, socket.SOCK_RAW, 4),
    "socket(NETLINK_ROUTE)": lambda: sock(16, socket.SOCK_RAW, 0),
    "getifaddrs (if_nameindex)": lambda: "allowed" if socket.if_nameindex() else "empty",
    "unshare(CLONE_NEWUSER)": lambda: sc(272, 0x10000000),
    "socket(AF_INET)": lambda: sock(2, socket.SOCK_STREAM),
    "socket(AF_UNIX)": lambda: sock(1, socket.SOCK_STREAM),
    "fork+exec": lambda: "allowed" if os.system("true") == 0 else "failed",
}
def run(probe):
    try:
        return probe()
    except OSError as err:
        return errno.errorcode.get(err.errno, str(err.errno))

print("PROBE-RESULT " + json.dumps({name: run(probe) for name, probe in PROBES.items()}))
"""

SOCKETS_BLOCKED = (
    "socket(AF_VSOCK)",
    "socket(AF_PACKET)",
    "socket(NETLINK_KOBJECT_UEVENT)",
    "socket(NETLINK_SOCK_DIAG)",
)
#: refused by the profile (EPERM) in every notebook
MUST_FAIL = (*BLOCKED, *SOCKETS_BLOCKED, "unshare(CLONE_NEWUSER)")
#: what ordinary programs need: must keep working under the profile
MUST_WORK = (
    "socket(AF_INET)",
    "socket(AF_UNIX)",
    "fork+exec",
    # ZeroMQ (every Jupyter kernel) lists interfaces with getifaddrs() and aborts without it
    "socket(NETLINK_ROUTE)",
    "getifaddrs (if_nameindex)",
)
#: the kernel itself refuses these to an unprivileged process whatever the profile (no
#: CAP_NET_RAW; kernel.unprivileged_bpf_disabled): the profile refuses them by name as well
KERNEL_REFUSES_TOO = {"bpf", "socket(AF_PACKET)"}
#: what the issue found working in a notebook under Docker's default profile; on an unconfined
#: control the call must reach the kernel (anything but EPERM), or the probe proves nothing
REACHES_THE_KERNEL = (
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "ptrace",
    "process_vm_readv",
    "keyctl",
    "request_key",
    "socket(AF_VSOCK)",
    "socket(NETLINK_KOBJECT_UEVENT)",
    "socket(NETLINK_SOCK_DIAG)",
)


def parse(out: bytes) -> dict[str, str]:
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("PROBE-RESULT "):
            return json.loads(line.removeprefix("PROBE-RESULT "))
    raise AssertionError(f"the probe printed no result: {out[-2000:]!r}")


def in_control(docker_client, image: str, user: str, seccomp: str | None) -> dict[str, str]:
    """The probe in a container of ``image`` as ``user``, hardened like a notebook except for
    the seccomp profile (None: Docker's default)."""
    security_opt = ["no-new-privileges:true"]
    if seccomp:
        security_opt.append(f"seccomp={seccomp}")
    out = docker_client.containers.run(
        image,
        ["python3", "-c", PROBE],
        user=user,
        cap_drop=["ALL"],
        security_opt=security_opt,
        network_mode="none",
        read_only=True,
        tmpfs={"/tmp": "rw,size=16m"},
        remove=True,
        labels={CONTROL_LABEL: "1"},
    )
    return parse(out)


@pytest.fixture(scope="module")
def probed(docker_client, alice_cardio) -> dict[str, dict[str, str]]:
    _alice, container = alice_cardio
    container.reload()
    image = container.attrs["Config"]["Image"]
    user = container.attrs["Config"]["User"] or "1000"
    code, out = container.exec_run(["python3", "-c", PROBE])
    results = {
        "notebook": parse(out),
        "default": in_control(docker_client, image, user, None),
        "unconfined": in_control(docker_client, image, user, "unconfined"),
    }
    for name in results["notebook"]:
        SECCOMP_TABLE.append(
            (
                name,
                results["default"][name],
                results["unconfined"][name],
                results["notebook"][name],
            )
        )
    return results


def test_the_notebook_container_runs_havres_profile(alice_cardio):
    _alice, container = alice_cardio
    container.reload()
    options = container.attrs["HostConfig"]["SecurityOpt"]
    (given,) = [o for o in options if o.startswith("seccomp=")]
    assert json.loads(given.removeprefix("seccomp=")) == notebook_profile()
    _code, out = container.exec_run(["sh", "-c", "grep ^Seccomp: /proc/1/status"])
    assert out.decode().split() == ["Seccomp:", "2"]  # filter mode, on the server's process


@pytest.mark.parametrize("name", MUST_FAIL)
def test_each_blocked_call_gets_eperm_in_a_notebook(probed, name):
    assert probed["notebook"][name] == "EPERM", probed["notebook"]


@pytest.mark.parametrize("name", REACHES_THE_KERNEL)
def test_the_unconfined_control_reaches_the_kernel(probed, name):
    """The positive control: without a profile the same probe, same uid, gets through (or
    fails for another reason): the notebook's EPERM comes from the profile."""
    assert probed["unconfined"][name] != "EPERM", probed["unconfined"]


def test_what_the_issue_found_open_under_dockers_default_is_closed(probed):
    """io_uring_setup, AF_VSOCK and ptrace worked in a notebook under Docker's default
    profile (the issue); under the same default profile here they still do, and not in the
    notebook."""
    for name in ("io_uring_setup", "ptrace", "socket(AF_VSOCK)"):
        assert probed["default"][name] != "EPERM", (name, probed["default"])
        assert probed["notebook"][name] == "EPERM"


def test_kernel_refusals_are_documented_not_hidden(probed):
    """Calls the kernel refuses anyway are reported as such, so the table never claims more
    than the profile does."""
    for name in KERNEL_REFUSES_TOO:
        assert probed["notebook"][name] == "EPERM"
        assert probed["unconfined"][name] in ("EPERM", "EACCES", "EAFNOSUPPORT", "allowed")


@pytest.mark.parametrize("name", MUST_WORK)
def test_ordinary_calls_still_work(probed, name):
    assert probed["notebook"][name] == "allowed"
    assert probed["unconfined"][name] == "allowed"


SKLEARN_FIT = """
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
import statsmodels.formula.api as smf

stays = pd.read_csv("/data/hospital_stays.csv")
long_stay = (stays["length_of_stay_days"] > stays["length_of_stay_days"].median()).astype(int)
X = pd.get_dummies(stays[["age_band", "sex", "region", "diagnosis_chapter"]], dtype=float)
forest = RandomForestClassifier(n_estimators=30, n_jobs=2, random_state=0)
scores = cross_val_score(forest, X, long_stay, cv=3, n_jobs=2)  # joblib worker processes
logit = LogisticRegression(max_iter=500).fit(X, long_stay)
ols = smf.ols("cost_eur ~ C(age_band) + C(sex)", data=stays).fit()
print("FIT-OK", len(stays), round(float(scores.mean()), 3), round(logit.score(X, long_stay), 3),
      round(ols.rsquared, 3))
"""


def test_a_kernel_fits_scikit_learn_models_under_the_profile(alice_cardio):
    alice, _container = alice_cardio
    out = alice.run_code("cardio", SKLEARN_FIT, timeout=240)
    assert out["error"] is None, out
    assert "FIT-OK 5000" in out["stdout"], out


def test_the_demo_notebook_runs_under_the_profile(alice_cardio):
    """The image's example notebook, executed by nbconvert in the notebook container (a
    kernel of its own over ZeroMQ), writing its outputs to /tmp, not the project's."""
    _alice, container = alice_cardio
    code, out = container.exec_run(
        [
            "sh",
            "-c",
            "mkdir -p /tmp/seccomp-demo && cd /tmp/seccomp-demo && "
            "HAVRE_OUTPUTS_DIR=/tmp/seccomp-demo/outputs jupyter nbconvert --to notebook "
            "--execute /opt/havre/examples/getting-started.ipynb --output-dir /tmp/seccomp-demo "
            "--ExecutePreprocessor.timeout=180 2>&1 && "
            "ls /tmp/seccomp-demo/outputs/getting-started-alice",
        ]
    )
    text = out.decode(errors="replace")
    assert code == 0, text
    assert "results.json" in text, text
    container.exec_run(["rm", "-rf", "/tmp/seccomp-demo"])


def test_control_containers_are_gone(docker_client):
    left = docker_client.containers.list(all=True, filters={"label": CONTROL_LABEL})
    assert left == []
