"""One error style for every command: ``dynamat: error: <one line>`` on stderr and exit status 2."""

from __future__ import annotations

import os
import signal
import sys

import click

from dynamat.errors import DynamatError


class OneLineGroup(click.Group):
    """Turns DynamatError (and an unwritable path) into one line on stderr and exit 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DynamatError as exc:
            click.echo(f"dynamat: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", err=True)
            ctx.exit(2)
        except click.ClickException as exc:  # bad options included: same style, one line
            hint = f" (see `{exc.ctx.command_path} --help`)" if isinstance(exc, click.UsageError) and exc.ctx else ""
            click.echo(f"dynamat: error: {exc.format_message()}{hint}", err=True)
            ctx.exit(2)
        except BrokenPipeError:  # the reader left (`dynamat systems | head`): nothing went wrong to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush has nowhere to fail
            ctx.exit(128 + signal.SIGPIPE)  # what a shell reports of a command its pipe's reader left
        except (OSError, ValueError) as exc:  # an input the checks did not foresee: still one line
            if ctx.obj and ctx.obj.get("debug"):
                raise
            what = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.filename else str(exc)
            click.echo(f"dynamat: error: {type(exc).__name__}: {what.splitlines()[0] if what else ''}", err=True)
            ctx.exit(2)
