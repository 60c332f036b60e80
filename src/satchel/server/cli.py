"""``satchel serve`` and ``satchel token add|list|revoke``: registered on the satchel group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .._errors import BackendError, InvalidInput

DEFAULT_CONFIG = "satchel-server.toml"
_config_option = click.option(
    "--config",
    "config_path",
    envvar="SATCHEL_SERVER_CONFIG",
    default=DEFAULT_CONFIG,
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The server's tenants and tokens (TOML). [env: SATCHEL_SERVER_CONFIG]",
)


@click.command("serve")
@click.option("--url", "engine_url", metavar="URL", help="The store to serve [default: --url "
              "of satchel, $SATCHEL_URL, else the default SQLite file]")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8470, show_default=True, type=click.IntRange(0, 65535))
@_config_option
@click.option("--max-body", default=None, type=click.IntRange(1024), metavar="BYTES",
              help="Largest request body (default 65 MiB).")  # fmt: skip
@click.pass_obj
def serve(
    state: Any, engine_url: str | None, host: str, port: int, config_path: Path,
    max_body: int | None,
) -> None:  # fmt: skip
    """Serve a store over HTTP to the tenants of --config (see `satchel token add`).

    The JSON API is under /v1 (OpenAPI at /openapi.json), the admin page at /ui.

    \b
    Examples:
      satchel token add shop --config server.toml
      satchel serve --url sqlite:///data.db --config server.toml
      satchel serve --url redis://127.0.0.1:6379/0 --port 9000 --config server.toml
    """
    try:
        import uvicorn

        from .app import MAX_BODY, create_app
        from .service import Service
        from .serving import uvicorn_config
    except ImportError as exc:
        raise BackendError(f"the server needs {exc.name}: pip install 'satchel[server]'") from exc
    from .._engines import connect
    from .tenants import Config

    config = Config.load(config_path)
    if not config.tokens:  # a server nobody can use: say so rather than listen
        raise InvalidInput(f"{config_path} has no token yet: add one with "
                           f"`satchel token add TENANT --config {config_path}`")  # fmt: skip
    url = engine_url or getattr(state, "url", None)
    if url:
        state.remember(url)
    service = Service(connect(url, {}), config, config_path)
    app = create_app(service, max_body=max_body or MAX_BODY)
    server = uvicorn.Server(uvicorn_config(app, host, port, log_level="info", server_header=False))
    try:
        server.run()  # as uvicorn.run, with a deadline for each request's headers
    except KeyboardInterrupt:
        pass
    finally:
        service.close()
    if not server.started:  # the port was taken, or the like: uvicorn said why
        raise SystemExit(3)


@click.group("token")
def token() -> None:
    """Manage the server's tokens and tenants (the --config file).

    \b
    Examples:
      satchel token add shop --quota-bytes 50000000 --config server.toml
      satchel token list --config server.toml
      satchel token revoke shop --config server.toml
    """


@token.command("add")
@click.argument("tenant")
@_config_option
@click.option("--prefix", help="Server-side prefix of the tenant's scopes [default: TENANT:].")
@click.option("--scope", "scopes", multiple=True, metavar="PATTERN",
              help="A glob of scope names the tenant may use (repeatable) [default: *].")
@click.option("--readonly", is_flag=True, help="The tenant may only read.")
@click.option("--admin", is_flag=True, help="May see every tenant's usage (/ui).")
@click.option("--quota-bytes", type=click.IntRange(0), help="Default 100 MiB.")
@click.option("--quota-keys", type=click.IntRange(0), help="Default 1,000,000.")  # fmt: skip
def token_add(
    tenant: str, config_path: Path, prefix: str | None, scopes: tuple[str, ...], readonly: bool,
    admin: bool, quota_bytes: int | None, quota_keys: int | None,
) -> None:  # fmt: skip
    """Create a token for TENANT (created with these options if new) and print it once.

    \b
    Examples:
      satchel token add shop --config server.toml
      satchel token add ops --admin --prefix "" --config server.toml
      satchel token add reports --readonly --scope "sales*" --config server.toml
    """
    from .tenants import Config, Tenant, check_name

    config = Config.load(config_path)
    name = check_name(tenant)
    options = (prefix, quota_bytes, quota_keys, scopes or None, readonly or None, admin or None)
    if name in config.tenants and any(v is not None for v in options):
        raise InvalidInput(f"tenant {name!r} exists; its options stay as they are in the file")
    found = config.tenants.get(name) or Tenant(
        name=name, prefix=f"{name}:" if prefix is None else prefix, readonly=readonly,
        admin=admin, scopes=list(scopes) or ["*"],
        **{k: v for k, v in (("quota_bytes", quota_bytes), ("quota_keys", quota_keys))
           if v is not None},
    )  # fmt: skip
    secret = config.add_token(found)
    config.save(config_path)
    click.echo(secret)


@token.command("list")
@_config_option
def token_list(config_path: Path) -> None:
    """List tokens (ids, never secrets) and their tenants.

    \b
    Examples:
      satchel token list --config server.toml
    """
    from .tenants import Config

    config = Config.load(config_path)
    for entry in config.tokens:
        t = config.tenants[entry.tenant]
        mode = "read-only" if t.readonly else "read-write"
        extra = " admin" if t.admin else ""
        click.echo(f"{entry.id}\t{t.name}\tprefix={t.prefix!r}\t{mode}{extra}\t"
                   f"quota={t.quota_bytes}B/{t.quota_keys} keys")  # fmt: skip


@token.command("revoke")
@click.argument("what", metavar="ID|TENANT")
@_config_option
def token_revoke(what: str, config_path: Path) -> None:
    """Revoke the token with this id, or every token of this tenant.

    A running server stops accepting it within a second.

    \b
    Examples:
      satchel token revoke 3f2a9c1b --config server.toml
      satchel token revoke shop --config server.toml
    """
    from .tenants import Config

    config = Config.load(config_path)
    removed = config.revoke(what)
    if not removed:
        raise InvalidInput(f"no token has id or tenant {what!r}")
    config.save(config_path)
    click.echo(f"revoked {removed} token(s)")


def register(group: click.Group) -> None:
    """Add `serve` and `token` to the satchel command group."""
    group.add_command(serve)
    group.add_command(token)
