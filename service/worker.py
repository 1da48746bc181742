"""``lstm-serve worker``: run training and comparison jobs from the Redis queue (``JOB_QUEUE``).

Configured exactly like the service (the same environment, ``MODEL_DIR`` on the same shared volume): it
takes one job at a time from the queue, plans it from its request with this process's settings, writes
the new version into ``MODEL_DIR`` and the job's progress into Redis, where every API replica reads it.
SIGTERM stops the running job at its next training batch (the job fails with ``interrupted``) and exits;
a worker killed outright leaves its job to be failed with ``worker_lost`` once its heartbeat expires.
"""

import functools
import logging
import os
import socket
import sys

import redis
from rq import Queue, SimpleWorker

from models.serving.model_index import ModelIndex
from models.training.redis_jobs import QueuedJobRunner, RedisJobRecords, queue_name
from service.config import get_settings
from service.job_plans import plan_job

log = logging.getLogger(__name__)


@functools.cache
def _runner() -> QueuedJobRunner:
    """This worker process's runner, built once from the environment.

    rq calls ``run_job`` by its import path with nothing but the job id, so the process-wide runner
    (settings, model index, Redis client) is reached here rather than handed in.
    """
    settings = get_settings()
    assert settings.job_queue is not None, "checked by main()"
    # Not opened (no sweep of leftovers, which the replicas do): a worker only adds versions, numbered from
    # what is on disk at that moment, and loads none.
    index = ModelIndex(settings.model_dir, settings.model_sync_interval_s)
    index.root.mkdir(parents=True, exist_ok=True)
    records = RedisJobRecords(
        redis.Redis.from_url(settings.job_queue), settings.session_key_prefix, settings.job_heartbeat_timeout_s
    )
    planner = functools.partial(plan_job, index=index, settings=settings)
    return QueuedJobRunner(records, planner, settings.model_dir / ".jobs")


def run_job(job_id: str) -> None:
    """The task API replicas queue: run one job in this worker process."""
    _runner().run(job_id)


class TrainingWorker(SimpleWorker):
    """rq's worker that runs each job in its own process rather than a fork per job: TensorFlow is
    imported once, and a fork of a process whose TensorFlow has run is not safe. On SIGTERM it also stops
    the running job at its next batch instead of waiting for a training that may take minutes."""

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()
        _runner().interrupt()


def main() -> int:
    """Serve the queue until SIGTERM or Ctrl-C; 2 when no queue is configured."""
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.job_queue is None:
        print("lstm-serve worker: set JOB_QUEUE to the Redis URL the API replicas use (e.g. redis://redis:6379/0)",
              file=sys.stderr)
        return 2
    runner = _runner()
    connection = runner.records.redis
    worker = TrainingWorker(
        [Queue(queue_name(settings.session_key_prefix), connection=connection)],
        connection=connection,
        name=f"lstm-serve-{socket.gethostname()}-{os.getpid()}",
    )
    log.info("Worker %s serving %s (models in %s)", worker.name, queue_name(settings.session_key_prefix),
             settings.model_dir)
    worker.work(logging_level=settings.log_level.upper())
    return 0
