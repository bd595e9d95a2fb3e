"""Where the PySCF calculations of ``phisnet generate`` run: in this process, a process pool, or Dask."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import multiprocessing
import os

import ase
import ase.db
import numpy as np

from phisnet.errors import InputError, check_stop

# ----------------------------------------------------------------------------- where the calculations run


@functools.cache
def _guess_predictor(path: str):
    from phisnet.predictor import load

    return load(path, threads=1)  # a prediction is a small part of an SCF; PySCF has the threads


def _compute(symbols: list[str], positions: np.ndarray, level: dict, threads: int):
    """Worker: one reference calculation; returns plain arrays so it pickles cheaply.

    With ``level["guess_model"]`` the SCF starts from that model's predicted density: the same converged
    answer (to the tolerance) in fewer iterations. The fallback below starts from PySCF's guess.
    """
    from pyscf import lib

    from phisnet.reference import run_dft

    lib.num_threads(threads)
    level = dict(level)
    guess_model = level.pop("guess_model", None)
    atoms = ase.Atoms(symbols, positions=positions)
    dm0 = None
    if guess_model:
        from phisnet.observables import predict_wavefunction  # torch and the model only when a guess is asked for

        try:
            wavefunction = predict_wavefunction(_guess_predictor(guess_model), atoms, charge=level["charge"])
            dm0 = wavefunction.orbitals.density_matrix
        except InputError:  # e.g. no HOMO-LUMO gap in the predicted H: this structure starts from PySCF's guess
            dm0 = None
    if dm0 is not None:
        ref = run_dft(atoms, dm0=dm0, **level)
        ref.guess = "model"
    else:
        ref = run_dft(atoms, **level)
    if not ref.converged:
        # One more try with PySCF's second-order (Newton) solver before giving up on this structure.
        ref = run_dft(atoms, second_order=True, **level)
    return ref


class Pool:
    """Runs reference calculations here, in local processes, or on a Dask distributed cluster.

    ``scheduler`` None: ``workers`` local processes (inline when 1). ``"local"``: a Dask
    ``LocalCluster`` of ``workers`` single-threaded worker processes on this machine. Anything
    else: the address of a running Dask scheduler (``tcp://host:8786``), whose workers need the
    same phisnet installation. Whatever runs the calculations, only this process writes the
    database, one transaction per structure, so a run killed at any moment resumes cleanly.
    ``threads``: PySCF threads per calculation (default: the cores divided among the local
    workers; 1 on a Dask cluster, whose workers should be started with ``--nthreads 1``).
    """

    def __init__(self, workers: int = 1, scheduler: str | None = None, threads: int | None = None, log=print):
        if workers < 1:
            raise InputError(f"--workers must be at least 1, got {workers}.")
        self.workers, self.scheduler, self.log = workers, scheduler, log
        if threads is None:
            threads = max(1, (os.cpu_count() or 1) // workers) if scheduler is None else 1
        self.threads = threads

    def run(self, next_task, record) -> None:
        """Until ``next_task()`` returns None: compute each ``(key, args)`` and ``record(key, args, result)``.

        ``next_task`` is asked again whenever a slot frees, so it can replace a structure whose
        SCF failed; at most as many calculations are in flight as the pool has workers.
        """
        if self.scheduler is None and self.workers == 1:
            while True:
                check_stop()
                task = next_task()
                if task is None:
                    return
                key, args = task
                record(key, args, _compute(*args, self.threads))
        with self._executor() as (executor, capacity):
            pending: dict[cf.Future, tuple] = {}

            def fill():
                while len(pending) < capacity():
                    task = next_task()
                    if task is None:
                        return
                    key, args = task
                    pending[executor.submit(_compute, *args, self.threads)] = (key, args)

            fill()
            while pending:
                finished, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                check_stop()
                for future in finished:
                    key, args = pending.pop(future)
                    try:
                        result = future.result()
                    except Exception as exc:  # noqa: BLE001 - a worker process died or PySCF raised
                        raise InputError(
                            f"The calculation of structure {key} failed ({type(exc).__name__}: {str(exc)[:300]}). "
                            "Every structure finished before it is saved; run the same command to resume."
                        ) from exc
                    record(key, args, result)
                fill()

    @contextlib.contextmanager
    def _executor(self):
        if self.scheduler is None:
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx) as pool:
                yield pool, lambda: self.workers
            return
        try:
            from distributed import Client, LocalCluster
        except ImportError:  # pragma: no cover - distributed is a declared dependency
            raise InputError("--scheduler needs the 'distributed' package (pip install distributed).") from None
        with contextlib.ExitStack() as stack:
            if self.scheduler == "local":
                cluster = stack.enter_context(
                    LocalCluster(
                        n_workers=self.workers,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=None,
                        host="127.0.0.1",
                    )
                )
                client = stack.enter_context(Client(cluster))
                self.log(f"Dask LocalCluster with {self.workers} workers at {cluster.scheduler_address}.")
            else:
                try:
                    client = stack.enter_context(Client(self.scheduler, timeout=30))
                except OSError as exc:
                    raise InputError(f"Could not reach the Dask scheduler at {self.scheduler} ({exc}).") from None
                n = sum(client.nthreads().values())
                self.log(f"Dask scheduler {self.scheduler}: {len(client.nthreads())} workers, {n} threads.")

            def capacity() -> int:  # workers may join or leave while the run goes on
                return max(1, sum(client.nthreads().values()))

            yield client.get_executor(pure=False), capacity
