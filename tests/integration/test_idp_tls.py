"""The embedded identity provider over TLS whenever the hub is, in a real enclave.

A second, small enclave is started here with a certificate the test makes (``cryptography``,
for 127.0.0.1): the proxy and the provider serve HTTPS with it, a researcher signs in through
both, and an old scrypt password hash is rewritten as Argon2id by the running provider.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography import x509

from havre.host import layout, stack
from havre.host.cli import DEFAULT_NOTEBOOK_IMAGE
from havre.host.demo import init_demo
from havre.idp.passwords import verify_password
from havre.idp.users import read_users_file, write_users_file
from tests.certificates import self_signed
from tests.enclave_fixtures import ENCLAVE_NAME, free_port
from tests.integration.hub_client import HubUser
from tests.scrypt_hashes import legacy_scrypt_hash

pytestmark = pytest.mark.docker


def make_certificate(folder: Path) -> tuple[Path, Path]:
    return self_signed(folder, key_type="rsa")


@dataclass
class TlsEnclave:
    config: object
    options: layout.StackOptions
    url: str
    cert: Path
    passwords: dict[str, str]

    def session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
        session.verify = str(self.cert)
        return session


@pytest.fixture(scope="module")
def tls_enclave(docker_client, tmp_path_factory) -> Iterator[TlsEnclave]:
    folder = tmp_path_factory.mktemp("tls-enclave")
    cert, key = make_certificate(folder)
    config, users = init_demo(
        folder / "state", DEFAULT_NOTEBOOK_IMAGE, enclave_name=f"{ENCLAVE_NAME}tls"
    )
    stack.down(config, purge=False)  # leftovers of an interrupted run
    options = layout.StackOptions(
        port=free_port(), idp_port=free_port(), tls_cert=str(cert), tls_key=str(key)
    )
    try:
        url = stack.up(config, options)
        yield TlsEnclave(config, options, url, cert, {u.name: u.password for u in users})
    finally:
        stack.down(config, purge=True)


def test_the_sign_in_service_is_https_with_the_hubs_certificate(tls_enclave):
    opts = tls_enclave.options
    assert tls_enclave.url.startswith("https://")
    assert opts.idp_public_url == f"https://127.0.0.1:{opts.idp_port}"
    session = tls_enclave.session()
    discovery = session.get(f"{opts.idp_public_url}/.well-known/openid-configuration", timeout=10)
    assert discovery.status_code == 200
    assert discovery.json()["issuer"] == opts.idp_public_url
    # the same certificate as the proxy's

    served = ssl.get_server_certificate(("127.0.0.1", opts.idp_port))
    assert x509.load_pem_x509_certificate(served.encode()) == x509.load_pem_x509_certificate(
        tls_enclave.cert.read_bytes()
    )
    # and nothing in clear on that port
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(
            f"http://127.0.0.1:{opts.idp_port}/.well-known/openid-configuration", timeout=5
        )


def test_a_researcher_signs_in_over_tls_end_to_end(tls_enclave):
    """Hub -> provider's page (HTTPS) -> password -> hub, which redeems the code over the
    provider's back channel on the front network."""
    alice = HubUser(tls_enclave.url, "alice", tls_enclave.passwords["alice"])
    alice.session = tls_enclave.session()
    page = alice.session.get(alice.url("hub/oauth_login?next=/hub/home"), timeout=30)
    assert page.url.startswith(f"{tls_enclave.options.idp_public_url}/authorize")
    assert 'name="password"' in page.text
    alice.login()
    home = alice.session.get(alice.url("hub/home"), timeout=30)
    assert home.status_code == 200 and "alice" in home.text


def test_an_old_scrypt_hash_signs_in_and_is_rewritten_as_argon2id(tls_enclave):
    users_file = tls_enclave.config.state_dir / "idp" / "users.json"
    users = read_users_file(users_file)
    assert all(u.password_hash.startswith("$argon2id$") for u in users.values())
    password = tls_enclave.passwords["bob"]
    entries = {name: record.to_json() for name, record in users.items()}
    entries["bob"]["password_hash"] = legacy_scrypt_hash(password)
    write_users_file(users_file, entries)  # the provider re-reads it at every sign-in
    bob = HubUser(tls_enclave.url, "bob", password)
    bob.session = tls_enclave.session()
    bob.login()
    stored = read_users_file(users_file)["bob"].password_hash
    assert stored.startswith("$argon2id$") and verify_password(password, stored)
