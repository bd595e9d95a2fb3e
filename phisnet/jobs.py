"""Background jobs: generate a small dataset and train a small model in a separate process.

The app's Train page starts a job and shows its progress; the job lives in its own
folder, so it survives a page reload and can be listed, followed and stopped from any
session. A job folder holds:

- ``job.json``: what to do (molecule, number of structures, training settings);
- ``status.json``: phase (``queued``, ``generating``, ``training``, ``finished``, ``failed``,
  ``stopped``), a message, the process id, and timestamps; written atomically;
- ``data.db``: the generated dataset; ``best.pt``, ``last.pt``, ``metrics.jsonl``: the run;
- ``log.txt``: everything the process printed.

Run one by hand with ``python -m phisnet.jobs JOB_FOLDER``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from phisnet.files import write_text_atomic

#: Default folder of the app's jobs.
DEFAULT_ROOT = Path("runs") / "app"
ACTIVE = ("queued", "generating", "training")


@dataclass
class JobSpec:
    """What a job does: ``phisnet generate`` then a small ``train.py`` run."""

    molecule: str = "water"
    n_structures: int = 40
    max_steps: int = 300
    max_minutes: float = 10.0
    channels: int = 8
    n_interactions: int = 1
    batch_size: int = 4
    lr: float = 3e-3
    seed: int = 0


@dataclass
class JobStatus:
    """What a job is doing now, read from its folder."""

    folder: Path
    spec: JobSpec
    phase: str
    message: str = ""
    pid: int | None = None
    started: float = 0.0
    updated: float = 0.0
    generated: int = 0
    metrics: list[dict] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    @property
    def best(self) -> Path | None:
        path = self.folder / "best.pt"
        return path if path.is_file() else None

    @property
    def step(self) -> int:
        return self.metrics[-1]["step"] if self.metrics else 0


def start(spec: JobSpec, root: str | Path = DEFAULT_ROOT) -> Path:
    """Create a job folder and start its process (detached: it outlives the app session)."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", spec.molecule).strip("-")[:30] or "molecule"
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}"
    folder, suffix = Path(root) / base, 1
    while folder.exists():
        suffix += 1
        folder = Path(root) / f"{base}-{suffix}"
    folder.mkdir(parents=True)
    write_text_atomic(folder / "job.json", json.dumps(asdict(spec), indent=2))
    _write_status(folder, "queued", "waiting for the process to start")
    log = open(folder / "log.txt", "ab")  # noqa: SIM115 - handed to the child process
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    process = subprocess.Popen(
        [sys.executable, "-m", "phisnet.jobs", str(folder)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    log.close()
    _write_status(folder, "queued", "process started", pid=process.pid)
    return folder


def status(folder: str | Path) -> JobStatus:
    """The job's status; a job whose process died without saying so is reported as failed."""
    from phisnet.run_log import read_metrics

    folder = Path(folder)
    spec = JobSpec(**json.loads((folder / "job.json").read_text()))
    raw = _read_status(folder)
    job = JobStatus(
        folder=folder,
        spec=spec,
        phase=raw.get("phase", "queued"),
        message=raw.get("message", ""),
        pid=raw.get("pid"),
        started=raw.get("started", 0.0),
        updated=raw.get("updated", 0.0),
    )
    if job.active and job.pid and not _alive(job.pid):
        job.phase, job.message = "failed", "the job's process ended unexpectedly; see log.txt"
    if (folder / "data.db").is_file():
        job.generated = _count_rows(folder / "data.db")
    if (folder / "metrics.jsonl").is_file():
        job.metrics = read_metrics(folder)
    return job


def list_jobs(root: str | Path = DEFAULT_ROOT) -> list[JobStatus]:
    """All jobs under ``root``, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    folders = sorted((p for p in root.iterdir() if (p / "job.json").is_file()), reverse=True)
    return [status(p) for p in folders]


def stop(folder: str | Path) -> None:
    """Stop a running job (its whole process group); its files stay."""
    job = status(folder)
    if job.active and job.pid and _alive(job.pid):
        try:
            os.killpg(job.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    if job.active:
        _write_status(Path(folder), "stopped", "stopped by the user", pid=job.pid)


def run(folder: str | Path) -> int:
    """The job's own process: generate the data, then train (called by ``start``)."""
    from phisnet.config import PhiSNetConfig
    from phisnet.data import generate
    from phisnet.train_config import TrainConfig
    from phisnet.training import run as train

    folder = Path(folder)
    spec = JobSpec(**json.loads((folder / "job.json").read_text()))
    pid = os.getpid()

    def log(message: str) -> None:
        print(message, flush=True)

    try:
        _write_status(folder, "generating", f"PySCF reference data for {spec.n_structures} structures", pid=pid)
        generate(spec.molecule, spec.n_structures, folder / "data.db", seed=spec.seed, progress=False, log=log)
        _write_status(folder, "training", f"training for up to {spec.max_steps} steps", pid=pid)
        n_val = max(2, spec.n_structures // 10)
        config = TrainConfig(
            data=str(folder / "data.db"),
            out=str(folder),
            seed=spec.seed,
            train=spec.n_structures - 2 * n_val,
            val=n_val,
            batch_size=spec.batch_size,
            lr=spec.lr,
            val_every=max(5, spec.max_steps // 30),
            patience=5,
            max_steps=spec.max_steps,
            max_minutes=spec.max_minutes,
            resume=(folder / "last.pt").is_file(),
            model=PhiSNetConfig(channels=spec.channels, n_interactions=spec.n_interactions),
        )
        train(config, progress=False, log=log)
    except Exception as exc:  # the job reports any failure in its status instead of dying silently
        _write_status(folder, "failed", f"{type(exc).__name__}: {exc}", pid=pid)
        raise
    _write_status(folder, "finished", "best.pt is ready", pid=pid)
    return 0


def _write_status(folder: Path, phase: str, message: str, pid: int | None = None) -> None:
    previous = _read_status(folder)
    now = time.time()
    data = {"phase": phase, "message": message, "pid": pid, "started": previous.get("started", now), "updated": now}
    write_text_atomic(folder / "status.json", json.dumps(data, indent=2))


def _read_status(folder: Path) -> dict:
    try:
        return json.loads((folder / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A finished child that nobody waited for is a zombie: alive for kill(0), dead for us.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _count_rows(path: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM systems").fetchone()[0])
    except sqlite3.Error:
        return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1]))
