"""The predictions lookup store: upsert by (id, model version), read by id, retention.

Runs against SQLite always, and against a throwaway PostgreSQL cluster (initdb + pg_ctl in a
temporary folder, on a Unix socket) where the PostgreSQL binaries are installed.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from components.errors import DataError
from components.scoring.lookup import LookupStore

UTC = dt.UTC
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)
PG_BIN = next(
    (d for d in ("/usr/local/bin", "/usr/lib/postgresql/16/bin") if os.path.exists(f"{d}/initdb")),
    None,
) or (os.path.dirname(shutil.which("initdb")) if shutil.which("initdb") else None)


def _batch(ids: list[str], scores: list[float], version: str, run_id: str) -> pa.RecordBatch:
    n = len(ids)
    label = pa.array(["1" if s >= 0.5 else "0" for s in scores]).dictionary_encode()
    return pa.record_batch(
        {
            "id": pa.array(ids),
            "score": pa.array(scores, pa.float32()),
            "label": label,
            "model_version": pa.array([version] * n).dictionary_encode(),
            "run_id": pa.array([run_id] * n).dictionary_encode(),
            "scored_at": pa.array([T0] * n, pa.timestamp("ms", tz="UTC")),
        }
    )


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster listening on a Unix socket only.

    PostgreSQL refuses to run as root: as root, the cluster belongs to the ``postgres``
    user (or ``nobody``) and lives in a folder that user owns.
    """
    if PG_BIN is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="kfbatch-pg-"))
    if os.geteuid() == 0:
        user = next((u for u in ("postgres", "nobody") if _uid(u) is not None), None)
        if user is None or shutil.which("runuser") is None:
            pytest.skip("running as root without a postgres/nobody user and runuser")
        os.chmod(root, 0o755)
        os.chown(root, _uid(user), -1)
        as_user = ["runuser", "-u", user, "--"]
    data, socket = root / "data", root / "sock"
    run = {"check": True, "capture_output": True}
    subprocess.run([*as_user, "mkdir", str(socket)], **run)
    subprocess.run(
        [*as_user, f"{PG_BIN}/initdb", "-D", str(data), "-U", "kfbatch", "-A", "trust"], **run
    )
    options = f"-k {socket} -c listen_addresses='' -F"
    pg_ctl = [*as_user, f"{PG_BIN}/pg_ctl", "-D", str(data)]
    subprocess.run([*pg_ctl, "-o", options, "-l", str(root / "log"), "-w", "start"], **run)
    try:
        yield f"postgresql+psycopg://kfbatch@/postgres?host={socket}"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], **run)
        shutil.rmtree(root, ignore_errors=True)


def _uid(user: str) -> int | None:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LookupStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/nested/predictions.db"
    else:
        url = request.getfixturevalue("postgres_url")
    lookup = LookupStore(url)
    yield lookup
    if request.param == "postgresql":  # one cluster for the module: empty it between tests
        with lookup.engine.begin() as connection:
            connection.exec_driver_sql("DELETE FROM predictions; DELETE FROM prediction_versions")
    lookup.close()


def test_upsert_then_read_by_id(store: LookupStore) -> None:
    rows = store.upsert(
        [_batch(["a", "b"], [0.25, 0.75], "v1", "run-1"), _batch(["c"], [0.5], "v1", "run-1")],
        model_version="v1",
        run_id="run-1",
        published_at=T0,
    )
    assert rows == 3
    (got,) = store.get("b")
    assert (got["id"], got["model_version"], got["label"], got["run_id"]) == (
        "b",
        "v1",
        "1",
        "run-1",
    )
    assert got["score"] == pytest.approx(0.75)
    assert got["probabilities"] is None
    assert store.get("zzz") == []


def test_multiclass_and_regression_rows_round_trip(store: LookupStore) -> None:
    n = 3
    common = {
        "model_version": pa.array(["v1"] * n).dictionary_encode(),
        "run_id": pa.array(["run-1"] * n).dictionary_encode(),
        "scored_at": pa.array([T0, T0, T0 + dt.timedelta(hours=1)], pa.timestamp("ms", tz="UTC")),
    }
    probabilities = [[0.5, 0.25, 0.25], [0.125, 0.75, 0.125], [0.25, 0.25, 0.5]]
    multiclass = pa.record_batch(
        {
            "id": pa.array([7, 8, 9]),  # integer ids are stored as text
            "score": pa.array([0.5, 0.75, 0.5], pa.float32()),
            "probabilities": pa.array(probabilities, pa.list_(pa.float32(), 3)),
            "label": pa.array(["ant", "bee", None]).dictionary_encode(),
            **common,
        }
    )
    store.upsert([multiclass], model_version="v1", run_id="run-1", published_at=T0)
    (bee,) = store.get("8")
    assert (bee["label"], bee["probabilities"]) == ("bee", [0.125, 0.75, 0.125])
    (last,) = store.get("9")
    assert last["label"] is None
    scored_at = last["scored_at"]
    if scored_at.tzinfo is not None:  # PostgreSQL keeps the zone, SQLite the UTC wall time
        scored_at = scored_at.astimezone(UTC).replace(tzinfo=None)
    assert scored_at == (T0 + dt.timedelta(hours=1)).replace(tzinfo=None)


def test_upsert_updates_in_place_and_keeps_versions_apart(store: LookupStore) -> None:
    store.upsert(
        [_batch(["a"], [0.25], "v1", "run-1")], model_version="v1", run_id="run-1", published_at=T0
    )
    # The same version loaded again (a re-run) updates the row instead of adding one.
    store.upsert(
        [_batch(["a"], [0.5], "v1", "run-2")], model_version="v1", run_id="run-2", published_at=T0
    )
    later = T0 + dt.timedelta(days=1)
    store.upsert(
        [_batch(["a"], [0.9], "v2", "run-3")],
        model_version="v2",
        run_id="run-3",
        published_at=later,
    )
    rows = store.get("a")
    assert [(r["model_version"], r["run_id"]) for r in rows] == [("v2", "run-3"), ("v1", "run-2")]
    assert [r["score"] for r in rows] == pytest.approx([0.9, 0.5])
    assert [r["model_version"] for r in store.get("a", model_version="v1")] == ["v1"]
    assert [v["model_version"] for v in store.versions()] == ["v2", "v1"]


def test_retention_drops_the_oldest_versions(store: LookupStore) -> None:
    for day, version in enumerate(["v1", "v2", "v3"]):
        store.upsert(
            [_batch(["a", "b"], [0.1, 0.2], version, f"run-{day}")],
            model_version=version,
            run_id=f"run-{day}",
            published_at=T0 + dt.timedelta(days=day),
        )
    assert store.retain(2) == ["v1"]
    assert [r["model_version"] for r in store.get("b")] == ["v3", "v2"]
    assert [v["rows"] for v in store.versions()] == [2, 2]


def test_an_unusable_url_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        LookupStore("nosuchdb://x")
    assert str(error.value).startswith("cannot open the lookup store nosuchdb://x: ")
    assert str(error.value).endswith(
        "set publish.store_url to a reachable SQLAlchemy URL such as sqlite:///runs/predictions.db"
    )
