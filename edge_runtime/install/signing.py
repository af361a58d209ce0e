"""Signed bundles: ed25519 keys and detached signatures, through the `cryptography` package.

The workstation signs the bundle tarball with a private key; the device checks the signature
against the public keys in its trusted-keys file before it unpacks anything. Keys are OpenSSH
files (`ssh-ed25519 AAAA… comment` for the public half), so `ssh-keygen -l -f KEY.pub` shows the
same fingerprint this module prints. The signature is a small JSON file beside the tarball,
`<bundle>.sig`, holding the signer's fingerprint and the ed25519 signature of the tarball's bytes.

`cryptography` is imported inside the functions that need it: it is the optional `[install]` extra
(or Debian's python3-cryptography), and nothing else of the runtime needs it.
"""

import base64
import hashlib
import json
import pathlib

from edge_runtime import atomic_files, errors

SIGNATURE_SUFFIX = ".sig"
SIGNATURE_FORMAT = "mnist-edge-signature 1"
ALGORITHM = "ed25519"


class SignatureError(errors.EdgeRuntimeError):
    """A bundle is unsigned, its signature is bad, or its signer is not trusted."""


def _cryptography():
    """The pieces of `cryptography` this module uses; SignatureError naming the fix when it is missing."""
    try:
        from cryptography import exceptions
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise SignatureError("signed bundles need the 'cryptography' package: pip install 'mnist-edge[install]' "
                             "(or apt install python3-cryptography in a venv made with --system-site-packages)") from None
    return exceptions, serialization, ed25519


def signature_path(bundle):
    """Where the detached signature of `bundle` lives: the same name with `.sig` added."""
    bundle = pathlib.Path(bundle)
    return bundle.with_name(bundle.name + SIGNATURE_SUFFIX)


def public_key_line(public_key, comment=""):
    """`public_key` (an Ed25519PublicKey) as one OpenSSH line: `ssh-ed25519 AAAA… comment`."""
    _, serialization, _ = _cryptography()
    line = public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {comment}".rstrip()


def fingerprint(public_key):
    """The key's fingerprint as ssh-keygen -l prints it: `SHA256:` and the unpadded base64 of its blob's sha256."""
    _, serialization, _ = _cryptography()
    blob = base64.b64decode(public_key.public_bytes(serialization.Encoding.OpenSSH,
                                                    serialization.PublicFormat.OpenSSH).split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def generate_key_pair(private_path, comment="mnist-edge bundle signing"):
    """Write a new ed25519 key pair: the private key (OpenSSH format, mode 0600) at `private_path`
    and the public key line at `private_path` + `.pub`. Refuses to overwrite an existing key.

    Returns: (private path, public path, fingerprint). Raises: SignatureError when a key is there.
    """
    _, serialization, ed25519 = _cryptography()
    private_path = pathlib.Path(private_path)
    public_path = private_path.with_name(private_path.name + ".pub")
    for path in (private_path, public_path):
        if path.exists():
            raise SignatureError(f"{path}: a key is already there; remove it first or choose another name")
    key = ed25519.Ed25519PrivateKey.generate()
    private_bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                      serialization.NoEncryption())
    private_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_files.atomic_output(private_path) as temporary:
        temporary.touch(mode=0o600)
        temporary.write_bytes(private_bytes)
    atomic_files.write_text_atomically(public_path, public_key_line(key.public_key(), comment) + "\n")
    return private_path, public_path, fingerprint(key.public_key())


def load_private_key(path):
    """The ed25519 private key in `path` (OpenSSH or PEM PKCS#8, unencrypted); SignatureError otherwise."""
    _, serialization, ed25519 = _cryptography()
    path = pathlib.Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SignatureError(f"{path}: cannot read the signing key: {error.strerror or error}") from None
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise SignatureError(f"{path}: not an unencrypted private key: {error}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SignatureError(f"{path}: a {type(key).__name__}, not an ed25519 key")
    return key


def sign_file(path, private_key_path):
    """Sign the file at `path` with the key at `private_key_path`; write `<path>.sig` whole or not at all.

    Returns: (signature path, the signer's fingerprint).
    """
    key = load_private_key(private_key_path)
    path = pathlib.Path(path)
    document = {
        "format": SIGNATURE_FORMAT,
        "algorithm": ALGORITHM,
        "key": fingerprint(key.public_key()),
        "file": path.name,
        "signature": base64.b64encode(key.sign(path.read_bytes())).decode(),
    }
    written = atomic_files.write_text_atomically(signature_path(path), json.dumps(document, indent=2) + "\n")
    return written, document["key"]


def read_trusted_keys(path):
    """The ed25519 public keys in a trusted-keys file (OpenSSH lines; blank lines and # comments skipped).

    Returns: {fingerprint: (public key, comment)}. Raises: SignatureError naming the file and the line.
    """
    _, serialization, ed25519 = _cryptography()
    path = pathlib.Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise SignatureError(f"{path}: no trusted-keys file (one 'ssh-ed25519 …' public key a line; "
                             "give another with --trusted-keys)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SignatureError(f"{path}: cannot read the trusted keys: {getattr(error, 'strerror', None) or error}") from None
    keys = {}
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = serialization.load_ssh_public_key(" ".join(line.split()[:2]).encode())
        except (ValueError, TypeError, IndexError):
            raise SignatureError(f"{path}, line {number}: not an OpenSSH public key line") from None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise SignatureError(f"{path}, line {number}: not an ed25519 key ({line.split()[0]})")
        keys[fingerprint(key)] = (key, " ".join(line.split()[2:]))
    if not keys:
        raise SignatureError(f"{path}: holds no public key")
    return keys


def read_signature(path):
    """The signature document in `path`: {key, signature (bytes)}. SignatureError when it is not one."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise SignatureError(f"{path}: not a readable signature: {error}") from None
    if not isinstance(document, dict) or document.get("format") != SIGNATURE_FORMAT \
            or document.get("algorithm") != ALGORITHM or not isinstance(document.get("key"), str):
        raise SignatureError(f"{path}: not a {SIGNATURE_FORMAT} signature with an ed25519 key")
    try:
        signature = base64.b64decode(document.get("signature", ""), validate=True)
    except (ValueError, TypeError):
        raise SignatureError(f"{path}: its signature is not base64") from None
    return {"key": document["key"], "signature": signature}


def verify_bundle(bundle, trusted_keys_path):
    """Check `bundle`'s detached signature against the keys in `trusted_keys_path`.

    Returns: (fingerprint, comment) of the key that signed it.
    Raises: SignatureError, one line: unsigned, unreadable signature, signed by a key that is not
    trusted, or a signature that does not match the bytes (the bundle changed after signing).
    """
    exceptions, _, _ = _cryptography()
    bundle = pathlib.Path(bundle)
    signature_file = signature_path(bundle)
    try:
        signature = read_signature(signature_file)
    except FileNotFoundError:
        raise SignatureError(f"{bundle}: not signed (no {signature_file.name} beside it); "
                             "--allow-unsigned installs it anyway, for development only") from None
    trusted = read_trusted_keys(trusted_keys_path)
    try:
        data = bundle.read_bytes()
    except OSError as error:
        raise SignatureError(f"{bundle}: cannot read: {error.strerror or error}") from None
    for key_fingerprint, (key, comment) in trusted.items():
        try:
            key.verify(signature["signature"], data)
        except exceptions.InvalidSignature:
            continue
        return key_fingerprint, comment
    if signature["key"] in trusted:
        raise SignatureError(f"{bundle}: bad signature from trusted key {signature['key']}: "
                             "the bundle or its signature changed after signing")
    raise SignatureError(f"{bundle}: signed by {signature['key']}, which is not in {trusted_keys_path}")
