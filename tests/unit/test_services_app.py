"""The demo app's service routes (flask_stacks/services.py): absent unless their overlay is
on; with it on and the service away, a JSON 503 that says so, never a traceback; bad input a
400 that says what to send. The round trips through PostgreSQL and Redis: tests/test_services.py."""

import socket

import pytest

from flask_stacks import create_app


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on: a service that is away."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def password_file(tmp_path):
    path = tmp_path / "password"
    path.write_text("not-used\n")
    return str(path)


def test_off_the_demo_app_is_as_it_was(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    client = create_app().test_client()
    assert client.post("/notes", data="x").status_code == 404
    assert client.get("/jobs/x").status_code == 404


def test_database_away_is_a_json_503(monkeypatch, closed_port, password_file):
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app@127.0.0.1:{closed_port}/app")
    monkeypatch.setenv("DATABASE_PASSWORD_FILE", password_file)
    monkeypatch.setenv("DB_POOL_SIZE", "1")
    client = create_app().test_client()
    response = client.post("/notes", data="hello")
    assert response.status_code == 503, response.data
    assert response.json["status"] == 503 and "database" in response.json["detail"]
    assert response.headers["Retry-After"] == "2"


def test_queue_away_is_a_json_503(monkeypatch, closed_port, password_file):
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{closed_port}/0")
    monkeypatch.setenv("REDIS_PASSWORD_FILE", password_file)
    client = create_app().test_client()
    response = client.post("/jobs", json={"numbers": [1, 2], "seconds": 0})
    assert response.status_code == 503, response.data
    assert "queue" in response.json["detail"]


@pytest.mark.parametrize(
    "payload",
    [None, {"numbers": "12"}, {"numbers": [1, "2"]}, {"numbers": [1], "seconds": -1},
     {"numbers": [1], "seconds": 61}, {"numbers": [True]}],
)  # fmt: skip
def test_bad_job_is_a_400_that_says_what_to_send(monkeypatch, closed_port, password_file, payload):
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{closed_port}/0")
    monkeypatch.setenv("REDIS_PASSWORD_FILE", password_file)
    response = create_app().test_client().post("/jobs", json=payload)
    assert response.status_code == 400, response.data
    assert response.json["status"] == 400


def test_bad_note_is_a_400(monkeypatch, closed_port, password_file):
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app@127.0.0.1:{closed_port}/app")
    monkeypatch.setenv("DATABASE_PASSWORD_FILE", password_file)
    client = create_app().test_client()
    assert client.post("/notes", data="").status_code == 400
    assert client.post("/notes", data="x" * 10_001).status_code == 400


def test_missing_password_file_says_which(monkeypatch, closed_port, tmp_path):
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app@127.0.0.1:{closed_port}/app")
    monkeypatch.setenv("DATABASE_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match="DATABASE_PASSWORD_FILE=.*cannot read"):
        create_app()
