"""Which Snowflake account, user and context a run uses: Snowflake's own ``connections.toml``.

The file is ``$SNOWFLAKE_HOME/connections.toml`` when ``SNOWFLAKE_HOME`` is set, else
``~/.snowflake/connections.toml`` (the Snowflake CLI and connectors read the same file). A section
``[name]`` holds ``account``, ``user`` and one way to authenticate:

- password: ``password = "..."``
- key pair: ``authenticator = "SNOWFLAKE_JWT"``, ``private_key_file = "~/.ssh/snowflake.p8"`` and, when
  the key is encrypted, ``private_key_file_pwd`` (a ``private_key_file`` alone also means key pair);
- browser single sign-on: ``authenticator = "externalbrowser"``.

Config values ``role``, ``warehouse``, ``database`` and ``schema`` override the section's when set.
Secrets are read when a session is opened and never stored, logged, shown or put in an error message:
errors name the file, the section and the keys, never the values, and TOML syntax errors give only
the position. Nothing is read or connected in ``__init__``.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

from mlops_framework.errors import MlopsError

FILE_NAME = "connections.toml"
HOME_ENV = "SNOWFLAKE_HOME"
NAME_ENV = "SNOWFLAKE_DEFAULT_CONNECTION_NAME"
DEFAULT_NAME = "default"
SECRET_KEYS = ("password", "private_key_file_pwd", "private_key_passphrase", "private_key", "token", "passcode",
               "oauth_client_secret")
AUTH_PASSWORD, AUTH_KEY_PAIR, AUTH_BROWSER = "password", "key-pair", "externalbrowser"
_POSITION = re.compile(r"line (\d+), column (\d+)")


def connections_file() -> Path:
    """Where ``connections.toml`` is read from (the file need not exist)."""
    home = os.environ.get(HOME_ENV)
    base = Path(home).expanduser() if home else Path.home() / ".snowflake"
    return base / FILE_NAME


class SnowflakeConnection:
    """A named section of ``connections.toml`` plus overrides; opens one Snowpark session on demand.

    ``parameters()`` is the dict for ``Session.builder.configs`` (secrets included: never log it),
    ``describe()`` a secret-free line, ``session()`` the session, created on first use and reused.
    """

    def __init__(self, connection_name: str | None = None, role: str | None = None, warehouse: str | None = None,
                 database: str | None = None, schema: str | None = None):
        self.connection_name = connection_name
        self.role = role
        self.warehouse = warehouse
        self.database = database
        self.schema = schema
        self._session = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<SnowflakeConnection [{self.name}]>"

    @property
    def name(self) -> str:
        return self.connection_name or os.environ.get(NAME_ENV) or DEFAULT_NAME

    # ---- reading the file ------------------------------------------------------------------------

    def section(self) -> dict:
        """The section's keys (lower-cased) with the config overrides applied; secrets included."""
        import tomllib

        path = connections_file()
        where = f"{HOME_ENV} is set" if os.environ.get(HOME_ENV) else f"{HOME_ENV} is not set"
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise MlopsError(
                f"no Snowflake connections file: looked for {path} ({where}). Create it with a [{self.name}] "
                f"section (account, user, and password or authenticator), or set {HOME_ENV} to its directory"
            ) from None
        except (OSError, UnicodeDecodeError) as error:
            raise MlopsError(f"cannot read {path}: {type(error).__name__}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            found = _POSITION.search(str(error))
            at = f" at line {found.group(1)}, column {found.group(2)}" if found else ""
            raise MlopsError(
                f"{path} is not valid TOML{at}; fix the syntax there (its text is not shown: it may hold secrets)"
            ) from None
        sections = sorted(key for key, value in data.items() if isinstance(value, dict))
        if self.name not in data or not isinstance(data[self.name], dict):
            raise MlopsError(
                f"{path} has no [{self.name}] section; its sections: {', '.join(sections) or '(none)'}. "
                f"Choose one with connection.connection_name=NAME or {NAME_ENV}"
            )
        values = {str(key).lower(): value for key, value in data[self.name].items()}
        for key in ("role", "warehouse", "database", "schema"):
            if getattr(self, key) is not None:
                values[key] = getattr(self, key)
        return values

    def auth_method(self, values: dict | None = None) -> str:
        values = self.section() if values is None else values
        authenticator = str(values.get("authenticator") or "").lower()
        if authenticator == "snowflake_jwt" or (not authenticator and "private_key_file" in values):
            return AUTH_KEY_PAIR
        if authenticator == AUTH_BROWSER:
            return AUTH_BROWSER
        if authenticator in ("", "snowflake"):
            return AUTH_PASSWORD
        raise MlopsError(
            f"[{self.name}] in {connections_file()}: authenticator {values.get('authenticator')!r} is not supported; "
            f"use a password, authenticator = \"SNOWFLAKE_JWT\" with private_key_file, or authenticator = \"externalbrowser\""
        )

    def parameters(self) -> dict:
        """Keyword arguments for ``Session.builder.configs``: SECRETS INCLUDED, never log or store them."""
        values = self.section()
        method = self.auth_method(values)
        required = {AUTH_PASSWORD: ("account", "user", "password"),
                    AUTH_KEY_PAIR: ("account", "user", "private_key_file"),
                    AUTH_BROWSER: ("account",)}[method]
        missing = [key for key in required if not values.get(key)]
        if missing:
            raise MlopsError(
                f"[{self.name}] in {connections_file()} lacks {', '.join(missing)} ({method} authentication needs "
                f"{', '.join(required)})"
            )
        account = str(values["account"])
        if "_" in account and "host" not in values:
            raise MlopsError(
                f"[{self.name}] in {connections_file()}: account {account!r} contains '_', which breaks the TLS host "
                f"name; write it with '-' instead: account = {account.replace('_', '-')!r}"
            )
        params = {key: value for key, value in values.items()
                  if key not in ("private_key_file", "private_key_file_pwd", "private_key_path")}
        if method == AUTH_KEY_PAIR:
            params["authenticator"] = "SNOWFLAKE_JWT"
            params["private_key"] = _load_private_key(
                values["private_key_file"], values.get("private_key_file_pwd"), f"[{self.name}] in {connections_file()}"
            )
        elif method == AUTH_BROWSER:
            params["authenticator"] = "externalbrowser"
        return params

    def describe(self) -> str:
        """One secret-free line: account, user, role, warehouse, database.schema and how it authenticates."""
        try:
            values = self.section()
            method = self.auth_method(values)
        except MlopsError as error:
            reason = str(error).split(". ")[0]
            return f"Snowflake connection [{self.name}] (not usable yet: {reason})"
        context = ", ".join(f"{key} {values[key]}" for key in ("role", "warehouse") if values.get(key))
        location = ".".join(str(values[key]) for key in ("database", "schema") if values.get(key))
        parts = [f"Snowflake account {values.get('account', '?')} as {values.get('user', '?')}"]
        if context:
            parts.append(context)
        if location:
            parts.append(location)
        parts.append(f"{method} auth")
        return ", ".join(parts) + f" ([{self.name}] in {connections_file()})"

    # ---- the session ----------------------------------------------------------------------------

    def session(self):
        """The Snowpark session, created on first call (thread-safe) and reused."""
        with self._lock:
            if self._session is None:
                self._session = self._create_session()
            return self._session

    def use_session(self, session):
        """Adopt an existing session (inside an ML Job the container's own) instead of connecting."""
        with self._lock:
            self._session = session

    def _create_session(self):
        from snowflake.snowpark import Session

        params = self.parameters()
        try:
            return Session.builder.configs(params).create()
        except Exception as error:  # the connector's many error types; scrubbed, never chained
            message = _scrub(f"{type(error).__name__}: {error}", params)
            raise MlopsError(f"cannot open a Snowflake session with {self.describe()}: {message}") from None

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None


def _load_private_key(path, passphrase, where: str) -> bytes:
    """The private key as unencrypted PKCS#8 DER bytes, with a clear error when it cannot be used."""
    from cryptography.hazmat.primitives import serialization

    file = Path(str(path)).expanduser()
    try:
        data = file.read_bytes()
    except OSError as error:
        raise MlopsError(f"{where}: cannot read private_key_file {file}: {error.strerror or type(error).__name__}") from None
    password = passphrase.encode() if isinstance(passphrase, str) else passphrase
    key = None
    for loader in (serialization.load_pem_private_key, serialization.load_der_private_key):
        try:
            key = loader(data, password=password or None)
            break
        except TypeError:
            problem = ("the key is encrypted: set private_key_file_pwd" if not password
                       else "the key is not encrypted: remove private_key_file_pwd")
            raise MlopsError(f"{where}: cannot load private_key_file {file}: {problem}") from None
        except Exception:  # a ValueError, cryptography's UnsupportedAlgorithm and friends
            continue
    if key is None:
        hint = "wrong private_key_file_pwd, or not a PEM/DER private key" if password else "not a PEM/DER private key"
        raise MlopsError(f"{where}: cannot load private_key_file {file}: {hint}") from None
    return key.private_bytes(
        encoding=serialization.Encoding.DER,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def _scrub(text: str, params: dict) -> str:
    for key in SECRET_KEYS:
        value = params.get(key)
        if isinstance(value, str) and value:
            text = text.replace(value, "**redacted**")
    return text


# ---- one connection (and so one session) per distinct config, shared by source, sink, registry ----

_SHARED: dict[tuple, SnowflakeConnection] = {}
_SHARED_LOCK = threading.Lock()


@runtime_checkable
class SessionProvider(Protocol):
    """Anything that hands out a Snowpark session: a ``SnowflakeConnection``, or a test's own object."""

    def session(self): ...


def resolve(connection) -> SnowflakeConnection:
    """A ``SnowflakeConnection`` for a config mapping (shared by equal configs), None (the defaults) or an
    object that already has ``session()`` (returned as is: tests pass their own)."""
    if connection is None:
        connection = {}
    if isinstance(connection, SessionProvider):
        return connection
    if not isinstance(connection, dict):
        raise MlopsError(f"connection must be a mapping of connection settings, got {type(connection).__name__}")
    known = ("connection_name", "role", "warehouse", "database", "schema")
    unknown = sorted(set(connection) - set(known))
    if unknown:
        raise MlopsError(f"unknown key(s) connection.{', connection.'.join(unknown)}; connection accepts: {', '.join(known)}")
    key = tuple((name, connection.get(name)) for name in known)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = SnowflakeConnection(**{name: connection.get(name) for name in known})
        return _SHARED[key]


def describe(connection) -> str:
    """``resolve(connection).describe()`` for plans: reads ``connections.toml``, connects nowhere."""
    return resolve(connection).describe()
