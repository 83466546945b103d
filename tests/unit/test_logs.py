"""The one log format of every service (havre/enclave/logs.py): JSON lines a SIEM can read."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from traitlets.config import Config

from havre.enclave import logs
from havre.enclave.config import parse_enclave_config

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "sysadmin" / "logs.md"


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def configured(fmt: str, service: str = "egress") -> io.StringIO:
    stream = io.StringIO()
    logs.configure(service, fmt=fmt, stream=stream)
    return stream


def test_a_security_event_is_one_json_line_with_its_fields(restore_root_logger):
    stream = configured("json")
    log = logging.getLogger("egress.web")
    with logs.log_context(request_id="r-42"):
        logs.security_event(
            log, "egress.refused", "GET %s refused for %s", "/x", "mallory", user="mallory"
        )
    log.info("an ordinary line")
    first, second = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert first["event"] == "egress.refused" and first["level"] == "WARNING"
    assert first["user"] == "mallory" and first["request_id"] == "r-42"
    assert first["service"] == "egress" and first["logger"] == "egress.web"
    assert first["message"] == "GET /x refused for mallory"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert "event" not in second and "request_id" not in second  # the context ended
    assert second["level"] == "INFO"


def test_an_exception_stays_in_its_line(restore_root_logger):
    stream = configured("json")
    try:
        raise RuntimeError("engine gone")
    except RuntimeError:
        logging.getLogger("havre.broker").exception("server.start failed")
    (line,) = stream.getvalue().splitlines()
    assert "RuntimeError: engine gone" in json.loads(line)["exception"]


def test_a_user_name_with_a_line_break_cannot_forge_a_line(restore_root_logger):
    forged = 'alice\n{"level": "INFO", "event": "idp.login_ok", "user": "admin"}'
    # control: the text format writes the attacker's second line as a line of its own
    stream = configured("text")
    logs.security_event(logging.getLogger("havre.auth"), "login.refused", "Refused: %s", forged)
    assert len(stream.getvalue().splitlines()) == 2
    # JSON: one line, and the name comes back exactly as given
    stream = configured("json")
    logs.security_event(
        logging.getLogger("havre.auth"), "login.refused", "Refused: %s", forged, user=forged
    )
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["user"] == forged


def test_an_unknown_event_name_is_refused():
    with pytest.raises(ValueError, match="'login.oops' is not a security event"):
        logs.security_event(logging.getLogger("x"), "login.oops", "nothing")


def test_the_format_comes_from_the_environment_with_a_sentence_for_a_bad_one():
    assert logs.log_format({}) == "text"  # a service started by hand, as before
    assert logs.log_format({logs.FORMAT_ENV: "json"}) == "json"
    with pytest.raises(ValueError, match="HAVRE_LOG_FORMAT must be one of json, text"):
        logs.log_format({logs.FORMAT_ENV: "xml"})


def test_the_enclave_config_option_defaults_to_json():
    base = {"enclave": {"name": "t", "state_dir": "/srv/t"}, "projects": {"cardio": {"title": "C"}}}
    assert parse_enclave_config(base).log_format == "json"
    assert parse_enclave_config({**base, "logging": {"format": "text"}}).log_format == "text"
    with pytest.raises(ValueError, match=r"logging.format: must be json .* or text \(got 'xml'\)"):
        parse_enclave_config({**base, "logging": {"format": "xml"}})


def test_a_service_logs_json_when_the_launcher_says_so():
    """A fresh process set up as every service's entry point does (``configure``): its line is
    JSON with ``$HAVRE_LOG_FORMAT=json`` (what the stack launcher sets), text without."""
    code = "from havre.enclave.logs import configure; import logging; configure('broker');"
    code += "logging.getLogger('havre.broker').warning('listening')"
    for fmt, is_json in (("json", True), ("text", False)):
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), logs.FORMAT_ENV: fmt}
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        (line,) = result.stderr.splitlines()
        if is_json:
            assert json.loads(line)["service"] == "broker"
        else:
            assert line.endswith("WARNING havre.broker: listening") and not line.startswith("{")


def test_the_hub_logs_json_through_jupyterhubs_own_logging(capfd, restore_root_logger):
    """A real JupyterHub application given Havre's logging_config: the hub's own logger and
    Havre's (break glass, the download guard) write JSON lines; the text config doesn't."""
    from jupyterhub.app import JupyterHub

    for fmt in ("text", "json"):
        c = Config()
        c.JupyterHub.logging_config = logs.traitlets_logging_config("hub", fmt)
        app = JupyterHub()
        app.log.info("started")  # the application's logging, before its config file is read
        app.update_config(c)  # what loading jupyterhub_config.py does
        capfd.readouterr()
        app.log.warning("hub line")
        logs.security_event(
            logging.getLogger("havre.download_guard"), "download.refused", "guard line"
        )
        lines = capfd.readouterr().err.splitlines()
        if fmt == "json":
            parsed = [json.loads(line) for line in lines]
            assert [p["message"] for p in parsed] == ["hub line", "guard line"]
            assert parsed[1]["event"] == "download.refused" and parsed[0]["service"] == "hub"
        else:
            assert lines and not any(line.startswith("{") for line in lines)
        JupyterHub.clear_instance()


def test_every_event_is_logged_somewhere_and_in_the_docs_table():
    """Each name of SECURITY_EVENTS is used by a security_event call in the code (or, for the
    desktop image's RFB relay, which has no Havre package, its own lines), and the docs' table
    lists exactly these names."""
    sources = "\n".join(
        path.read_text()
        for folder in ("havre", "spawner", "egress", "images/desktop")
        for path in (REPO / folder).rglob("*.py")
        if path.name != "logs.py"
    )
    unused = [name for name in logs.SECURITY_EVENTS if f'"{name}"' not in sources]
    assert not unused
    table = DOC.read_text().split("## Security events", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([a-z_.]+)` \|", table, re.MULTILINE)
    assert documented == list(logs.SECURITY_EVENTS)


def test_the_launcher_gives_a_services_own_logging_the_json_format(tmp_path):
    """The identity provider sets up text logging in its own ``main``; started as ``havre up``
    starts it (``python -m havre.enclave.logs idp havre-idp ...``) its lines are JSON. Control:
    the same command without the launcher writes its text line."""
    (tmp_path / "idp.yaml").write_text(
        "\n".join(
            [
                "issuer: http://127.0.0.1:8001",
                f"state_dir: {tmp_path / 'state'}",
                f"users_file: {tmp_path / 'users.json'}",
                f"admin_token_file: {tmp_path / 'admin-token'}",
                "clients:",
                "  - client_id: jupyterhub",
                "    name: Havre",
                f"    client_secret_file: {tmp_path / 'client-secret'}",
                "    redirect_uris: [http://127.0.0.1:8000/hub/oauth_callback]",
                "",
            ]
        )
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), logs.FORMAT_ENV: "json"}
    args = ["--config", str(tmp_path / "idp.yaml"), "--init"]
    plain = subprocess.run(
        [sys.executable, "-m", "havre.idp.server", *args], env=env, capture_output=True, text=True
    )
    assert plain.returncode == 0, plain.stderr
    assert "INFO havre.idp: Generated a new signing key" in plain.stderr  # text: the control
    (tmp_path / "state" / "signing-key.pem").unlink()
    launched = subprocess.run(
        [sys.executable, "-m", "havre.enclave.logs", "idp", "havre-idp", *args],
        env=env,
        capture_output=True,
        text=True,
    )
    assert launched.returncode == 0, launched.stderr
    (line,) = launched.stderr.splitlines()
    parsed = json.loads(line)
    assert parsed["service"] == "idp" and parsed["logger"] == "havre.idp"
    assert parsed["message"].startswith("Generated a new signing key")
    refused = subprocess.run(
        [sys.executable, "-m", "havre.enclave.logs", "idp", "no-such-command"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2
    assert "there is no command 'no-such-command' here" in refused.stderr
