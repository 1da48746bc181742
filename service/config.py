"""All settings, read once from environment variables (or a ``.env`` file)."""

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class Settings(BaseSettings):
    """Every knob of the service; each field is the upper-case environment variable of its name."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    grpc_port: int = Field(8001, ge=0, le=65535, description="KServe V2 gRPC port on HOST; 0 turns gRPC off")
    model_dir: Path = Path("var/models")
    session_store: str = Field("memory", description="'memory' or a redis:// URL")
    job_queue: str | None = Field(
        None, description="Unset: jobs run in this process. A redis:// URL: jobs go to `lstm-serve worker` processes"
    )
    job_heartbeat_timeout_s: float = Field(
        15.0, gt=0, description="A queued job's worker silent this long is taken for dead: the job fails (worker_lost)"
    )
    api_key: str | None = None
    api_key_all: bool = False
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_sequences_per_request: int = Field(10_000, ge=1)
    max_queued_jobs: int = Field(16, ge=1)
    max_epochs: int = Field(200, ge=1)
    max_train_seconds: float | None = Field(
        None, gt=0, description="Longest one model's fit may run; past it the job fails (training_time_exceeded)"
    )
    max_model_params: int = Field(5_000_000, ge=1, description="Largest model a job may build or an upload may hold")
    max_sequence_length: int = Field(
        10_000, ge=1, description="Longest sequence a model may take (params.max_len, training data, uploads)"
    )
    max_padded_values: int = Field(
        5_000_000, ge=1, description="Most values (sequences x max_len, after padding) one predict or training body may need"
    )
    max_upload_uncompressed_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Most bytes an uploaded .keras may unpack to (or its weights declare)"
    )
    max_upload_compression_ratio: float = Field(100.0, ge=1.0, description="Largest unpacked/packed ratio of an upload's member")
    limit_concurrency: int | None = Field(
        1024, ge=1, description="Most open connections or requests at once; past it uvicorn answers 503"
    )
    keep_alive_timeout_s: int = Field(5, ge=1, description="Idle seconds before a kept-alive connection is closed")
    header_read_timeout_s: float = Field(10.0, gt=0, description="Longest a client may take to send a request's head (408)")
    max_header_bytes: int = Field(64 * 1024, ge=1024, description="Largest request head (request line + headers; 431)")
    body_read_timeout_s: float = Field(30.0, gt=0, description="Longest a client may take to send a request's body (408)")
    max_sessions: int = Field(100_000, ge=1)
    session_ttl_s: int = Field(600, ge=1, description="Default idle time before a session expires")
    session_key_prefix: str = Field("lstm-serve:", description="Prefix of every Redis key the service writes")
    session_reap_interval_s: float = Field(5.0, gt=0)
    session_lock_ttl_s: float = Field(
        4.0, gt=0, le=5, description="Redis session lock lifetime (renewed while its step runs): the longest a "
        "killed or frozen replica keeps its sessions locked"
    )
    session_lock_wait_s: float = Field(
        5.0, gt=0, description="Longest a step waits for another step's lock on its session (then 409 session_busy)"
    )
    session_store_timeout_s: float = Field(
        0.8, gt=0, description="Deadline of each Redis call: connection wait, connect, send and reply (then 503). "
        "A request makes at most one call that can stall (the first that does ends it), so 0.8 s answers a "
        "stalled Redis within 2 s even after a slow lock"
    )
    stream_max_pending: int = Field(
        64, ge=1, le=10_000, description="Most unanswered messages per WebSocket stream; past it the server stops "
        "reading from that connection until it has answered (a client that stops reading cannot grow memory)"
    )
    batch_max_size: int = Field(256, ge=1, description="Most requests merged into one engine call")
    batch_timeout_us: int = Field(0, ge=0, description="Longest a request waits for others to join its batch")
    batch_threads: int = Field(1, ge=1, description="Threads running engine calls (these machines have 2 cores)")
    batch_inline_max_values: int = Field(
        1024, ge=0, description="A lone request, or a batch formed while none runs, with at most this many input "
        "values (a step: values x max_len) runs on the event loop, without the hand-off to a batch thread; 0: never"
    )
    telemetry: bool = Field(
        False, description="FastAPI's native OpenTelemetry spans and metrics per request (when an OpenTelemetry SDK "
        "is configured in this process); off by default: its check alone cost 10-15 us of every request (bench/)"
    )
    fast_path: bool = Field(True, description="Answer valid predict and step bodies without FastAPI's routing")
    max_loaded_versions: int = Field(
        8, ge=1, description="Most model versions kept loaded; past it the least recently used is unloaded "
        "(a session pinned to it loads it again on its next step)"
    )
    model_sync_interval_s: float = Field(
        0.5, gt=0, le=1.0, description="How often a replica checks MODEL_DIR/.generation for other replicas' "
        "new versions and deletes (at once on an unknown model or version): they are served within this bound"
    )
    demo_model: bool = Field(True, description="Train the 'demo' model at first start if the store is empty")
    log_level: str = "info"
    access_log: bool = Field(
        False, description="One log line per request (uvicorn's access log); off by default: it cost 15-31 % of "
        "req/s (bench/), and /metrics counts every request by route and status anyway"
    )
    workers: int = Field(
        1, ge=1, description="Uvicorn worker processes sharing the port; more than 1 needs SESSION_STORE=redis://"
    )

    @field_validator("session_store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if value != "memory" and not value.startswith(REDIS_SCHEMES):
            raise ValueError("SESSION_STORE must be 'memory' or a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("job_queue")
    @classmethod
    def _redis_queue(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(REDIS_SCHEMES):
            raise ValueError("JOB_QUEUE must be unset or a redis://, rediss:// or unix:// URL")
        return value

    @model_validator(mode="after")
    def _workers_share_sessions(self) -> "Settings":
        if self.workers > 1 and self.session_store == "memory":
            raise ValueError(
                f"WORKERS={self.workers} needs SESSION_STORE=redis://...: each worker process would keep its own "
                "in-memory sessions, and a session's next step can reach a worker that does not know it. "
                "Set SESSION_STORE to a Redis URL, or WORKERS=1."
            )
        return self


def get_settings() -> Settings:
    """A fresh ``Settings`` from the current environment."""
    return Settings()
