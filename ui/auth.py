"""Who may use the review app, and who owns what they make there.

Two ways to log in, both checked in constant time:

- a **users file** (``surgagent serve --auth users.toml``): one name per person, each with an
  argon2id password hash (argon2-cffi), so people are kept apart: a visitor sees only their
  own uploads and sessions;
- one shared **token** (``--token``): everyone who knows it is one team, and owns the same
  sessions whatever name they type.

Without either the app serves one local user. The file is TOML, written by
``surgagent users add NAME --file users.toml``::

    [users]
    alice = "$argon2id$v=19$m=65536,t=3,p=4$..."

    access = Access.from_file(Path("users.toml"))
    access.check("alice", "correct horse") -> True
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from surgagent.tools.errors import ConfigError

if TYPE_CHECKING:
    from argon2 import PasswordHasher

__all__ = ["LOCAL_OWNER", "SHARED_OWNER", "Access", "UsersFile"]

logger = logging.getLogger(__name__)

LOCAL_OWNER = "local"  # the one user of an app served without login
SHARED_OWNER = "shared"  # everyone holding the shared token
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEADER = "# SurgAgent review-app users: name = argon2id hash. Edit with `surgagent users`.\n"


def _hasher() -> PasswordHasher:
    try:
        from argon2 import PasswordHasher
    except ImportError as error:  # pragma: no cover - the ui extra brings it
        raise ConfigError(
            "a users file needs argon2-cffi; install the web extra: pip install 'surgagent[ui]'"
        ) from error
    return PasswordHasher()


@dataclass
class UsersFile:
    """A users file: names and their argon2id password hashes.

    Attributes:
        path: Where the file lives.
        hashes: Password hash by user name.
    """

    path: Path
    hashes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path, *, missing_ok: bool = False) -> UsersFile:
        """Read a users file.

        Raises:
            ConfigError: If it is missing (unless ``missing_ok``), not TOML, or has entries
                that are not a valid name with an argon2 hash.
        """
        if not path.exists():
            if missing_ok:
                return cls(path)
            raise ConfigError(
                f"the users file {path} does not exist; create it with "
                f"`surgagent users add NAME --file {path}`"
            )
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"the users file {path} is not valid TOML ({error})") from error
        users = raw.get("users", {})
        if not isinstance(users, dict):
            raise ConfigError(f"the users file {path} needs a [users] table of name = hash")
        for name, digest in users.items():
            if not _NAME.fullmatch(name) or not str(digest).startswith("$argon2"):
                raise ConfigError(
                    f"the users file {path} has an entry {name!r} that is not a name with an "
                    "argon2 hash; set its password again with `surgagent users add`"
                )
        return cls(path, dict(users))

    def set_password(self, name: str, password: str) -> None:
        """Add a user or change their password, and save the file (readable by its owner only).

        Raises:
            ConfigError: For a name that is not 1-64 letters, digits, ``.``, ``_`` or ``-``,
                or an empty password.
        """
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"user name {name!r} must be 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        if not password:
            raise ConfigError("the password is empty")
        self.hashes[name] = _hasher().hash(password)
        self.save()

    def remove(self, name: str) -> bool:
        """Remove a user and save; False if there was no such user."""
        if self.hashes.pop(name, None) is None:
            return False
        self.save()
        return True

    def save(self) -> None:
        """Write the file atomically, mode 0600."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = [_HEADER, "[users]\n"]
        lines += [f'{name} = "{digest}"\n' for name, digest in sorted(self.hashes.items())]
        partial = self.path.with_name(self.path.name + ".tmp")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.writelines(lines)
        os.replace(partial, self.path)


@dataclass
class Access:
    """How visitors log in: a users file, a shared token, or nobody (a local app).

    Attributes:
        users: The users file, when people log in by name.
        token: The shared token, when a team shares one.
    """

    users: UsersFile | None = None
    token: str | None = None
    _dummy: str | None = field(default=None, repr=False)

    @classmethod
    def from_options(cls, *, auth: Path | None = None, token: str | None = None) -> Access:
        """The access of ``surgagent serve --auth FILE`` or ``--token TOKEN``.

        Raises:
            ConfigError: If both are given, or the users file cannot be used or is empty.
        """
        if auth is not None and token:
            raise ConfigError("give either --auth (a users file) or --token, not both")
        if auth is None:
            return cls(token=token or None)
        users = UsersFile.read(auth)
        if not users.hashes:
            raise ConfigError(
                f"the users file {auth} has no users; add one with `surgagent users add`"
            )
        return cls(users=users)

    @property
    def enabled(self) -> bool:
        """Whether visitors must log in."""
        return self.users is not None or self.token is not None

    def check(self, name: str, password: str) -> bool:
        """Whether ``name`` may log in with ``password`` (constant time in the secret)."""
        if self.token is not None:
            return hmac.compare_digest(password.encode(), self.token.encode())
        if self.users is None:
            return True
        from argon2.exceptions import Argon2Error

        hasher = _hasher()
        digest = self.users.hashes.get(name)
        if digest is None:
            # Spend the same time on an unknown name, so names cannot be probed by timing.
            if self._dummy is None:
                self._dummy = hasher.hash("not a password of anyone")
            digest, password = self._dummy, password + "\0"
        ok = False
        with contextlib.suppress(Argon2Error):
            ok = hasher.verify(digest, password)
        if not ok:
            logger.warning("review app: failed login for user %r", name)
        return ok and name in self.users.hashes

    def owner(self, username: str | None) -> str:
        """Who owns what a logged-in visitor makes: their name, the team, or the local user."""
        if self.users is not None:
            if not username or username not in self.users.hashes:
                raise PermissionError("not logged in")
            return username
        return SHARED_OWNER if self.token is not None else LOCAL_OWNER
