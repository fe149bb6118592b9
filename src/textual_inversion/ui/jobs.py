"""Training jobs for the web page: a first-in-first-out queue and one worker thread.

The jobs belong to the server, not to a browser tab: closing or refreshing the page changes nothing,
and a page opened later shows the same job. One training runs at a time, because one run already
takes the whole GPU (or every CPU core); the others wait their turn.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from ..config import TrainConfig
from ..errors import UserError
from ..rundir import check_output_dir, read_loss_file
from ..training import TrainResult, train

logger = logging.getLogger(__name__)

QUEUED, RUNNING, STOPPING = "queued", "running", "stopping"
FINISHED, STOPPED, FAILED, CANCELLED = "finished", "stopped", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING, STOPPING)


@dataclass
class TrainingJob:
    """One requested run and what is known about it so far."""

    id: int
    config: TrainConfig
    state: str = QUEUED
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss), earlier runs' steps included
    error: str | None = None
    result: TrainResult | None = None
    stop_requested: threading.Event = field(default_factory=threading.Event)
    first_report: tuple[float, int] | None = None  # (time, step) of the first step of this session, for the ETA

    @property
    def output_dir(self) -> Path:
        return self.config.resolved_output_dir()

    @property
    def step(self) -> int:
        return self.losses[-1][0] if self.losses else 0

    def report(self, step: int, loss: float) -> None:
        """Called by the training loop after every step (in the worker thread)."""
        if self.first_report is None:
            self.first_report = (time.monotonic(), step)
        self.losses.append((step, loss))

    def eta_seconds(self) -> float | None:
        """Seconds left at the pace since the first step (model loading excluded); None until known."""
        if self.state != RUNNING or self.first_report is None or self.step <= self.first_report[1]:
            return None
        started, first_step = self.first_report
        per_step = (time.monotonic() - started) / (self.step - first_step)
        return per_step * (self.config.steps - self.step)


class TrainingJobs:
    """The server's training queue: `submit` adds a job, one worker thread runs them in order."""

    def __init__(self):
        self._lock = threading.Condition()
        self._queue: deque[TrainingJob] = deque()
        self._jobs: list[TrainingJob] = []
        self._worker: threading.Thread | None = None
        self._closing = False

    def submit(self, config: TrainConfig) -> TrainingJob:
        """Check `config` as `train` would, then queue it; a resumed run starts with its earlier losses."""
        config.validate()
        check_output_dir(config)
        with self._lock:
            self.check_folder_is_free(config.resolved_output_dir())
            job = TrainingJob(len(self._jobs) + 1, config)
            if config.resume:
                job.losses = [(step, loss) for step, loss, _ in read_loss_file(job.output_dir)]
            self._jobs.append(job)
            self._queue.append(job)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="training-jobs", daemon=True)
                self._worker.start()
            self._lock.notify()
        logger.info("job %d (%s) queued", job.id, config.token)
        return job

    def check_folder_is_free(self, folder: Path) -> None:
        """Refuse to touch a run folder that a queued or running job writes into."""
        with self._lock:
            for job in self._jobs:
                if job.state in ACTIVE and job.output_dir.resolve() == Path(folder).resolve():
                    raise UserError(f"{folder}: job {job.id} ({job.state}) writes there; wait for it, stop it, "
                                    "or choose another token")

    def resume(self, job: TrainingJob) -> TrainingJob:
        """Queue the continuation of a stopped job from its checkpoint."""
        return self.submit(dataclasses.replace(job.config, resume=True, overwrite=False))

    def stop(self, job: TrainingJob) -> None:
        """A queued job is dropped; a running one stops after its current step, saving a checkpoint."""
        with self._lock:
            if job.state == QUEUED:
                self._queue.remove(job)
                job.state = CANCELLED
            elif job.state == RUNNING:
                job.state = STOPPING
                job.stop_requested.set()

    def position(self, job: TrainingJob) -> int | None:
        """1 for the next job to run, 2 for the one after it; None if `job` is not waiting."""
        with self._lock:
            return self._queue.index(job) + 1 if job in self._queue else None

    def get(self, job_id: int | None) -> TrainingJob | None:
        with self._lock:
            return next((job for job in self._jobs if job.id == job_id), None)

    def all(self) -> list[TrainingJob]:
        with self._lock:
            return list(self._jobs)

    def running(self) -> TrainingJob | None:
        with self._lock:
            return next((job for job in self._jobs if job.state in (RUNNING, STOPPING)), None)

    def latest(self) -> TrainingJob | None:
        """The job a freshly opened page shows: the running one, else the next queued, else the last one."""
        with self._lock:
            running = self.running()
            if running is not None:
                return running
            if self._queue:
                return self._queue[0]
            return self._jobs[-1] if self._jobs else None

    def close(self, timeout: float | None = None) -> None:
        """Drop the queue, stop the running job (it saves a checkpoint) and wait for the worker."""
        with self._lock:
            self._closing = True
            for job in self._jobs:
                self.stop(job)
            self._lock.notify_all()
            worker = self._worker
        if worker is not None:
            worker.join(timeout)

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._lock.wait()
                if self._closing:
                    return
                job = self._queue.popleft()
                job.state = RUNNING
            self._run(job)

    def _run(self, job: TrainingJob) -> None:
        logger.info("job %d (%s) started", job.id, job.config.token)
        result, error = None, None
        try:
            result = train(job.config, stop=job.stop_requested, on_step=job.report)
        except UserError as user_error:
            error = str(user_error)
        except Exception as bug:  # the worker must live on for the jobs behind this one
            logger.exception("job %d failed", job.id)
            error = f"{type(bug).__name__}: {bug}"
        with self._lock:
            job.result, job.error = result, error
            job.state = FAILED if error else STOPPED if result.stopped else FINISHED
        logger.info("job %d (%s) %s", job.id, job.config.token, job.state)
