"""``surgagent users``: the users file of the web app (``surgagent serve --auth FILE``).

surgagent users add alice --file users.toml        # asks for the password twice
echo secret | surgagent users add bob --file users.toml --password-stdin
surgagent users list --file users.toml
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from surgagent.agent.errors import UserError

if TYPE_CHECKING:
    from surgagent.ui.auth import UsersFile

__all__ = ["app"]

console = Console()

app = typer.Typer(
    help="People who may log in to the web app, each with a password (stored as argon2id "
    "hashes).\n\nExamples:\n\n"
    "  surgagent users add alice --file users.toml\n\n"
    "  surgagent users list --file users.toml\n\n"
    "  surgagent serve --host 0.0.0.0 --auth users.toml",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

FileOpt = Annotated[Path, typer.Option("--file", "-f", help="The users file.")]


def _users(path: Path, *, missing_ok: bool = False) -> UsersFile:
    from surgagent.ui.auth import UsersFile

    return UsersFile.read(path, missing_ok=missing_ok)


@app.command()
def add(
    name: Annotated[str, typer.Argument(help="Login name.")],
    file: FileOpt,
    password_stdin: Annotated[
        bool, typer.Option(help="Read the password from the first line of stdin.")
    ] = False,
) -> None:
    """Add a user, or set a new password for one."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != password:
            raise UserError("the two passwords differ; nothing was changed")
    users = _users(file, missing_ok=True)
    known = name in users.hashes
    users.set_password(name, password)
    console.print(f"{'changed the password of' if known else 'added'} {name} in {file}")


@app.command()
def remove(name: Annotated[str, typer.Argument(help="Login name.")], file: FileOpt) -> None:
    """Remove a user (their sessions stay on disk, unreachable from the web)."""
    if not _users(file).remove(name):
        raise UserError(f"{file} has no user {name!r}")
    console.print(f"removed {name} from {file}")


@app.command("list")
def list_users(file: FileOpt) -> None:
    """List the users' names."""
    for name in sorted(_users(file).hashes):
        console.print(name)
