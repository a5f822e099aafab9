"""The certificate and key a record is signed with.

The user's own (Settings, `--sign-cert`/`--sign-key`, or REPLICHECK_SIGN_CERT/REPLICHECK_SIGN_KEY)
when given; otherwise a local certificate made once per install: a small certificate authority and
an end-entity certificate it issued (c2pa-rs refuses a bare self-signed certificate), kept in a
folder only the owner can open. Keys never leave the machine, and a key file that other users can
read is refused rather than used.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lib_replicheck.provenance import ProvenanceError

CERT_ENV, KEY_ENV = "REPLICHECK_SIGN_CERT", "REPLICHECK_SIGN_KEY"
FOLDER = "signing"
CA_FILE, CHAIN_FILE, KEY_FILE = "local-ca.pem", "signer-chain.pem", "signer.key"
#: The most bytes read of a certificate chain or key file.
MAX_PEM_BYTES = 256 * 1024
LOCAL_NAME = "replicheck local signer"


@dataclass(frozen=True)
class Credentials:
    chain_pem: bytes  # the end-entity certificate first, then its issuers
    key_pem: bytes
    alg: str  # es256, es384, es512, ps256, ed25519
    origin: str  # "local" (this install's certificate) or the certificate file's path
    tsa_url: str | None = None  # a timestamp authority, only when the user names one


def read_pem(path: Path, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_PEM_BYTES:
            raise ProvenanceError(f"{path}: the {what} file is {size} bytes, more than a {what} can be "
                                  f"({MAX_PEM_BYTES}); is it the right file?")
        return path.read_bytes()
    except OSError as e:
        raise ProvenanceError(f"{path}: the {what} file cannot be read ({e.strerror})") from None


def check_key_permissions(path: Path) -> None:
    """A private key that other users can read is no longer private: refuse it, saying how to fix it."""
    if os.name != "posix":
        return
    try:
        mode = path.stat().st_mode & 0o777
    except OSError as e:
        raise ProvenanceError(f"{path}: the key file cannot be read ({e.strerror})") from None
    if mode & 0o077:
        raise ProvenanceError(f"{path}: the key file can be read by other users (mode {mode:03o}); it is not used. "
                              f"Run `chmod 600 {path}` and sign again")


def _alg_of(key) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, ec.EllipticCurvePrivateKey):
        algs = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        if key.curve.name in algs:
            return algs[key.curve.name]
        raise ValueError(f"the curve {key.curve.name} is not one C2PA signs with (P-256, P-384 or P-521)")
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise ValueError(f"a {type(key).__name__} is not a key type C2PA signs with (EC, RSA or Ed25519)")


def load_files(cert_path: str | Path, key_path: str | Path, *, origin: str | None = None,
               tsa_url: str | None = None) -> Credentials:
    """The certificate chain and key in two PEM files, checked: the key is private to its owner,
    unencrypted, of a type C2PA signs with, and belongs to the chain's first certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path = Path(cert_path).expanduser(), Path(key_path).expanduser()
    check_key_permissions(key_path)
    key_pem = read_pem(key_path, "key")
    chain_pem = read_pem(cert_path, "certificate")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ProvenanceError(f"{key_path}: the key is protected by a passphrase; replicheck signs unattended, so "
                              "give it a key file without one (kept with mode 600)") from None
    except ValueError:
        raise ProvenanceError(f"{key_path}: not a PEM private key") from None
    try:
        alg = _alg_of(key)
    except ValueError as e:
        raise ProvenanceError(f"{key_path}: {e}") from None
    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise ProvenanceError(f"{cert_path}: not a PEM certificate chain") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if certs[0].public_key().public_bytes(serialization.Encoding.DER, pub) != \
            key.public_key().public_bytes(serialization.Encoding.DER, pub):
        raise ProvenanceError(f"{key_path}: this key does not belong to the first certificate of {cert_path}")
    return Credentials(chain_pem, key_pem, alg, origin or str(cert_path), tsa_url or None)


def user_paths(cert: str | Path | None = None, key: str | Path | None = None) -> tuple[Path, Path] | None:
    """The user's certificate and key files: those given, else the environment's; None for neither.
    One without the other is an error."""
    cert = cert or os.environ.get(CERT_ENV) or None
    key = key or os.environ.get(KEY_ENV) or None
    if not cert and not key:
        return None
    if not cert or not key:
        raise ProvenanceError(f"a signing certificate needs its key and the key its certificate: give both "
                              f"(--sign-cert and --sign-key, or {CERT_ENV} and {KEY_ENV})")
    return Path(cert).expanduser(), Path(key).expanduser()


def credentials(home: str | Path, cert: str | Path | None = None, key: str | Path | None = None,
                tsa_url: str | None = None) -> Credentials:
    """The user's certificate and key when given (or in the environment), else this install's local
    certificate under `home`, made on first use."""
    given = user_paths(cert, key)
    if given is not None:
        return load_files(*given, tsa_url=tsa_url)
    return local(home, tsa_url=tsa_url)


def local_folder(home: str | Path) -> Path:
    return Path(home).expanduser() / FOLDER


def local(home: str | Path, tsa_url: str | None = None) -> Credentials:
    """This install's local certificate under `home`, made on first use (two processes starting at
    once make one folder each and the first rename wins)."""
    folder = local_folder(home)
    if not (folder / KEY_FILE).is_file():
        _make_local(folder)
    return load_files(folder / CHAIN_FILE, folder / KEY_FILE, origin="local", tsa_url=tsa_url)


def local_ca(home: str | Path) -> bytes | None:
    """The local certificate authority's certificate (PEM), if this install has made one."""
    path = local_folder(home) / CA_FILE
    try:
        return read_pem(path, "certificate") if path.is_file() else None
    except ProvenanceError:
        return None


def _make_local(folder: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER}.", dir=folder.parent))  # mode 0700
    try:
        ca_pem, chain_pem, key = _issue()
        (tmp / CA_FILE).write_bytes(ca_pem)
        (tmp / CHAIN_FILE).write_bytes(chain_pem)
        fd = os.open(tmp / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / KEY_FILE).is_file():  # not another process's folder: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _issue():
    """A local certificate authority (P-256, 20 years) and an end-entity certificate it issued for
    signing (P-256, 10 years, digitalSignature, emailProtection as C2PA's trust lists expect)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "replicheck (local, unverified)")])

    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("replicheck local CA")).issuer_name(name("replicheck local CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=20 * 365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    ee = (x509.CertificateBuilder().subject_name(name(LOCAL_NAME)).issuer_name(ca.subject)
          .public_key(key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=10 * 365))
          .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
          .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
          .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return ca.public_bytes(pem), ee.public_bytes(pem) + ca.public_bytes(pem), key


def local_serial(home: str | Path) -> str | None:
    """The serial number (decimal) of this install's local signing certificate, if it has one."""
    from cryptography import x509

    path = local_folder(home) / CHAIN_FILE
    try:
        return str(x509.load_pem_x509_certificates(read_pem(path, "certificate"))[0].serial_number) \
            if path.is_file() else None
    except (ProvenanceError, ValueError):
        return None
