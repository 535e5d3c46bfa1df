"""Encryption: TLS for gRPC between peers and HTTPS for the tracker, from the settings.

Two modes (``tls`` in the config):

``"auto"``
    No certificate work for the user. The network key determines a network CA: its
    private key is derived from the key (HKDF-SHA256 to a P-256 scalar) and its
    certificate has a fixed subject, serial and validity and a deterministic (RFC 6979)
    signature, so every process of the network makes the byte-identical trust anchor.
    Each process then makes its own leaf key and certificate, signed by that CA, kept in
    memory only, and trusts nothing but that CA. Only holders of the network key can
    make a certificate the others accept: a stranger can neither read the traffic nor
    stand in the middle. Between peers the TLS is mutual: a peer's gRPC server refuses
    a handshake from anyone without such a certificate. Names carry no meaning here
    (being in the network is the identity), so every leaf names ``p2pshare`` and
    clients check that name, whatever address they dialled.

``"files"``
    ``tls_cert`` and ``tls_key``: a PEM chain and key, for instance from a public CA.
    Others are verified against ``tls_ca`` (default: the system roots; gRPC's own for
    peers) and by the host name or IP address that was dialled, as a browser would.

What this module gives a process: gRPC server credentials, channel credentials and
options, an ``ssl.SSLContext`` for the tracker's HTTPS server and one for its clients.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from p2pshare.config import PeerSettings, TrackerSettings

if TYPE_CHECKING:
    import grpc
from p2pshare.errors import ConfigError

__all__ = ["AUTO_NAME", "Tls", "issue_leaf", "load", "network_ca"]

AUTO_NAME = "p2pshare"
"""The name every certificate of ``tls = "auto"`` carries, and the one clients check."""

_CURVE = ec.SECP256R1()
# the order of P-256's base point: a private scalar lies in [1, n-1]
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
# a fixed date, so every process makes the same CA certificate
_CA_NOT_BEFORE = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
# RFC 5280 4.1.2.5: 99991231235959Z means "no well-defined expiration date"
_CA_NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
# a leaf is made at every start; these bounds only need to cover clock skew and uptime
_LEAF_SKEW = datetime.timedelta(days=1)
_LEAF_LIFETIME = datetime.timedelta(days=3650)


def _ca_key(network_key: str) -> ec.EllipticCurvePrivateKey:
    """The network CA's private key: the same for every holder of ``network_key``.

    HKDF with its own ``info`` keeps it independent of anything else derived from the
    key (such as call authentication). 384 bits reduced modulo n-1 leave a bias of
    about 2^-128, far below anything measurable."""
    okm = HKDF(
        algorithm=hashes.SHA256(), length=48, salt=b"p2pshare tls", info=b"network CA key v1"
    ).derive(network_key.encode())
    scalar = int.from_bytes(okm, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, _CURVE)


def network_ca(network_key: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The network CA of ``network_key``: its key and its self-signed certificate,
    byte for byte the same in every process that holds the key."""
    key = _ca_key(network_key)
    public = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    # a name of its own per network, so a handshake with another network's
    # certificate fails as "unknown CA" rather than as a bad signature
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"p2pshare network {ski.digest[:6].hex()}")]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(int.from_bytes(ski.digest[:16], "big") >> 1 or 1)
        .not_valid_before(_CA_NOT_BEFORE)
        .not_valid_after(_CA_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    )
    return key, cert


def issue_leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    names: Iterable[str],
    *,
    now: datetime.datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A fresh key and a certificate for it, signed by the CA, naming ``AUTO_NAME`` and
    ``names`` (host names or IP addresses), good as server and as client."""
    key = ec.generate_private_key(_CURVE)
    sans: list[x509.GeneralName] = [x509.DNSName(AUTO_NAME)]
    for name in dict.fromkeys(names):
        sans.append(_general_name(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, AUTO_NAME)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _LEAF_SKEW)
        .not_valid_after(now + _LEAF_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class Tls:
    """What one process presents and whom it trusts (PEM), and how to check names."""

    mode: Literal["auto", "files"]
    cert_chain: bytes
    private_key: bytes
    roots: bytes | None
    """PEM certificates that others must chain to; ``None``: the system's."""

    # -- gRPC (peers; imported here, so a tracker with HTTPS does not load it) ----------

    def server_credentials(self) -> grpc.ServerCredentials:
        """For ``add_secure_port``; in auto mode callers must show a network certificate."""
        import grpc

        mutual = self.mode == "auto"
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.roots if mutual else None,
            require_client_auth=mutual,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        import grpc

        if self.mode == "auto":
            return grpc.ssl_channel_credentials(
                root_certificates=self.roots,
                private_key=self.private_key,
                certificate_chain=self.cert_chain,
            )
        return grpc.ssl_channel_credentials(root_certificates=self.roots)

    def channel_options(self) -> list[tuple[str, int | str]]:
        """In auto mode, check the network's name instead of the address dialled."""
        if self.mode == "auto":
            return [("grpc.ssl_target_name_override", AUTO_NAME)]
        return []

    # -- HTTPS (tracker) ---------------------------------------------------------------

    def server_context(self) -> ssl.SSLContext:
        """For the tracker's HTTPS server."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        _load_chain(context, self.cert_chain, self.private_key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """For clients of the tracker (httpx ``verify=``)."""
        if self.roots is None:
            context = ssl.create_default_context()
        else:
            context = ssl.create_default_context(cadata=self.roots.decode("ascii"))
        if self.mode == "auto":
            # the CA alone decides: every certificate it signs names p2pshare
            context.check_hostname = False
        return context


def _load_chain(context: ssl.SSLContext, chain: bytes, key: bytes) -> None:
    """``load_cert_chain`` from memory: Python's ssl reads only files, so the PEMs are
    written to a private temporary folder (0700, files 0600) and removed at once."""
    with tempfile.TemporaryDirectory(prefix="p2pshare-tls-") as folder:
        paths = []
        for name, data in (("chain.pem", chain), ("key.pem", key)):
            path = os.path.join(folder, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            paths.append(path)
        context.load_cert_chain(paths[0], paths[1])


def load(
    settings: TrackerSettings | PeerSettings, *, section: str, names: Iterable[str] = ()
) -> Tls | None:
    """The TLS of a process from its settings (``None`` when ``tls`` is "off"); in auto
    mode its leaf also names ``names``. Unreadable or mismatched files are a
    ``ConfigError`` naming the key (in ``section``)."""
    if settings.tls == "off":
        return None
    if settings.tls == "auto":
        if settings.network_key is None:
            raise ConfigError(f'{section}.tls: "auto" needs a network_key')
        ca_key, ca_cert = network_ca(settings.network_key)
        usable = [n for n in names if n and n not in ("0.0.0.0", "::")]
        now = datetime.datetime.now(datetime.UTC)
        leaf_key, leaf = issue_leaf(ca_key, ca_cert, usable, now=now)
        return Tls(
            mode="auto",
            cert_chain=leaf.public_bytes(serialization.Encoding.PEM),
            private_key=_pem_key(leaf_key),
            roots=ca_cert.public_bytes(serialization.Encoding.PEM),
        )
    if settings.tls_cert is None or settings.tls_key is None:
        raise ConfigError(f'{section}.tls: "files" needs tls_cert and tls_key')
    chain = _read(settings.tls_cert, f"{section}.tls_cert")
    key = _read(settings.tls_key, f"{section}.tls_key")
    roots = _read(settings.tls_ca, f"{section}.tls_ca") if settings.tls_ca else None
    _check_files(chain, key, roots, section)
    return Tls(mode="files", cert_chain=chain, private_key=key, roots=roots)


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from exc


def _check_files(chain: bytes, key: bytes, roots: bytes | None, section: str) -> None:
    """Fail at start, with the key's name, on what gRPC and ssl would only report later
    and obscurely: no certificate, an unreadable or encrypted key, a key of another
    certificate."""
    try:
        certs = x509.load_pem_x509_certificates(chain)
    except ValueError as exc:
        raise ConfigError(f"{section}.tls_cert: not a PEM certificate chain") from exc
    if roots is not None:
        try:
            x509.load_pem_x509_certificates(roots)
        except ValueError as exc:
            raise ConfigError(f"{section}.tls_ca: not PEM certificates") from exc
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except TypeError as exc:  # the key is encrypted
        raise ConfigError(
            f"{section}.tls_key: an encrypted key; give it unencrypted (mode 0600)"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{section}.tls_key: not a PEM private key") from exc
    if private.public_key() != certs[0].public_key():
        raise ConfigError(
            f"{section}.tls_key: it is not the key of the first certificate in tls_cert"
        )
