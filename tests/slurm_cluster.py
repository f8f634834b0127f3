"""A real single-node SLURM cluster on localhost, for the SLURM tests.

``LocalSlurm(root).start()`` brings up munge, MariaDB, slurmdbd (so ``sacct`` keeps the job history),
slurmctld and slurmd, with every config, state and log file under ``root`` and free ports, and two fake
GPUs advertised as gres (character devices that behave like /dev/null), so ``gpu: 1`` jobs really get a
GPU allocated and ``CUDA_VISIBLE_DEVICES`` set. Clients reach it through ``LocalSlurm.env``
(``SLURM_CONF`` pointing into ``root``); as a job step's ``srun`` is started without ``SLURM_CONF``,
/etc/slurm/slurm.conf is linked to the cluster's config while it runs. ``stop()`` shuts it all down and
removes the link, so afterwards SLURM commands fail at once instead of waiting for a controller.

``ensure_installed()`` installs the Debian packages when they are missing (root and apt-get needed) and
returns the reason it cannot when it cannot, for the tests to skip with.

Run by hand: ``python tests/slurm_cluster.py /tmp/cluster`` starts a cluster and prints its environment;
Ctrl-C stops it.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
PACKAGES = ["slurm-wlm", "slurmdbd", "munge", "mariadb-server"]
BINARIES = ["slurmctld", "slurmd", "slurmdbd", "sbatch", "sacct", "sacctmgr", "munged", "mariadbd", "mariadb-install-db"]
CLUSTER = "batchlab"
ACCOUNT = "batchlab"
PARTITION = "gpu"
GPU_TYPE = "fake"
GPUS = 2
CPUS = 2


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]


def ensure_installed() -> str | None:
    """Install SLURM, munge and MariaDB if needed; None when ready, else why they cannot be."""
    if not missing_binaries():
        return None
    if os.geteuid() != 0:
        return f"SLURM is not installed ({', '.join(missing_binaries())} missing) and installing needs root"
    if shutil.which("apt-get") is None:
        return "SLURM is not installed and there is no apt-get to install it with"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    result = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
        capture_output=True, text=True, env=env, timeout=600,
    )
    if result.returncode != 0:
        return f"apt-get install {' '.join(PACKAGES)} failed: {result.stderr.strip()[-500:]}"
    missing = missing_binaries()
    return f"still missing after install: {', '.join(missing)}" if missing else None


def conflict() -> str | None:
    """Why a test cluster cannot start here (this machine already has a SLURM config), or None."""
    if SYSTEM_CONF.exists() or SYSTEM_CONF.is_symlink():
        if SYSTEM_CONF.is_symlink() and not SYSTEM_CONF.exists():
            return None  # a link left by a test cluster that was killed: replaced
        return f"{SYSTEM_CONF} exists (a real SLURM?); the tests start their own cluster and will not replace it"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, timeout: float = 60, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class LocalSlurm:
    """A single-node SLURM with accounting, all of its files under ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.conf = self.root / "etc" / "slurm.conf"
        self.host = socket.gethostname()
        self.user = getpass.getuser()
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self._started: list[tuple[str, Path]] = []  # (name, pid file) of the daemons we started
        self._munged_started = False

    # files ---------------------------------------------------------------------------------------------
    def _write_configs(self):
        for sub in ("etc", "state", "spool", "log", "run", "dev", "mysql"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.ports = {name: free_port() for name in ("ctld", "slurmd", "dbd", "mysql")}
        for k in range(GPUS):
            dev = self.root / "dev" / f"gpu{k}"
            if not dev.exists():
                os.mknod(dev, 0o666 | 0o020000, os.makedev(1, 3))  # a character device, like /dev/null
        log, run = self.root / "log", self.root / "run"
        self.conf.write_text(
            f"""ClusterName={CLUSTER}
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={self.ports['ctld']}
SlurmdPort={self.ports['slurmd']}
SlurmUser={self.user}
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={self.root / 'state'}
SlurmdSpoolDir={self.root / 'spool'}
SlurmctldPidFile={run / 'slurmctld.pid'}
SlurmdPidFile={run / 'slurmd.pid'}
SlurmctldLogFile={log / 'slurmctld.log'}
SlurmdLogFile={log / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MinJobAge=300
ReturnToService=2
SchedulerType=sched/backfill
MpiDefault=none
GresTypes=gpu
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={self.ports['dbd']}
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory=8000 Gres=gpu:{GPU_TYPE}:{GPUS} State=UNKNOWN
PartitionName={PARTITION} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
"""
        )
        (self.root / "etc" / "gres.conf").write_text(
            "AutoDetect=off\n"
            + "".join(
                f"NodeName={self.host} Name=gpu Type={GPU_TYPE} File={self.root / 'dev' / f'gpu{k}'}\n"
                for k in range(GPUS)
            )
        )
        dbd = self.root / "etc" / "slurmdbd.conf"
        dbd.write_text(
            f"""AuthType=auth/munge
DbdAddr=127.0.0.1
DbdHost={self.host}
DbdPort={self.ports['dbd']}
SlurmUser={self.user}
LogFile={log / 'slurmdbd.log'}
PidFile={run / 'slurmdbd.pid'}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.ports['mysql']}
StorageUser=slurm
StoragePass=batchlab
StorageLoc=slurm_acct_db
"""
        )
        dbd.chmod(0o600)  # slurmdbd refuses a readable config

    # daemons -------------------------------------------------------------------------------------------
    def _run(self, *cmd: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(list(cmd), capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def _start_munge(self):
        if self._run("munge", "-n", check=False).returncode == 0:
            return  # already running
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        self._run("runuser", "-u", "munge", "--", sbin("munged"))
        self._munged_started = True
        wait_for(lambda: self._run("munge", "-n", check=False).returncode == 0, "munged")

    def _start_mysql(self):
        data, sock = self.root / "mysql", self.root / "run" / "mysql.sock"
        if not (data / "mysql").exists():
            self._run("mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                      "--auth-root-authentication-method=socket", timeout=120)
        pid = self.root / "run" / "mysql.pid"
        self._mysql = subprocess.Popen(
            [sbin("mariadbd"), "--no-defaults", f"--datadir={data}", f"--socket={sock}",
             f"--port={self.ports['mysql']}", "--bind-address=127.0.0.1", "--user=root", f"--pid-file={pid}",
             f"--log-error={self.root / 'log' / 'mariadb.log'}", "--innodb-buffer-pool-size=32M"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_for(sock.exists, "MariaDB")
        self._run("mariadb", f"--socket={sock}", "-u", "root", "-e",
                  "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'batchlab';"
                  "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';")

    def _daemon(self, name: str, pidfile: Path, ready, *args: str):
        self._run(sbin(name), *args)  # daemonizes
        self._started.append((name, pidfile))
        try:
            wait_for(ready, name)
        except RuntimeError as error:
            raise RuntimeError(f"{error}; its log:\n{self.log(name)}") from None

    def log(self, name: str) -> str:
        path = self.root / "log" / f"{name}.log"
        return path.read_text()[-3000:] if path.exists() else "(no log)"

    def start(self) -> "LocalSlurm":
        reason = conflict()
        if reason:
            raise RuntimeError(reason)
        self._write_configs()
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.unlink(missing_ok=True)
        SYSTEM_CONF.symlink_to(self.conf)
        self._start_munge()
        self._start_mysql()
        run = self.root / "run"
        self._daemon("slurmdbd", run / "slurmdbd.pid",
                     lambda: self._run("sacctmgr", "-n", "list", "cluster", check=False).returncode == 0)
        self._run("sacctmgr", "-i", "add", "cluster", CLUSTER)
        self._run("sacctmgr", "-i", "add", "account", ACCOUNT, "Description=batchlab tests", "Organization=batchlab")
        self._run("sacctmgr", "-i", "add", "user", self.user, f"Account={ACCOUNT}", f"DefaultAccount={ACCOUNT}")
        self._daemon("slurmctld", run / "slurmctld.pid",
                     lambda: self._run("scontrol", "ping", check=False).stdout.count("UP") > 0)
        self._daemon("slurmd", run / "slurmd.pid", self._node_idle)
        return self

    def _node_idle(self) -> bool:
        out = self._run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.strip()
        return out in ("idle", "mixed", "allocated")

    def stop(self):
        for name, pidfile in reversed(self._started):
            try:
                pid = int(pidfile.read_text())
                os.kill(pid, signal.SIGTERM)
                wait_for(lambda: not _alive(pid), f"{name} to stop", timeout=20)
            except (OSError, ValueError, RuntimeError):
                pass
        self._started.clear()
        if getattr(self, "_mysql", None) is not None:
            os.killpg(self._mysql.pid, signal.SIGTERM)
            try:
                self._mysql.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._mysql.pid, signal.SIGKILL)
            self._mysql = None
        if self._munged_started:
            subprocess.run(["pkill", "-x", "munged"], check=False)
            self._munged_started = False
        if SYSTEM_CONF.is_symlink() and SYSTEM_CONF.resolve() == self.conf:
            SYSTEM_CONF.unlink()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # queries -------------------------------------------------------------------------------------------
    def history(self, *fields: str) -> list[dict[str, str]]:
        """Every job in the accounting database (``sacct``), one dict of ``fields`` per allocation."""
        out = self._run(
            "sacct", "-X", "-a", "-n", "-P", "--starttime", "2000-01-01", "-o", ",".join(fields)
        ).stdout
        return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


if __name__ == "__main__":
    reason = ensure_installed()
    if reason:
        sys.exit(reason)
    cluster = LocalSlurm(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/batchlab-slurm")).start()
    print(f"export SLURM_CONF={cluster.conf}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        cluster.stop()
