"""p2pshare.tls: the network CA of tls = "auto", leaves, and what they let through."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from p2pshare import tls
from p2pshare.config import PeerSettings, TrackerSettings
from p2pshare.errors import ConfigError

KEY = "p2pk-" + "a" * 43
OTHER_KEY = "p2pk-" + "b" * 43


def _auto(key: str) -> tls.Tls:
    security = tls.load(TrackerSettings(network_key=key, tls="auto"), section="tracker")
    assert security is not None
    return security


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def test_the_same_network_key_makes_the_same_ca_in_every_call() -> None:
    first_key, first = tls.network_ca(KEY)
    second_key, second = tls.network_ca(KEY)
    assert _der(first) == _der(second)
    assert first_key.private_numbers() == second_key.private_numbers()
    # it is a CA whose own signature holds
    assert first.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    first.verify_directly_issued_by(first)


def test_another_network_key_makes_another_ca() -> None:
    _, mine = tls.network_ca(KEY)
    _, theirs = tls.network_ca(OTHER_KEY)
    assert mine.public_key() != theirs.public_key()
    assert mine.subject != theirs.subject


def test_each_process_gets_its_own_leaf_signed_by_the_network_ca() -> None:
    ca_key, ca = tls.network_ca(KEY)
    now = datetime.datetime.now(datetime.UTC)
    _, one = tls.issue_leaf(ca_key, ca, ["127.0.0.1", "peer.example"], now=now)
    _, two = tls.issue_leaf(ca_key, ca, [], now=now)
    assert one.public_key() != two.public_key()
    one.verify_directly_issued_by(ca)
    two.verify_directly_issued_by(ca)
    sans = one.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [tls.AUTO_NAME, "peer.example"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> bytes:
    """A real TLS handshake over a socket pair; returns what the client read through it,
    or raises the client's error."""
    left, right = socket.socketpair()
    left.settimeout(5)
    right.settimeout(5)

    def serve() -> None:
        try:
            with server.wrap_socket(left, server_side=True) as conn:
                conn.sendall(b"hello through tls")
        except (ssl.SSLError, OSError):
            left.close()  # the client refused us: it sees the error

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(right, server_hostname=tls.AUTO_NAME) as conn:
            return conn.recv(100)
    finally:
        thread.join(5)


def test_a_process_with_the_same_key_accepts_the_leaf() -> None:
    assert _handshake(_auto(KEY).server_context(), _auto(KEY).client_context()) == (
        b"hello through tls"
    )


def test_a_leaf_of_another_network_key_is_rejected() -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(_auto(OTHER_KEY).server_context(), _auto(KEY).client_context())


def test_tls_off_gives_nothing() -> None:
    assert tls.load(TrackerSettings(), section="tracker") is None


def test_a_peer_with_tls_on_talks_https_to_the_tracker() -> None:
    settings = PeerSettings(network_key=KEY, tls="auto", tracker="http://tracker.example:8460")
    assert settings.tracker == "https://tracker.example:8460"
    assert PeerSettings(tracker="http://tracker.example:8460").tracker == (
        "http://tracker.example:8460"
    )


# -- tls = "files" ---------------------------------------------------------------------


def _self_signed(path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = path / f"{name}.crt", path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_files_mode_loads_the_given_chain_and_key(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path, "tracker.example")
    settings = TrackerSettings(tls="files", tls_cert=cert, tls_key=key, tls_ca=cert)
    security = tls.load(settings, section="tracker")
    assert security is not None
    assert security.cert_chain == cert.read_bytes()
    assert security.roots == cert.read_bytes()
    security.server_context()  # ssl takes them too


@pytest.mark.parametrize(
    ("swap", "message"),
    [
        ("missing", "tracker.tls_cert: cannot read"),
        ("not pem", "tracker.tls_cert: not a PEM certificate chain"),
        ("other key", "tracker.tls_key: it is not the key of the first certificate"),
        ("encrypted", "tracker.tls_key: an encrypted key"),
    ],
)
def test_files_mode_names_the_setting_of_a_bad_file(
    tmp_path: Path, swap: str, message: str
) -> None:
    cert, key = _self_signed(tmp_path, "a.example")
    if swap == "missing":
        cert = tmp_path / "nowhere.crt"
    elif swap == "not pem":
        cert.write_text("hello")
    elif swap == "other key":
        _, key = _self_signed(tmp_path, "b.example")
    else:
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
        key.write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
    with pytest.raises(ConfigError, match=message):
        tls.load(TrackerSettings(tls="files", tls_cert=cert, tls_key=key), section="tracker")
