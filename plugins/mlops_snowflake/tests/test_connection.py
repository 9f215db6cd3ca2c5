"""connections.toml: sections, the three authentication methods, every error, and no secret anywhere."""

import textwrap

import pytest

from mlops_framework.errors import MlopsError
from mlops_snowflake import connection as connection_module
from mlops_snowflake.connection import SnowflakeConnection


def assert_no_secret(text, home):
    for secret in home.secrets:
        assert secret not in text


def error_of(fn):
    with pytest.raises(MlopsError) as info:
        fn()
    return str(info.value)


def test_init_reads_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("SNOWFLAKE_HOME", str(tmp_path / "nowhere"))
    connection = SnowflakeConnection("anything", role="R")
    assert connection.role == "R" and connection._session is None
    assert "anything" in repr(connection)


def test_password_section_with_overrides(snowflake_home, kit):
    params = SnowflakeConnection("default", warehouse="WH_L", schema="OTHER").parameters()
    assert params["account"] == "myorg-canaryacct" and params["user"] == "CANARY_USER"
    assert params["password"] == kit.CANARY_PASSWORD
    assert (params["warehouse"], params["schema"], params["role"], params["database"]) == ("WH_L", "OTHER", "ANALYST", "ML")
    assert "authenticator" not in params


def test_default_name_comes_from_the_environment(snowflake_home, monkeypatch):
    monkeypatch.setenv("SNOWFLAKE_DEFAULT_CONNECTION_NAME", "browser")
    assert SnowflakeConnection().name == "browser"
    assert SnowflakeConnection().parameters()["authenticator"] == "externalbrowser"


def test_key_pair_is_loaded_and_passed_decrypted(snowflake_home):
    from cryptography.hazmat.primitives import serialization

    params = SnowflakeConnection("keypair").parameters()
    assert params["authenticator"] == "SNOWFLAKE_JWT"
    assert "private_key_file" not in params and "private_key_file_pwd" not in params
    key = serialization.load_der_private_key(params["private_key"], password=None)
    assert key.key_size == 2048


def test_unencrypted_key_without_passphrase(snowflake_home, tmp_path, kit):
    key_file = tmp_path / "plain.p8"
    kit.write_key(key_file)
    path = snowflake_home.path / "connections.toml"
    path.write_text(path.read_text() + f'\n[plain]\naccount = "a"\nuser = "u"\nprivate_key_file = "{key_file}"\n')
    assert SnowflakeConnection("plain").parameters()["authenticator"] == "SNOWFLAKE_JWT"


def test_describe_names_everything_but_secrets(snowflake_home):
    line = SnowflakeConnection("default").describe()
    for part in ("myorg-canaryacct", "CANARY_USER", "ANALYST", "WH_XS", "ML.MORTGAGE", "password auth", "[default]"):
        assert part in line
    assert "key-pair auth" in SnowflakeConnection("keypair").describe()
    assert "externalbrowser auth" in SnowflakeConnection("browser").describe()
    for name in ("default", "keypair", "browser", "incomplete", "underscore", "missing"):
        assert_no_secret(SnowflakeConnection(name).describe() + repr(SnowflakeConnection(name)), snowflake_home)


def test_missing_file_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("SNOWFLAKE_HOME", str(tmp_path / "empty"))
    message = error_of(SnowflakeConnection("default").parameters)
    assert str(tmp_path / "empty" / "connections.toml") in message and "SNOWFLAKE_HOME is set" in message
    monkeypatch.delenv("SNOWFLAKE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    message = error_of(SnowflakeConnection("default").parameters)
    assert str(tmp_path / ".snowflake" / "connections.toml") in message and "not set" in message
    assert "not usable yet" in SnowflakeConnection("default").describe()  # plan still prints


def test_missing_section_lists_the_sections(snowflake_home):
    message = error_of(SnowflakeConnection("prod").parameters)
    assert "no [prod] section" in message and "browser, default, incomplete, keypair, underscore" in message


def test_missing_keys_are_listed(snowflake_home):
    message = error_of(SnowflakeConnection("incomplete").parameters)
    assert "lacks account, user" in message and "password" not in message.split("lacks")[1].split("(")[0]


def test_account_with_underscore_suggests_dash(snowflake_home):
    message = error_of(SnowflakeConnection("underscore").parameters)
    assert "'myorg-canary-acct'" in message and "TLS" in message


def test_unsupported_authenticator(snowflake_home):
    path = snowflake_home.path / "connections.toml"
    path.write_text(path.read_text() + '\n[okta]\naccount = "a"\nuser = "u"\nauthenticator = "NO_AUTH"\n')
    message = error_of(SnowflakeConnection("okta").parameters)
    assert "not supported" in message and "'PROGRAMMATIC_ACCESS_TOKEN'" in message


TOKEN = "canary-token-0b7f3e"  # noqa: S105 (a canary, not a credential)
CLIENT_SECRET = "canary-client-secret-91ac"  # noqa: S105
TOKEN_SECTIONS = {
    "pat": ('authenticator = "PROGRAMMATIC_ACCESS_TOKEN"\ntoken = "' + TOKEN + '"', "programmatic access token"),
    "oauth": ('authenticator = "oauth"\ntoken = "' + TOKEN + '"', "OAuth token"),
    "client": ('authenticator = "OAUTH_CLIENT_CREDENTIALS"\noauth_client_id = "id"\noauth_client_secret = "'
               + CLIENT_SECRET + '"', "OAuth client credentials"),
    "mfa": ('authenticator = "USERNAME_PASSWORD_MFA"\npassword = "' + TOKEN + '"\nclient_request_mfa_token = true',
            "password + MFA"),
}


@pytest.mark.parametrize("name", list(TOKEN_SECTIONS))
def test_token_oauth_and_mfa_authentication_use_the_connectors_own_keys(snowflake_home, monkeypatch, name):
    """PAT, OAuth and MFA-enforced accounts: the section's keys reach the connector unchanged, every key is
    one the installed connector accepts, and no token or secret shows in describe() or an error."""
    from snowflake.connector.connection import DEFAULT_CONFIGURATION
    from snowflake.snowpark import Session

    body, method = TOKEN_SECTIONS[name]
    path = snowflake_home.path / "connections.toml"
    path.write_text(path.read_text() + f'\n[{name}]\naccount = "myorg-acct"\nuser = "U"\n{body}\n')
    connection = SnowflakeConnection(name)
    params = connection.parameters()
    assert set(params) <= set(DEFAULT_CONFIGURATION)  # the connector's own parameter names
    assert connection.auth_method() == method and method in connection.describe()
    for secret in (TOKEN, CLIENT_SECRET):
        assert secret not in connection.describe() + repr(connection)

    def create(builder):
        raise RuntimeError(f"login failed with {builder._options.get('token') or builder._options.get('password')} "
                           f"{builder._options.get('oauth_client_secret')}")

    monkeypatch.setattr(Session.SessionBuilder, "create", create)
    message = error_of(connection.session)
    assert "login failed" in message and TOKEN not in message and CLIENT_SECRET not in message


def test_token_authentication_says_what_is_missing(snowflake_home):
    path = snowflake_home.path / "connections.toml"
    path.write_text(path.read_text() + '\n[pat]\naccount = "a"\nuser = "u"\nauthenticator = "PROGRAMMATIC_ACCESS_TOKEN"\n')
    assert "lacks token or token_file_path" in error_of(SnowflakeConnection("pat").parameters)


@pytest.mark.parametrize("problem, expected", [
    ("missing", "cannot read private_key_file"),
    ("no passphrase", "the key is encrypted: set private_key_file_pwd"),
    ("wrong passphrase", "wrong private_key_file_pwd"),
    ("not a key", "not a PEM/DER private key"),
])
def test_unusable_key_files(snowflake_home, tmp_path, problem, expected, kit):
    key_file = snowflake_home.key_file
    extra = f'private_key_file_pwd = "{kit.CANARY_PASSPHRASE}-wrong"\n' if problem == "wrong passphrase" else ""
    if problem == "missing":
        key_file = tmp_path / "absent.p8"
    elif problem == "not a key":
        key_file = tmp_path / "garbage.p8"
        key_file.write_text(f"{kit.CANARY_PASSWORD}\n")
    path = snowflake_home.path / "connections.toml"
    path.write_text(path.read_text() + f'\n[bad]\naccount = "a"\nuser = "u"\nauthenticator = "SNOWFLAKE_JWT"\n'
                                       f'private_key_file = "{key_file}"\n{extra}')
    message = error_of(SnowflakeConnection("bad").parameters)
    assert expected in message and str(key_file) in message
    assert_no_secret(message, snowflake_home)


def test_malformed_toml_gives_the_position_only(tmp_path, monkeypatch, kit):
    monkeypatch.setenv("SNOWFLAKE_HOME", str(tmp_path))
    (tmp_path / "connections.toml").write_text(textwrap.dedent(f"""\
        [default]
        account = "a"
        password = {kit.CANARY_PASSWORD}
        """))
    message = error_of(SnowflakeConnection("default").parameters)
    assert "line 3" in message and "not valid TOML" in message
    assert kit.CANARY_PASSWORD not in message and "CANARY" not in message


def test_session_is_created_once_with_the_parameters(snowflake_home, monkeypatch, kit):
    from snowflake.snowpark import Session

    created = []

    def create(builder):
        created.append(dict(builder._options))
        return f"session-{len(created)}"

    monkeypatch.setattr(Session.SessionBuilder, "create", create)
    connection = SnowflakeConnection("default", role="OTHER")
    assert connection.session() == "session-1" and connection.session() == "session-1"
    assert len(created) == 1
    assert created[0]["password"] == kit.CANARY_PASSWORD and created[0]["role"] == "OTHER"


def test_session_errors_are_scrubbed_and_not_chained(snowflake_home, monkeypatch, kit):
    from snowflake.snowpark import Session

    def create(builder):
        raise RuntimeError(f"login failed for password {kit.CANARY_PASSWORD}")

    monkeypatch.setattr(Session.SessionBuilder, "create", create)
    with pytest.raises(MlopsError) as info:
        SnowflakeConnection("default").session()
    assert "login failed" in str(info.value) and "**redacted**" in str(info.value)
    assert_no_secret(str(info.value), snowflake_home)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_every_error_message_is_secret_free(snowflake_home, tmp_path):
    """The canary check across every way a connection can fail."""
    messages = []
    for name in ("incomplete", "underscore", "prod"):
        with pytest.raises(MlopsError) as info:
            SnowflakeConnection(name).parameters()
        messages.append(str(info.value))
        messages.append(SnowflakeConnection(name).describe())
    assert len(messages) == 6
    for message in messages:
        assert_no_secret(message, snowflake_home)


def test_resolve_shares_one_connection_per_config():
    a = connection_module.resolve({"connection_name": "x", "role": None})
    assert a is connection_module.resolve({"connection_name": "x"})
    assert a is not connection_module.resolve({"connection_name": "y"})
    given = SnowflakeConnection("z")
    assert connection_module.resolve(given) is given
    with pytest.raises(MlopsError, match="unknown key"):
        connection_module.resolve({"connection_name": "x", "pasword": "oops"})
