"""``satchel token add|list|revoke`` and ``satchel serve``, invoked as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

import satchel
import support_server
from satchel import AccessDenied
from satchel._cli import cli
from satchel.server.tenants import Config, digest


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_token_add_list_revoke(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    code, token, _ = run("token", "add", "alice", "--config", str(config), "--quota-bytes", "5000",
                         "--scope", "app*")  # fmt: skip
    assert code == 0
    token = token.strip()
    assert len(token) >= 40
    text = config.read_text()
    assert token not in text and digest(token) in text  # stored hashed only
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    data = tomllib.loads(text)
    assert data["tenants"]["alice"]["quota_bytes"] == 5000
    assert data["tenants"]["alice"]["scopes"] == ["app*"]

    code, second, _ = run("token", "add", "alice", "--config", str(config))
    assert code == 0 and second.strip() != token
    code, _, err = run("token", "add", "alice", "--config", str(config), "--readonly")
    assert code == 2 and "exists" in err
    code, _, err = run("token", "add", "bad name!", "--config", str(config))
    assert code == 2 and "tenant name" in err
    run("token", "add", "ops", "--config", str(config), "--admin", "--prefix", "")

    code, listing, _ = run("token", "list", "--config", str(config))
    assert code == 0 and listing.count("\talice\t") == 2 and "admin" in listing
    assert token not in listing
    first_id = Config.load(config).tokens[0].id
    assert run("token", "revoke", first_id, "--config", str(config))[0] == 0
    loaded = Config.load(config)
    assert loaded.tenant_for(token) is None and loaded.tenant_for(second.strip()) is not None
    assert run("token", "revoke", "alice", "--config", str(config))[1].startswith("revoked 1")
    assert run("token", "revoke", "alice", "--config", str(config))[0] == 2


def test_nesting_prefixes_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    run("token", "add", "a", "--config", str(config), "--prefix", "team/")
    code, _, err = run("token", "add", "b", "--config", str(config), "--prefix", "team/x/")
    assert code == 2 and "nesting" in err


def test_serve_runs_the_server_and_sees_revocations(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    token = run("token", "add", "alice", "--config", str(config))[1].strip()
    port = support_server.free_port()
    env = {**os.environ, "SATCHEL_SERVER_CONFIG": str(config)}
    command = [sys.executable, "-c", "from satchel._cli import main; main()", "serve",
               "--url", f"sqlite:///{tmp_path}/s.db", "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        support_server.wait_healthy(url, proc)
        with satchel.open(url, token=token, scope="app") as store:
            store.set("k", {"typed": (1, 2)})
            assert store.get("k") == {"typed": (1, 2)}
            run("token", "revoke", "alice", "--config", str(config))
            time.sleep(1.2)  # the server looks at the file at most once a second
            with pytest.raises(AccessDenied):
                store.get("k")
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize(
    "bad",
    [
        '[tenants.a]\nprefix = "a:"\nreadonly = "no"\n',
        '[tenants.a]\nprefix = "a:"\nquota_bytes = -1\n',
        '[tenants.a]\nprefix = "a:"\nscopes = ["ok", 3]\n',
        '[tenants.a]\nprefix = "a:"\ncolour = "blue"\n',
        '[[tokens]]\nid = "x"\ntenant = "nobody"\nsha256 = "00"\n',
        "not toml [",
    ],
)
def test_a_bad_config_is_refused_with_its_reason(tmp_path: Path, bad: str) -> None:
    config = tmp_path / "server.toml"
    config.write_text(bad)
    code, _, err = run("token", "list", "--config", str(config))
    assert code == 2 and "bad server config" in err and "server.toml" in err, err


def test_core_and_cli_work_without_the_server_extra() -> None:
    code = (
        "import sys\n"
        "for name in ('fastapi', 'uvicorn', 'httpx', 'starlette', 'pydantic'):\n"
        "    sys.modules[name] = None\n"
        "import satchel, satchel._cli\n"
        "with satchel.open('memory://') as s:\n"
        "    s.set('k', 1)\n"
        "try:\n"
        "    satchel.open('http://127.0.0.1:1', token='t')\n"
        "except satchel.BackendError as exc:\n"
        "    assert 'satchel[server]' in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    serve = "import sys; sys.modules['uvicorn'] = None\nfrom satchel._cli import main; main()"
    result = subprocess.run([sys.executable, "-c", serve, "serve"], capture_output=True, text=True)
    assert result.returncode == 3 and "satchel[server]" in result.stderr


def test_the_store_commands_work_against_a_server(monkeypatch) -> None:
    server = support_server.running()
    monkeypatch.setenv("SATCHEL_TOKEN", server.tenant())
    assert run("--url", server.url, "--scope", "app", "set", "k", "hello")[0] == 0
    code, out, _ = run("--url", server.url, "--scope", "app", "get", "k")
    assert code == 0 and out.strip() == "hello"
    code, out, _ = run("--url", server.url, "scopes")
    assert code == 0 and out.split() == ["app"]
    code, _, err = run("--url", server.url, "--scope", "app", "get", "missing")
    assert code == 1 and "missing" in err


def test_serve_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    code, _, err = run("serve", "--config", str(tmp_path / "none.toml"))
    assert code == 2 and "satchel token add" in err
