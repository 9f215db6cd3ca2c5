"""A canary password, key passphrase and private key in connections.toml never reach any output:
not plan output, not messages of failing runs, not any file a run writes (outputs, logs, registry,
warehouse)."""

import os
import subprocess
import sys

import pytest

from run_sizes import SMALL

pytest.importorskip("mlops_snowflake", reason="the Snowflake plugin is not installed")

PASSWORD = "CANARY-PASSWORD-7f3a91c2"
PASSPHRASE = "CANARY-PASSPHRASE-55e1b0"


@pytest.fixture(scope="module")
def snowflake_home(tmp_path_factory):
    """connections.toml with a password section and an encrypted key-pair section, both pointing at a
    closed loopback port so that connecting fails at once."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    home = tmp_path_factory.mktemp("snowflake")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(PASSPHRASE.encode()))
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    (home / "key.p8").write_bytes(pem)
    unreachable = 'host = "127.0.0.1"\nport = 9\nprotocol = "http"\nlogin_timeout = 5\n'
    (home / "connections.toml").write_text(
        f'[canary_pw]\naccount = "canary-account"\nuser = "canary_user"\npassword = "{PASSWORD}"\n'
        f'warehouse = "WH"\ndatabase = "DB"\nschema = "PUBLIC"\n{unreachable}\n'
        f'[canary_key]\naccount = "canary-account"\nuser = "canary_user"\nauthenticator = "SNOWFLAKE_JWT"\n'
        f'private_key_file = "{home / "key.p8"}"\nprivate_key_file_pwd = "{PASSPHRASE}"\n'
        f'warehouse = "WH"\ndatabase = "DB"\nschema = "PUBLIC"\n{unreachable}\n'
        f'[canary_bad_passphrase]\naccount = "canary-account"\nuser = "canary_user"\n'
        f'private_key_file = "{home / "key.p8"}"\nprivate_key_file_pwd = "not-{PASSPHRASE}"\n{unreachable}\n'
    )
    body = b"".join(line for line in pem.splitlines() if not line.startswith(b"-----"))
    canaries = [PASSWORD.encode(), PASSPHRASE.encode(), body[:48], body[-48:], der[40:88]]
    return home, canaries


COMMANDS = {
    "plan snowpark": (["plan", "backend=snowpark", "registry=snowflake"], 0),
    "plan ml_job": (["plan", "backend=ml_job", "registry=snowflake"], 0),
    "plan spcs": (["plan", "backend=spcs", "registry=snowflake"], 0),
    "plan key-pair": (["plan", "backend=ml_job", "registry=snowflake", "connection.connection_name=canary_key"], 0),
    "plan -m, ML Job launcher": (["plan", "-m", "model.params.max_depth=3,6", "hydra/launcher=ml_job",
                                  "registry=snowflake", "connection.connection_name=canary_key"], 0),
    "local run": (["run", *SMALL], 0),
    "failing run, password": (["run", "registry=snowflake", *SMALL], None),
    "failing run, key pair": (["run", "registry=snowflake", "connection.connection_name=canary_key", *SMALL], None),
    "failing run, wrong passphrase": (
        ["run", "registry=snowflake", "connection.connection_name=canary_bad_passphrase", *SMALL], None),
    "failing run, bad config": (["run", "registry=snowflake", "+registry.pasword=x", *SMALL], None),
}


def test_the_canary_never_appears(snowflake_home, tmp_path):
    sf_home, canaries = snowflake_home
    mlops_home = tmp_path / "home"
    env = {**os.environ, "SNOWFLAKE_HOME": str(sf_home), "SNOWFLAKE_DEFAULT_CONNECTION_NAME": "canary_pw",
           "MLOPS_HOME": str(mlops_home)}
    printed = []
    for name, (args, expected_code) in COMMANDS.items():
        result = subprocess.run([sys.executable, "-m", "mlops_framework.cli", *args], cwd=tmp_path, env=env,
                                capture_output=True, timeout=240)
        output = result.stdout + result.stderr
        if expected_code is None:
            assert result.returncode != 0, f"{name} should fail\n{output.decode()[-2000:]}"
            assert b"Traceback" not in output, f"{name}: {output.decode()[-3000:]}"
        else:
            assert result.returncode == expected_code, f"{name}: {output.decode()[-3000:]}"
        printed.append((name, output))
    assert b"canary-account" in printed[0][1], "the plan should name the account (not a secret)"

    for name, output in printed:
        for canary in canaries:
            assert canary not in output, f"a secret appeared in the output of {name}"
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "resolved_config.yaml" for p in written) and any(p.suffix == ".duckdb" for p in written)
    for path in written:
        data = path.read_bytes()
        for canary in canaries:
            assert canary not in data, f"a secret was written to {path}"
