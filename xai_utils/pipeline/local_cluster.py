"""A one-node SLURM cluster on this machine, from Debian's packages, to try the SLURM path of the
pipeline (``--executor slurm``) without a cluster: munge, MariaDB and slurmdbd (so ``sacct``
answers as on a real cluster), slurmctld and slurmd, with every file under one folder.

    python -m xai_utils.pipeline.local_cluster start .slurm     # `make slurm-local`
    export SLURM_CONF=$PWD/.slurm/slurm.conf                     # what it prints
    python -m xai_utils.pipeline --profile smoke --executor slurm --slurm-partition local
    python -m xai_utils.pipeline.local_cluster stop .slurm      # `make slurm-local-stop`

It runs the daemons as root (as a one-node test cluster may), on ports it finds free, and stops
exactly the processes it started (their pid files in ``<folder>/run/``). The packages are
``slurm-wlm``, ``munge``, ``slurmdbd`` and ``mariadb-server`` (`make cluster-packages`).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from ..errors import CommandLine, ConfigError

PARTITION = "local"
CLUSTER = "local"
PROGRAMS = ("munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd", "sacctmgr",
            "sinfo", "sbatch")
PACKAGES = ("slurm-wlm", "munge", "slurmdbd", "mariadb-server")
# the daemons in the order they start; stopped in the reverse order
DAEMONS = ("munged", "mariadb", "slurmdbd", "slurmctld", "slurmd")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _until(check: Callable[[], bool], seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.25)
    raise ConfigError(f"local SLURM cluster: {what} did not come up within {seconds:.0f} s")


def _runs(pid: int) -> bool:
    """The process runs (an exited one not yet reaped does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _alive(pid_file: Path) -> Optional[int]:
    """The pid in ``pid_file`` when that process runs, else None."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _runs(pid) else None


def conf_path(folder: Path) -> Path:
    """The ``slurm.conf`` of a local cluster: what ``SLURM_CONF`` names for its clients."""
    return Path(folder).resolve() / "slurm.conf"


def _program(name: str) -> str:
    """A program's path: on PATH, or in /usr/sbin (where Debian puts the daemons)."""
    return shutil.which(name) or str(Path("/usr/sbin", name))


def check_machine() -> None:
    """One line (ConfigError) where the cluster cannot start here: not root, or a program missing."""
    if os.geteuid() != 0:
        raise ConfigError("local SLURM cluster: needs root (it starts munged, MariaDB, slurmdbd, slurmctld "
                          "and slurmd as root)")
    missing = [p for p in PROGRAMS if not Path(_program(p)).is_file()]
    if missing:
        raise ConfigError(f"local SLURM cluster: {missing[0]} not found; install Debian's {' '.join(PACKAGES)} "
                          f"(make cluster-packages)")


def write_config(folder: Path) -> tuple[dict[str, Path], int]:
    """The cluster's folders, munge key and configuration files (fresh ports each time); returns
    the folders and sockets by name, and slurmdbd's port."""
    folder = Path(folder).resolve()
    paths = {name: folder / name for name in ("munge", "state", "spool", "log", "run", "db")}
    for p in paths.values():
        p.mkdir(parents=True, exist_ok=True)
    for name in ("munge", "run"):
        paths[name].chmod(0o700)
    key = paths["munge"] / "munge.key"
    if not key.is_file():
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
    host = socket.gethostname().split(".")[0]
    memory = max(1024, int(Path("/proc/meminfo").read_text().split()[1]) // 1024 - 2048)
    munge, mysql = paths["run"] / "munge.socket", paths["run"] / "mysql.sock"
    ctld, slurmd, dbd = free_port(), free_port(), free_port()
    conf = f"""# A one-node cluster for trying the SLURM path (xai_utils.pipeline.local_cluster)
ClusterName={CLUSTER}
SlurmctldHost={host}
SlurmctldPort={ctld}
SlurmdPort={slurmd}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={paths['state']}
SlurmdSpoolDir={paths['spool']}
SlurmctldPidFile={paths['run'] / 'slurmctld.pid'}
SlurmdPidFile={paths['run'] / 'slurmd.pid'}
SlurmctldLogFile={paths['log'] / 'slurmctld.log'}
SlurmdLogFile={paths['log'] / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
# a job past its time limit is killed 5 s after SIGTERM (SLURM's default waits 30 s)
KillWait=5
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={dbd}
AccountingStoragePass={munge}
NodeName={host} CPUs={os.cpu_count()} RealMemory={memory} State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
    dbd_conf = f"""AuthType=auth/munge
AuthInfo=socket={munge}
DbdHost=localhost
DbdPort={dbd}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
PidFile={paths['run'] / 'slurmdbd.pid'}
LogFile={paths['log'] / 'slurmdbd.log'}
"""
    (folder / "slurm.conf").write_text(conf)
    (folder / "slurmdbd.conf").write_text(dbd_conf)        # slurmdbd reads it beside slurm.conf
    (folder / "slurmdbd.conf").chmod(0o600)
    return {**paths, "munge_socket": munge, "mysql_socket": mysql}, dbd


def _env(folder: Path) -> dict[str, str]:
    return {**os.environ, "SLURM_CONF": str(conf_path(folder)),
            "MYSQL_UNIX_PORT": str(Path(folder).resolve() / "run" / "mysql.sock")}


def _run(args: list[str], folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=_env(folder), capture_output=True, text=True, timeout=60)


def port_open(port: int) -> bool:
    """Whether something accepts connections on ``port`` of 127.0.0.1."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def node_state(folder: Path) -> str:
    """The state ``sinfo`` gives the partition's node (``idle``, ``unk``, ...; "" when it answers nothing)."""
    out = _run([_program("sinfo"), "-h", "-p", PARTITION, "-o", "%t"], folder)
    return out.stdout.strip() if out.returncode == 0 else ""


def running(folder: Path) -> dict[str, int]:
    """The cluster's daemons that run now, by name -> pid."""
    run = Path(folder).resolve() / "run"
    pids = {name: _alive(run / f"{name}.pid") for name in DAEMONS}
    return {name: pid for name, pid in pids.items() if pid}


def start(folder: Path, log: Callable[[str], None] = print) -> Path:
    """Start the cluster in ``folder`` (nothing when it runs already); returns its slurm.conf."""
    check_machine()
    folder = Path(folder).resolve()
    up = running(folder)
    if set(up) == set(DAEMONS):
        log(f"local SLURM cluster already running in {folder}")
        return conf_path(folder)
    if up:                                   # a part of an earlier start: begin again
        stop(folder, log=lambda _: None)
    paths, dbd_port = write_config(folder)
    run, logs = paths["run"], paths["log"]
    env = _env(folder)
    subprocess.run([_program("munged"), "--force", f"--socket={paths['munge_socket']}",
                    f"--key-file={paths['munge'] / 'munge.key'}", f"--log-file={logs / 'munged.log'}",
                    f"--pid-file={run / 'munged.pid'}", f"--seed-file={paths['munge'] / 'seed'}"],
                   check=True, capture_output=True, timeout=30)
    if not (paths["db"] / "mysql").is_dir():
        subprocess.run([_program("mariadb-install-db"), "--no-defaults", f"--datadir={paths['db']}", "--user=root",
                        "--auth-root-authentication-method=socket"], check=True, capture_output=True, timeout=120)
    mariadbd = [_program("mariadbd"), "--no-defaults", f"--datadir={paths['db']}", f"--socket={paths['mysql_socket']}",
                "--skip-networking", "--user=root", f"--pid-file={run / 'mariadb.pid'}",
                f"--log-error={logs / 'mariadb.log'}"]
    # started through a shell that exits at once, so the server is no child of this process
    # (the other daemons detach themselves)
    subprocess.run(["sh", "-c", 'setsid "$@" >/dev/null 2>&1 < /dev/null &', "sh", *mariadbd], check=True, timeout=30)
    _until(lambda: paths["mysql_socket"].exists(), 60, "MariaDB")
    subprocess.run([_program("slurmdbd")], env=env, check=True, capture_output=True, timeout=30)
    _until(lambda: port_open(dbd_port), 60, "slurmdbd")
    listed = _run([_program("sacctmgr"), "-n", "-P", "list", "cluster", "format=cluster"], folder).stdout.split()
    if CLUSTER not in listed:
        added = _run([_program("sacctmgr"), "-i", "add", "cluster", CLUSTER], folder)
        if added.returncode != 0:
            raise ConfigError(f"local SLURM cluster: sacctmgr add cluster failed: {added.stderr.strip()}")
    conf = str(conf_path(folder))
    subprocess.run([_program("slurmctld"), "-f", conf], env=env, check=True, capture_output=True, timeout=30)
    subprocess.run([_program("slurmd"), "-f", conf], env=env, check=True, capture_output=True, timeout=30)
    _until(lambda: node_state(folder) == "idle", 60, "the node")
    log(f"local SLURM cluster up in {folder}: partition '{PARTITION}', one node of {os.cpu_count()} CPUs, "
        f"accounting by slurmdbd")
    log(f"  export SLURM_CONF={conf}")
    log(f"  python -m xai_utils.pipeline --profile smoke --executor slurm --slurm-partition {PARTITION}")
    log(f"  stop it: python -m xai_utils.pipeline.local_cluster stop {folder}")
    return conf_path(folder)


def stop(folder: Path, log: Callable[[str], None] = print) -> list[str]:
    """Stop the daemons this folder's cluster started (by their pid files), the last started
    first; returns their names."""
    folder = Path(folder).resolve()
    stopped = []
    for name in reversed(DAEMONS):
        pid_file = folder / "run" / f"{name}.pid"
        pid = _alive(pid_file)
        if pid is None:
            continue
        os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + 20
        while time.monotonic() < end and _runs(pid):       # the process itself: a daemon may remove
            time.sleep(0.2)                                 # its pid file before it has exited
        if _runs(pid):
            os.kill(pid, signal.SIGKILL)
        stopped.append(name)
    log(f"local SLURM cluster in {folder}: " + (f"stopped {', '.join(stopped)}" if stopped else "nothing running"))
    return stopped


def main(argv: Optional[list[str]] = None) -> int:
    ap = CommandLine(prog="python -m xai_utils.pipeline.local_cluster",
                     description="A one-node SLURM cluster on this machine (Debian's packages), for the SLURM path.")
    ap.add_argument("action", choices=("start", "stop"))
    ap.add_argument("folder", nargs="?", default=".slurm", help="where its configuration, state and logs go")
    args = ap.parse_args(argv)
    try:
        (start if args.action == "start" else stop)(Path(args.folder))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
