"""phisnet.jobs: a real background job from generation to a trained checkpoint, and stopping one."""

import time

from phisnet.jobs import JobSpec, list_jobs, start, status, stop
from phisnet.predictor import load

TINY = dict(channels=4, n_interactions=1, batch_size=2)


def wait(folder, until, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = status(folder)
        if until(job):
            return job
        time.sleep(1)
    raise AssertionError(f"job still {status(folder).phase} after {timeout} s; log: {(folder / 'log.txt').read_text()}")


def test_job_generates_trains_and_finishes(tmp_path):
    folder = start(JobSpec(molecule="water", n_structures=6, max_steps=6, **TINY), root=tmp_path)
    assert status(folder).phase in ("queued", "generating")
    job = wait(folder, lambda j: not j.active)
    assert job.phase == "finished", job.message
    assert job.generated == 6 and job.step == 6 and job.best is not None
    assert load(job.best).metadata["elements"] == [1, 8]
    assert [j.name for j in list_jobs(tmp_path)] == [folder.name]


def test_stop_kills_the_job_and_keeps_its_folder(tmp_path):
    folder = start(JobSpec(molecule="water", n_structures=50, max_steps=1000, **TINY), root=tmp_path)
    wait(folder, lambda j: j.phase == "generating", timeout=60)
    stop(folder)
    job = status(folder)
    assert job.phase == "stopped" and not job.active
    time.sleep(1)
    assert status(folder).phase == "stopped"
    assert (folder / "job.json").is_file()


def test_a_failing_job_says_why(tmp_path):
    folder = start(JobSpec(molecule="[Xe]", n_structures=4, **TINY), root=tmp_path)
    job = wait(folder, lambda j: not j.active, timeout=60)
    assert job.phase == "failed" and "Xe is a single atom" in job.message
