"""service.store.JobStore on SQLite and on a real PostgreSQL.

PostgreSQL runs when PRESAFE_TEST_POSTGRES_URL is set (`eval "$(.ci/postgres.sh)"` starts a
local server and prints it); each test gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import IntegrityError

from jobs.errors import PresafeError
from service.store import JobNotFound, JobRow, JobStore, jobs

PG_ENV = "PRESAFE_TEST_POSTGRES_URL"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'presafe.db'}"   # state/: the store makes it
        return
    base = os.environ.get(PG_ENV)
    if not base:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{PG_ENV} is unset under CI=true: .ci/run must start PostgreSQL (.ci/postgres.sh)")
        pytest.skip(f"PostgreSQL tests need {PG_ENV}=postgresql+psycopg://...; "
                    f'`eval "$(.ci/postgres.sh)"` starts a local server and sets it')
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    # The store sees only this schema: a clean `jobs` table per test, through the URL alone.
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def open_store(db_url):
    """open_store() -> a JobStore on this test's database; all are closed at the end."""
    opened: list[JobStore] = []

    def make() -> JobStore:
        opened.append(JobStore(db_url))
        return opened[-1]

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(open_store) -> JobStore:
    return open_store()


def job(id: str, *, owner: str | None = "alice", key: str | None = None, status: str = "PENDING", **kw) -> JobRow:
    return JobRow(id=id, owner=owner, name=kw.pop("name", None), idempotency_key=key, status=status,
                  config=kw.pop("config", {"stages": ["decide"]}), submission_id=f"raysubmit_{id}",
                  job_dir=f"/mnt/presafe/jobs/{id}", **kw)


def test_jobrow_matches_table():
    assert [f.name for f in fields(JobRow)] == list(jobs.c.keys())


def test_create_get_roundtrip(store):
    config = {"model": "demo", "lr": 1e-4, "steps": 3, "ok": True, "none": None,
              "stages": ["decide", "signals"], "nested": {"é": "ünïcode ✓", "list": [1, 2.5, "x"]}}
    summary = {"stages_done": ["decide"], "metrics": {"decide": {"refuse_rate": 0.25}}}
    before = datetime.now(UTC)
    stale = datetime(2000, 1, 1, tzinfo=UTC)
    row, created = store.create(job("job-1", name="first", key="k1", config=config, summary=summary,
                                    created_at=stale, updated_at=stale))
    after = datetime.now(UTC)

    assert created
    assert before <= row.created_at <= after   # set by the store, the caller's value ignored
    assert row.updated_at == row.created_at
    got = store.get("job-1")
    assert got == row
    assert got.config == config and got.summary == summary
    for ts in (got.created_at, got.updated_at):
        assert ts.tzinfo is not None and ts.utcoffset() == timedelta(0)
    assert got.started_at is None and got.ended_at is None
    assert store.get("job-nope") is None


def test_timestamps_in_other_zones_come_back_as_the_same_instant_in_utc(store):
    store.create(job("job-1"))
    started = datetime(2026, 11, 28, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=-5)))
    got = store.update("job-1", started_at=started)
    assert got.started_at == started
    assert got.started_at.tzinfo == UTC and got.started_at.hour == 14
    assert store.get("job-1").started_at == started
    with pytest.raises(ValueError, match="tz-aware"):
        store.update("job-1", ended_at=datetime(2026, 11, 28, 10, 0))


def test_idempotency_same_owner_and_key_returns_the_first_job(store):
    first, created = store.create(job("job-1", key="nightly"))
    again, created_again = store.create(job("job-2", key="nightly", name="retry"))
    assert created and not created_again
    assert again == first
    assert store.get("job-2") is None
    assert store.list()[1] == 1


def test_idempotency_is_per_owner_and_null_keys_never_collide(store):
    assert store.create(job("job-a", owner="alice", key="k"))[1]
    assert store.create(job("job-b", owner="bob", key="k"))[1]      # other owner, same key: new job
    assert store.create(job("job-c", owner="alice", key=None))[1]
    assert store.create(job("job-d", owner="alice", key=None))[1]   # no key: always a new job
    assert store.create(job("job-e", owner=None, key=None))[1]
    assert store.create(job("job-f", owner=None, key=None))[1]
    assert store.list()[1] == 6


def test_idempotency_without_owner(store):
    """Auth disabled: owner None. The key must still dedupe (a plain UNIQUE would not: NULLs differ)."""
    store.create(job("job-1", owner=None, key="k"))
    again, created = store.create(job("job-2", owner=None, key="k"))
    assert not created and again.id == "job-1"
    assert store.create(job("job-3", owner="alice", key="k"))[1]


def test_duplicate_id_is_an_error(store):
    store.create(job("job-1"))
    with pytest.raises(IntegrityError):
        store.create(job("job-1"))


@pytest.mark.parametrize("owner", ["alice", None])
def test_concurrent_creates_with_one_key_make_one_job(open_store, owner):
    """Eight requests at once, through two stores (two service processes): one job. With no
    owner too: then only the unique index's COALESCE stops the race."""
    stores = [open_store(), open_store()]
    n = 8
    barrier = threading.Barrier(n)

    def submit(i: int) -> tuple[JobRow, bool]:
        barrier.wait(30)
        return stores[i % 2].create(job(f"job-{i}", owner=owner, key="same"))

    with ThreadPoolExecutor(n) as pool:   # map re-raises a thread's exception here
        results = list(pool.map(submit, range(n)))
    assert len(results) == n
    assert sum(created for _, created in results) == 1
    assert len({row.id for row, _ in results}) == 1
    assert stores[0].list()[1] == 1


def test_list_filters_pages_and_orders_newest_first(store):
    # ids run against creation order, so an order by id alone would fail this test
    statuses = ["PENDING", "RUNNING", "SUCCEEDED", "RUNNING", "FAILED", "RUNNING", "CANCELLED"]
    ids = [f"job-{9 - i}" for i in range(len(statuses))]   # job-9 first ... job-3 last
    for id_, status in zip(ids, statuses, strict=True):
        store.create(job(id_, status=status))
    newest_first = ids[::-1]

    rows, total = store.list()
    assert total == 7 and [r.id for r in rows] == newest_first
    assert [r.created_at for r in rows] == sorted((r.created_at for r in rows), reverse=True)

    page1, total = store.list(limit=3)
    page2, _ = store.list(limit=3, offset=3)
    page3, _ = store.list(limit=3, offset=6)
    assert total == 7
    assert [r.id for r in page1 + page2 + page3] == newest_first
    assert len(page3) == 1
    assert store.list(offset=50) == ([], 7)

    running, total = store.list(status="RUNNING")
    assert total == 3 and [r.id for r in running] == ["job-4", "job-6", "job-8"]
    one, total = store.list(status="RUNNING", limit=1, offset=1)
    assert total == 3 and [r.id for r in one] == ["job-6"]
    assert store.list(status="SUCCEEDED")[1] == 1
    with pytest.raises(ValueError):
        store.list(status="DONE")
    with pytest.raises(ValueError):
        store.list(limit=-1)


def test_update(store):
    row, _ = store.create(job("job-1"))
    started = datetime.now(UTC)
    summary = {"stages_done": ["decide"], "progress": {"stage": "signals", "done": 3, "total": 10}}
    got = store.update("job-1", status="RUNNING", stage="signals", started_at=started, summary=summary)
    assert got.status == "RUNNING" and got.stage == "signals" and got.summary == summary
    assert got.started_at == started
    assert got.created_at == row.created_at
    assert got.updated_at > row.updated_at
    assert store.get("job-1") == got

    # every update bumps updated_at, however fast they come
    stamps = [store.update("job-1", stage=f"s{i}").updated_at for i in range(5)]
    assert stamps == sorted(stamps) and len(set(stamps)) == 5 and stamps[0] > got.updated_at

    done = store.update("job-1", status="FAILED", error="out of memory", ended_at=datetime.now(UTC))
    assert (done.status, done.error, done.stage) == ("FAILED", "out of memory", "s4")


def test_updated_at_increases_even_when_the_clock_does_not(store, monkeypatch):
    import service.store

    frozen = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    monkeypatch.setattr(service.store, "_now", lambda: frozen)
    row, _ = store.create(job("job-1"))
    a = store.update("job-1", stage="a").updated_at
    monkeypatch.setattr(service.store, "_now", lambda: frozen - timedelta(hours=1))   # clock stepped back
    b = store.update("job-1", stage="b").updated_at
    assert row.updated_at < a < b


def test_update_rejects_bad_fields_and_missing_jobs(store):
    row, _ = store.create(job("job-1"))
    with pytest.raises(ValueError, match="colour"):
        store.update("job-1", colour="red")
    for managed in ("id", "created_at", "updated_at"):
        with pytest.raises(ValueError, match=managed):
            store.update("job-1", **{managed: "x"})
    with pytest.raises(ValueError):
        store.update("job-1", status="DONE")
    with pytest.raises(ValueError, match="config"):
        store.update("job-1", config=None)
    assert store.get("job-1") == row   # nothing changed

    with pytest.raises(JobNotFound, match="job-nope") as info:
        store.update("job-nope", status="RUNNING")
    assert isinstance(info.value, LookupError) and isinstance(info.value, PresafeError)


def test_unfinished(store):
    for i, status in enumerate(["PENDING", "SUCCEEDED", "RUNNING", "FAILED", "CANCELLED", "PENDING"]):
        store.create(job(f"job-{i}", status=status))
    store.update("job-5", status="RUNNING")
    store.update("job-2", status="SUCCEEDED")
    assert [r.id for r in store.unfinished()] == ["job-0", "job-5"]


def test_records_survive_a_restart(open_store):
    first = open_store()
    first.create(job("job-1", key="k", config={"a": [1, 2]}))
    updated = first.update("job-1", status="RUNNING", started_at=datetime.now(UTC))
    first.close()

    second = open_store()   # tables exist now: create_all must leave them be
    assert second.get("job-1") == updated
    assert second.unfinished() == [updated]
    again, was_created = second.create(job("job-2", key="k"))
    assert not was_created and again == updated
    assert second.list() == ([updated], 1)


def test_sqlite_file_uses_wal_and_is_shared(tmp_path):
    path = tmp_path / "a" / "b" / "presafe.db"
    a, b = JobStore(f"sqlite:///{path}"), JobStore(f"sqlite:///{path}")
    try:
        a.create(job("job-1"))
        assert b.get("job-1") is not None
        b.update("job-1", status="RUNNING")
        assert a.get("job-1").status == "RUNNING"
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        a.close()
        b.close()


def test_queue_order_transition_owners_and_promotions(store, open_store):
    for i, prio in enumerate([0, 5, 0, 5]):
        store.create(job(f"q{i}", status="QUEUED", priority=prio, owner="alice" if i % 2 else "bob"))
    store.create(job("r1", status="RUNNING"))
    assert [r.id for r in store.queued()] == ["q1", "q3", "q0", "q2"]  # priority, then FIFO
    assert [r.id for r in store.unfinished()] == ["r1"]
    rows, total = store.list(owner="alice")
    assert total == 3 and {r.id for r in rows} == {"q1", "q3", "r1"}
    # a conditional update: one of two stores claims a queued job, the other gets None
    other = open_store()
    now = datetime.now(UTC)
    won = store.transition("q1", ("QUEUED",), status="PENDING", launched_at=now)
    assert won is not None and won.status == "PENDING" and abs(won.launched_at - now) < timedelta(milliseconds=1)
    assert other.transition("q1", ("QUEUED",), status="PENDING") is None
    with pytest.raises(JobNotFound):
        store.transition("nope", ("QUEUED",), status="PENDING")
    assert store.owners(["q0", "q1", "zz"]) == {"q0": "bob", "q1": "alice"} and store.owners([]) == {}
    store.promote("q1", "root")
    other.promote("q3", "admin")
    assert [(p.model_id, p.promoted_by) for p in store.promotions()] == [("q3", "admin"), ("q1", "root")]
    assert all(p.promoted_at.tzinfo is not None for p in store.promotions())


def test_an_older_table_gets_the_new_columns(db_url):
    if db_url.startswith("sqlite"):
        from pathlib import Path

        Path(make_url(db_url).database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE jobs (id VARCHAR PRIMARY KEY, owner VARCHAR(64), name VARCHAR(200), "
                          "idempotency_key VARCHAR(200), status VARCHAR NOT NULL, config JSON NOT NULL, "
                          "submission_id VARCHAR NOT NULL, job_dir TEXT NOT NULL, stage VARCHAR, error TEXT, "
                          "summary JSON NOT NULL, created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL, "
                          "started_at TIMESTAMP, ended_at TIMESTAMP)"))
        conn.execute(text("INSERT INTO jobs VALUES ('old', 'a', NULL, NULL, 'SUCCEEDED', '{}', 's', '/x', NULL, "
                          "NULL, '{}', '2026-01-01 00:00:00', '2026-01-01 00:00:00', NULL, NULL)"))
    engine.dispose()
    store = JobStore(db_url)
    try:
        old = store.get("old")
        assert old.priority == 0 and old.queue_reason is None and old.launched_at is None
        store.create(job("new", status="QUEUED", priority=3))
        assert [r.id for r in store.queued()] == ["new"]
    finally:
        store.close()
