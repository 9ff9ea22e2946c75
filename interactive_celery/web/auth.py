"""Who is asking: bearer tokens, basic-auth users, signed session cookies, or ``--no-auth``.

The operator's name always comes from here, never from a form field or a JSON body.

* ``interactive_web_tokens = {token: operator}`` (or ``{token: {"operator": ..., "groups": [...]}}``),
  plus the tokens in the file named by ``$INTERACTIVE_WEB_TOKENS_FILE`` (a JSON object of the same
  shape, or lines ``<token> <operator> [group,group]``). Tokens are kept only as SHA-256 digests.
* ``interactive_web_users = {user: hash}`` (or ``{user: {"password": hash, "groups": [...]}}``) with
  hashes from :mod:`interactive_celery.web.passwords`. Plain-text passwords are refused at startup.
* A session cookie, set by the login form, names the operator and a fingerprint of the credential
  used, so changing a password or removing a token ends the sessions made with it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from typing import Any, Mapping

from ..api import default_groups, default_operator
from ..errors import ConfigurationError
from .passwords import check_hash_format, dummy_hash, verify_password

TOKENS_FILE_ENV = "INTERACTIVE_WEB_TOKENS_FILE"
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class Identity:
    operator: str
    groups: tuple[str, ...] = ()
    #: ``bearer``, ``basic``, ``session`` or ``local`` (``--no-auth``)
    via: str = "local"

    @property
    def needs_csrf(self) -> bool:
        # A browser attaches cookies and cached basic credentials to cross-site requests by itself;
        # it never invents an Authorization: Bearer header, so bearer calls cannot be forged.
        return self.via != "bearer"


@dataclass(frozen=True)
class Account:
    operator: str
    groups: tuple[str, ...]
    password_hash: str = ""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_operator(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name.strip() or any(c in name for c in "\n\r\t") \
            or name.strip().startswith("team:"):
        raise ConfigurationError(f"{where}: {name!r} is not a valid operator name")
    return name.strip()


def _groups(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)) or not all(isinstance(g, str) for g in value):
        raise ConfigurationError(f"{where}: groups must be a list of names, got {value!r}")
    return tuple(g.strip() for g in value if g.strip())


def _token_account(value: Any, where: str) -> Account:
    if isinstance(value, Mapping):
        return Account(check_operator(value.get("operator"), where), _groups(value.get("groups"), where))
    return Account(check_operator(value, where), ())


def parse_tokens_file(text: str, where: str) -> dict[str, Any]:
    """A tokens file: a JSON object, or one ``<token> <operator> [group,group]`` per line."""
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigurationError(f"{where}: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigurationError(f"{where}: expected a JSON object of token -> operator")
        return data
    tokens: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) not in (2, 3):
            raise ConfigurationError(f"{where} line {number}: expected '<token> <operator> [groups]'")
        tokens[words[0]] = {"operator": words[1], "groups": words[2] if len(words) == 3 else None}
    return tokens


class Auth:
    """The credentials a console accepts, validated once at startup."""

    def __init__(self, *, tokens: Mapping[str, Any] | None = None, users: Mapping[str, Any] | None = None,
                 no_auth: bool = False, local_operator: str | None = None):
        self.no_auth = no_auth
        self._tokens: dict[str, Account] = {}
        for token, value in (tokens or {}).items():
            where = "interactive_web_tokens"
            if not isinstance(token, str) or len(token.strip()) < MIN_TOKEN_CHARS:
                raise ConfigurationError(f"{where}: every token needs at least {MIN_TOKEN_CHARS} characters")
            self._tokens[_digest(token.strip())] = _token_account(value, where)
        self._users: dict[str, Account] = {}
        for user, value in (users or {}).items():
            where = f"interactive_web_users[{user!r}]"
            stored = value.get("password") if isinstance(value, Mapping) else value
            problem = check_hash_format(stored)
            if problem:
                raise ConfigurationError(f"{where}: the password {problem}")
            groups = _groups(value.get("groups"), where) if isinstance(value, Mapping) else ()
            if ":" in str(user):
                raise ConfigurationError(f"{where}: a user name cannot contain ':' (HTTP basic auth splits on it)")
            self._users[check_operator(user, "interactive_web_users")] = Account(user.strip(), groups, stored)
        self.local = Identity(check_operator(local_operator or default_operator(), "--no-auth operator"),
                              default_groups(), "local") if no_auth else None

    @classmethod
    def from_app(cls, app, *, no_auth: bool = False, environ: Mapping[str, str] = os.environ) -> "Auth":
        tokens = dict(app.conf.get("interactive_web_tokens") or {})
        path = environ.get(TOKENS_FILE_ENV)
        if path:
            try:
                with open(path, encoding="utf-8") as handle:
                    from_file = parse_tokens_file(handle.read(), path)
            except OSError as exc:
                raise ConfigurationError(f"${TOKENS_FILE_ENV}: cannot read {path}: {exc}") from None
            clash = set(tokens) & set(from_file)
            if clash:
                raise ConfigurationError(f"{path}: {len(clash)} token(s) also set in interactive_web_tokens")
            tokens.update(from_file)
        return cls(tokens=tokens, users=app.conf.get("interactive_web_users") or {}, no_auth=no_auth)

    @property
    def configured(self) -> bool:
        return bool(self._tokens or self._users)

    # -- checking credentials ---------------------------------------------------------------------

    def bearer(self, token: str) -> Identity | None:
        account = self._tokens.get(_digest(token.strip())) if token else None
        return Identity(account.operator, account.groups, "bearer") if account else None

    def password(self, user: str, password: str, via: str = "basic") -> Identity | None:
        """Slow on purpose (scrypt): call it off the event loop."""
        account = self._users.get(user)
        if account is None:
            verify_password(password, dummy_hash())
            return None
        if not verify_password(password, account.password_hash):
            return None
        return Identity(account.operator, account.groups, via)

    def basic(self, encoded: str) -> Identity | None:
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return self.password(user, password) if sep else None

    # -- sessions ---------------------------------------------------------------------------------

    def session_for(self, identity: Identity, *, token: str | None = None) -> str:
        """The cookie value for a login made with a password (default) or with ``token``."""
        if token is not None:
            return json.dumps({"kind": "token", "fp": _digest(token.strip())})
        account = self._users[identity.operator]
        return json.dumps({"kind": "password", "op": identity.operator,
                           "fp": _digest(account.password_hash)})

    def from_session(self, value: bytes | str | None) -> Identity | None:
        try:
            data = json.loads(value) if value else None
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        if data.get("kind") == "token":
            account = self._tokens.get(str(data.get("fp")))
        elif data.get("kind") == "password":
            account = self._users.get(str(data.get("op")))
            if account and not hmac.compare_digest(_digest(account.password_hash), str(data.get("fp"))):
                account = None
        else:
            account = None
        return Identity(account.operator, account.groups, "session") if account else None
