"""The service's job records in SQL: SQLite by default, PostgreSQL in production.

The table `jobs` (plus promotions, registered classifiers and served chat apps); `JobStore` is a plain, thread-safe object (one SQLAlchemy engine) that
the service keeps for its lifetime:

    store = JobStore("sqlite:////var/presafe/presafe.db")   # or postgresql+psycopg://user:pw@db/presafe
    row, created = store.create(JobRow(id="job-20261128-ab12cd34", owner="alice", name=None,
                                       idempotency_key="nightly-1", status="PENDING",
                                       config={...}, submission_id="raysubmit_...",
                                       job_dir="/mnt/presafe/jobs/job-20261128-ab12cd34"))
    if not created: ...            # the same (owner, key) was submitted before: `row` is that job
    store.update(row.id, status="RUNNING", started_at=datetime.now(UTC))
    rows, total = store.list(status="RUNNING", limit=50)
    store.close()

Timestamps go in as tz-aware datetimes and come back as tz-aware UTC on both backends.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.types import TypeDecorator

from jobs.errors import PresafeError
from service.schemas import JobStatus


class JobNotFound(PresafeError, LookupError):
    """No job with this id."""


@dataclass
class JobRow:
    id: str                     # primary key, made by the service (job_service.new_job_id)
    owner: str | None           # name of the token that created it
    name: str | None
    idempotency_key: str | None
    status: str                 # a JobStatus value
    config: dict                # the validated pipeline config
    submission_id: str          # Ray job submission id
    job_dir: str
    stage: str | None = None
    error: str | None = None
    summary: dict = field(default_factory=dict)  # snapshot: stages_done, progress, metrics, artifacts
    created_at: datetime | None = None  # set by the store on create (UTC)
    updated_at: datetime | None = None  # set by the store on create and every update
    started_at: datetime | None = None
    ended_at: datetime | None = None
    priority: int = 0           # the queue admits higher first, FIFO (created_at) within one
    request_sha256: str | None = None  # of the request body: the same idempotency key with another body is 409
    queue_reason: str | None = None    # why a QUEUED job waits (the scheduler's last word)
    launched_at: datetime | None = None  # when the scheduler handed it to Ray (the deadline counts from here)


@dataclass
class Promotion:
    model_id: str
    promoted_by: str
    promoted_at: datetime


@dataclass
class RegisteredModel:
    model_id: str
    path: str                   # the classifier folder, absolute, under paths.model_roots when registered
    owner: str | None           # the principal that registered it
    registered_at: datetime


@dataclass
class ServedRow:
    """A job's models deployed as a chat app (service.chat_serving): one per job."""

    job_id: str
    owner: str | None
    variant: str
    gate: str
    thinking: str
    status: str                 # service.schemas.ServeStatus
    models: list[str] = field(default_factory=list)
    error: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ModelTaken(PresafeError):
    """A model id already registered."""


class UTCDateTime(TypeDecorator):
    """Stores UTC; returns tz-aware UTC. SQLite has no time zones (it would drop tzinfo,
    or compare '+02:00' strings wrongly), so it gets naive UTC; PostgreSQL gets timestamptz."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Lengths only where the API bounds them (token name, JobCreate): PostgreSQL enforces them,
# SQLite does not, and a limit only one backend checks would be a surprise in production.
metadata = MetaData()
jobs = Table(
    "jobs",
    metadata,
    Column("id", String, primary_key=True),
    Column("owner", String(64)),
    Column("name", String(200)),
    Column("idempotency_key", String(200)),
    Column("status", String, nullable=False),
    Column("config", JSON, nullable=False),
    Column("submission_id", String, nullable=False),
    Column("job_dir", Text, nullable=False),
    Column("stage", String),
    Column("error", Text),
    Column("summary", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("ended_at", UTCDateTime),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("request_sha256", String(64)),
    Column("queue_reason", Text),
    Column("launched_at", UTCDateTime),
    # list() pages newest first, optionally by status; unfinished() filters by status.
    Index("ix_jobs_created_at", "created_at"),
    Index("ix_jobs_status_created_at", "status", "created_at"),
)
# One job per (owner, idempotency key). COALESCE: in a plain UNIQUE(owner, key) NULLs are
# all distinct, so with auth disabled (owner NULL) a repeated key would make a second job.
# A NULL key still never collides, on both backends.
Index("uq_jobs_owner_idempotency_key", func.coalesce(jobs.c.owner, ""), jobs.c.idempotency_key, unique=True)

# Who made a classifier the service's default, and when: the newest row is the default.
promotions = Table(
    "promotions",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("model_id", String, nullable=False),
    Column("promoted_by", String(64), nullable=False),
    Column("promoted_at", UTCDateTime, nullable=False),
)

# Classifiers registered over the API (POST /v1/models): servable without a redeploy.
registered_models = Table(
    "registered_models",
    metadata,
    Column("model_id", String(64), primary_key=True),
    Column("path", Text, nullable=False),
    Column("owner", String(64)),
    Column("registered_at", UTCDateTime, nullable=False),
)

# Jobs deployed as chat apps (POST /v1/jobs/{id}/serve); the serving limits count these rows.
served_models = Table(
    "served_models",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("owner", String(64)),
    Column("variant", String(100), nullable=False),
    Column("gate", String(16), nullable=False),
    Column("thinking", String(8), nullable=False),
    Column("status", String(16), nullable=False),
    Column("models", JSON, nullable=False),
    Column("error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

_MANAGED = {"id", "created_at", "updated_at"}   # set by the store, never by update()
_DATETIMES = {"created_at", "updated_at", "started_at", "ended_at", "launched_at"}
_ACTIVE = ("PENDING", "RUNNING")


def _now() -> datetime:
    return datetime.now(UTC)


def _check(values: dict[str, Any]) -> dict[str, Any]:
    """Validate column values before SQL sees them: a clear ValueError instead of a driver error
    (or, for a naive datetime, a silently wrong time)."""
    for key, value in values.items():
        column = jobs.c[key]
        if value is None:
            if not column.nullable:
                raise ValueError(f"job field {key!r} cannot be None")
        elif key == "status":
            values[key] = JobStatus(value).value   # ValueError for an unknown status
        elif key in _DATETIMES and (not isinstance(value, datetime) or value.tzinfo is None):
            raise ValueError(f"job field {key!r} must be a tz-aware datetime, got {value!r}")
    return values


def _row(mapping) -> JobRow:
    return JobRow(**mapping)


class JobStore:
    """Job records in SQL: sqlite:///file by default, any postgresql+psycopg:// URL in production."""

    def __init__(self, url: str):
        parsed = make_url(url)
        kwargs: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            # Serve calls us from several threads; `timeout` is SQLite's busy timeout: a writer
            # waits up to 30 s for another (thread, or the old service process) to commit.
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            # Drop pooled connections a database restart has closed, instead of failing a request.
            kwargs["pool_pre_ping"] = True
        self._engine = create_engine(parsed, **kwargs)
        if parsed.get_backend_name() == "sqlite":
            event.listen(self._engine, "connect", _sqlite_wal)
        metadata.create_all(self._engine)   # tables and indexes, only those missing
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """A database made by an older presafe lacks the queue's columns: add them (create_all
        adds only missing tables). Plain ADD COLUMN works on SQLite and PostgreSQL alike."""
        have = {c["name"] for c in inspect(self._engine).get_columns("jobs")}
        missing = [c for c in jobs.columns if c.name not in have]
        with self._engine.begin() as conn:
            for c in missing:
                kind = c.type.compile(dialect=self._engine.dialect)
                default = f" DEFAULT {c.server_default.arg}" if c.server_default is not None else ""
                null = "" if c.nullable else " NOT NULL"
                conn.execute(text(f'ALTER TABLE jobs ADD COLUMN "{c.name}" {kind}{default}{null}'))

    def create(self, row: JobRow) -> tuple[JobRow, bool]:
        """Insert `row`; when its (owner, idempotency_key) already exists, return (that job, False).

        Race-safe: two concurrent creates with one key both pass the look-up, the unique index
        lets one insert win, and the other reads the winner's row. A duplicate `id` without such
        a key raises IntegrityError (the caller's id generator is broken)."""
        if row.idempotency_key is not None:
            existing = self._by_key(row.owner, row.idempotency_key)
            if existing is not None:
                return existing, False
        now = _now()
        values = _check(asdict(row) | {"created_at": now, "updated_at": now})
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(jobs).values(**values))
        except IntegrityError:
            existing = self._by_key(row.owner, row.idempotency_key) if row.idempotency_key is not None else None
            if existing is None:
                raise
            return existing, False
        return JobRow(**values), True

    def get(self, job_id: str) -> JobRow | None:
        with self._engine.connect() as conn:
            found = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        return _row(found) if found else None

    def list(self, status: str | None = None, limit: int = 50, offset: int = 0,
             owner: str | None = None) -> tuple[list[JobRow], int]:
        """One page, newest first, and the number of jobs matching `status` (all when None)
        and `owner` (every owner's when None)."""
        if limit < 0 or offset < 0:
            raise ValueError(f"limit and offset must be >= 0, got limit={limit}, offset={offset}")
        where = [] if status is None else [jobs.c.status == JobStatus(status).value]
        if owner is not None:
            where.append(jobs.c.owner == owner)
        page = (select(jobs).where(*where)
                .order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit).offset(offset))
        with self._engine.connect() as conn:
            rows = [_row(m) for m in conn.execute(page).mappings()]
            total = conn.execute(select(func.count()).select_from(jobs).where(*where)).scalar_one()
        return rows, total

    def update(self, job_id: str, **fields: Any) -> JobRow:
        """Set `fields` (column names) and bump updated_at; returns the updated row."""
        unknown = sorted(set(fields) - set(jobs.c.keys()))
        managed = sorted(set(fields) & _MANAGED)
        if unknown or managed:
            raise ValueError(f"cannot update job field(s) {', '.join(unknown + managed)}: "
                             + ("not a job field" if unknown else "set by the store"))
        values = _check(dict(fields))
        with self._engine.begin() as conn:
            values["updated_at"] = _next_stamp(conn, job_id)
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))
            return _row(conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().one())

    def transition(self, job_id: str, from_status: tuple[str, ...], **fields: Any) -> JobRow | None:
        """update() only while the job's status is one of `from_status`; None when it was not
        (another thread or replica moved it first). What makes a queued job launch once."""
        values = _check(dict(fields))
        with self._engine.begin() as conn:
            values["updated_at"] = _next_stamp(conn, job_id)
            done = conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.status.in_(from_status))
                                .values(**values))
            if done.rowcount != 1:
                return None
            return _row(conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().one())

    def unfinished(self) -> list[JobRow]:
        """PENDING and RUNNING jobs, oldest first: what the service re-syncs with Ray on start-up."""
        query = select(jobs).where(jobs.c.status.in_(_ACTIVE)).order_by(jobs.c.created_at, jobs.c.id)
        with self._engine.connect() as conn:
            return [_row(m) for m in conn.execute(query).mappings()]

    def count_by_status(self) -> dict[str, int]:
        """Jobs per status, every owner's (the metrics' job gauges)."""
        query = select(jobs.c.status, func.count()).group_by(jobs.c.status)
        with self._engine.connect() as conn:
            return {status: n for status, n in conn.execute(query)}

    def queued(self) -> list[JobRow]:
        """QUEUED jobs in admission order: highest priority first, oldest first within one."""
        query = (select(jobs).where(jobs.c.status == JobStatus.QUEUED.value)
                 .order_by(jobs.c.priority.desc(), jobs.c.created_at, jobs.c.id))
        with self._engine.connect() as conn:
            return [_row(m) for m in conn.execute(query).mappings()]

    def owners(self, job_ids: list[str]) -> dict[str, str | None]:
        """job id -> owner, for the ids that are jobs."""
        if not job_ids:
            return {}
        with self._engine.connect() as conn:
            return dict(conn.execute(select(jobs.c.id, jobs.c.owner).where(jobs.c.id.in_(job_ids))).all())

    def promote(self, model_id: str, by: str) -> Promotion:
        row = Promotion(model_id=model_id, promoted_by=by, promoted_at=_now())
        with self._engine.begin() as conn:
            conn.execute(insert(promotions).values(**asdict(row)))
        return row

    def promotions(self) -> list[Promotion]:
        """Every promotion, newest first (the first is the service's default classifier)."""
        query = select(promotions).order_by(promotions.c.seq.desc())
        with self._engine.connect() as conn:
            return [Promotion(m["model_id"], m["promoted_by"], m["promoted_at"]) for m in conn.execute(query).mappings()]

    def register_model(self, model_id: str, path: str, owner: str | None) -> RegisteredModel:
        """Record a classifier folder under a new id; ModelTaken when the id is registered."""
        row = RegisteredModel(model_id=model_id, path=path, owner=owner, registered_at=_now())
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(registered_models).values(**asdict(row)))
        except IntegrityError:
            raise ModelTaken(f"model id {model_id!r} is already registered; choose another --name") from None
        return row

    def registered_models(self) -> list[RegisteredModel]:
        """Every registered classifier, newest first."""
        query = select(registered_models).order_by(registered_models.c.registered_at.desc())
        with self._engine.connect() as conn:
            return [RegisteredModel(**m) for m in conn.execute(query).mappings()]

    def add_served(self, row: ServedRow) -> ServedRow | None:
        """Insert a served-model record; None when the job has one already."""
        now = _now()
        values = asdict(row) | {"created_at": now, "updated_at": now}
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(served_models).values(**values))
        except IntegrityError:
            return None
        return ServedRow(**values)

    def update_served(self, job_id: str, **fields: Any) -> ServedRow | None:
        """Set `fields` of a job's served-model record; None when it has none (undeployed meanwhile)."""
        with self._engine.begin() as conn:
            done = conn.execute(update(served_models).where(served_models.c.job_id == job_id)
                                .values(**fields, updated_at=_now()))
            if done.rowcount != 1:
                return None
            return ServedRow(**conn.execute(select(served_models).where(served_models.c.job_id == job_id))
                             .mappings().one())

    def served(self, job_id: str | None = None) -> list[ServedRow]:
        """Every served-model record, oldest first (or the job's, when `job_id`)."""
        query = select(served_models).order_by(served_models.c.created_at, served_models.c.job_id)
        if job_id is not None:
            query = query.where(served_models.c.job_id == job_id)
        with self._engine.connect() as conn:
            return [ServedRow(**m) for m in conn.execute(query).mappings()]

    def remove_served(self, job_id: str) -> bool:
        with self._engine.begin() as conn:
            return conn.execute(served_models.delete().where(served_models.c.job_id == job_id)).rowcount == 1

    def close(self) -> None:
        self._engine.dispose()

    def by_key(self, owner: str | None, key: str) -> JobRow | None:
        """The job (owner, idempotency key) names, if any."""
        return self._by_key(owner, key)

    def _by_key(self, owner: str | None, key: str) -> JobRow | None:
        # The same expression as the unique index, so PostgreSQL can use it.
        query = select(jobs).where(func.coalesce(jobs.c.owner, "") == (owner or ""), jobs.c.idempotency_key == key)
        with self._engine.connect() as conn:
            found = conn.execute(query).mappings().first()
        return _row(found) if found else None


def _sqlite_wal(dbapi_conn, _record) -> None:
    # WAL: readers never block the writer and vice versa, so a restarted service can open the
    # file while the old process still has it. Persistent in the file; cheap to repeat.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()


def _next_stamp(conn, job_id: str):
    """The job's next updated_at, with its row locked: strictly increasing (clients compare
    it) even when two updates land in one clock tick or the clock steps back. FOR UPDATE
    queues concurrent updates of one job on PostgreSQL; SQLite ignores it (its writers are
    serialised anyway)."""
    prev = conn.execute(select(jobs.c.updated_at).where(jobs.c.id == job_id).with_for_update()).scalar()
    if prev is None:
        raise JobNotFound(f"no job {job_id!r}")
    return max(_now(), prev + timedelta(microseconds=1))
