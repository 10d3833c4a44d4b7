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


#: string options that name something (a model, a system, a group, a folder): an empty one is refused like an empty path
NAMED = ("model", "models", "system", "systems", "name", "out")


class _NotEmpty(click.ParamType):
    """A path or name type that refuses an empty value: ``--out ''`` was the current folder, ``--name ''`` the
    file's own name, ``--model ''`` silently the run's; none is what was typed."""

    def __init__(self, inner: click.ParamType):
        self.inner = inner
        self.name = inner.name

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("is empty", param, ctx)
        return self.inner.convert(value, param, ctx)

    def shell_complete(self, ctx, param, incomplete):  # file names for a path, as the wrapped type's
        return self.inner.shell_complete(ctx, param, incomplete)

    def __getattr__(self, attr):  # the rest of the wrapped type's attributes (its flags, its name)
        return getattr(self.inner, attr)


def refuse_empty_values(cmd: click.Command) -> None:
    """Every path option, and every option naming a model, system or group, of ``cmd`` and its subcommands
    refuses an empty value (:class:`_NotEmpty`)."""
    for sub in getattr(cmd, "commands", {}).values():
        refuse_empty_values(sub)
    for param in cmd.params:
        if isinstance(param.type, click.Path) or param.type is click.STRING and param.name in NAMED:
            param.type = _NotEmpty(param.type)
