"""``celery -A proj interactive web``: the click command, attached to the ``interactive`` group by
the CLI (``interactive.add_command(web_command)``)."""

from __future__ import annotations

import click

from ..errors import InteractiveError
from .server import serve


@click.command("web")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs credentials, and TLS in front.")
@click.option("--port", default=5556, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one).")
@click.option("--no-auth", is_flag=True,
              help="No sign-in: everyone who can reach the loopback address acts as you. Loopback only.")
@click.option("--read-only", is_flag=True, help="Show the pages without decision buttons; viewing is not presence.")
@click.option("--certfile", type=click.Path(exists=True, dir_okay=False), help="Serve HTTPS with this certificate.")
@click.option("--keyfile", type=click.Path(exists=True, dir_okay=False), help="The certificate's private key.")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="A Host header to answer to (repeatable); default on loopback: localhost names only.")
@click.pass_context
def web_command(ctx: click.Context, address: str, port: int, no_auth: bool, read_only: bool,
                certfile: str | None, keyfile: str | None, allowed_hosts: tuple[str, ...]) -> None:
    """Serve the web operator console: open incidents live, Retry / Fail / Ignore buttons.

    Credentials come from interactive_web_tokens, $INTERACTIVE_WEB_TOKENS_FILE and
    interactive_web_users (see docs/web.md).
    """
    app = getattr(ctx.obj, "app", None)
    if app is None:
        raise click.UsageError("no Celery app: run as `celery -A proj interactive web`")
    try:
        serve(app, address, port, no_auth=no_auth, read_only=read_only, certfile=certfile, keyfile=keyfile,
              allowed_hosts=allowed_hosts or None)
    except InteractiveError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(exc.exit_code)
    except OSError as exc:  # the port is taken, the address does not exist, ...
        click.echo(f"error: cannot listen on {address}:{port}: {exc}", err=True)
        ctx.exit(2)
