"""Signed bundles: keys, detached signatures, the trusted-keys file, and install's refusals before
anything on the device changes (no root directory, no lock, no state)."""

import json
import re
import shutil
import subprocess

import pytest

from conftest import run_cli
from edge_runtime.install import signing


@pytest.fixture
def signed(tmp_path):
    """A file signed by a new key, the key's trusted-keys file, and another key's."""
    _, public, fingerprint = signing.generate_key_pair(tmp_path / "keys" / "signer")
    _, other_public, _ = signing.generate_key_pair(tmp_path / "keys" / "other")
    bundle = tmp_path / "mnist-edge-bundle.tar.gz"
    bundle.write_bytes(b"not really a tarball, but signed bytes all the same\n" * 100)
    signing.sign_file(bundle, tmp_path / "keys" / "signer")
    return {"bundle": bundle, "trusted": public, "other": other_public, "fingerprint": fingerprint}


def test_a_good_signature_names_its_key_and_the_fingerprint_is_ssh_keygens(signed):
    assert signing.verify_bundle(signed["bundle"], signed["trusted"]) == (signed["fingerprint"], "mnist-edge bundle signing")
    if shutil.which("ssh-keygen"):
        listed = subprocess.run(["ssh-keygen", "-l", "-f", str(signed["trusted"])], capture_output=True, text=True)
        assert listed.stdout.split()[1] == signed["fingerprint"]


def test_one_changed_byte_is_a_bad_signature(signed):
    data = bytearray(signed["bundle"].read_bytes())
    data[100] ^= 1
    signed["bundle"].write_bytes(bytes(data))
    with pytest.raises(signing.SignatureError, match=re.escape(f"bad signature from trusted key {signed['fingerprint']}")):
        signing.verify_bundle(signed["bundle"], signed["trusted"])


def test_another_key_is_refused_naming_the_signer(signed):
    with pytest.raises(signing.SignatureError, match=re.escape(f"signed by {signed['fingerprint']}, which is not in")):
        signing.verify_bundle(signed["bundle"], signed["other"])


def test_no_signature_file_is_unsigned(signed):
    signing.signature_path(signed["bundle"]).unlink()
    with pytest.raises(signing.SignatureError, match=r"not signed \(no mnist-edge-bundle.tar.gz.sig beside it\)"):
        signing.verify_bundle(signed["bundle"], signed["trusted"])


def test_a_trusted_keys_file_with_a_bad_line_names_the_line(signed, tmp_path):
    keys = tmp_path / "trusted-keys"
    keys.write_text("# the release key\n" + signed["trusted"].read_text() + "ssh-ed25519 not-base64!\n")
    with pytest.raises(signing.SignatureError, match=r"trusted-keys, line 3: not an OpenSSH public key line"):
        signing.read_trusted_keys(keys)
    keys.write_text("# only a comment\n")
    with pytest.raises(signing.SignatureError, match="holds no public key"):
        signing.read_trusted_keys(keys)


def test_a_signature_of_another_format_is_refused(signed):
    signing.signature_path(signed["bundle"]).write_text(json.dumps({"format": "minisign", "signature": "AAAA"}))
    with pytest.raises(signing.SignatureError, match="not a mnist-edge-signature 1 signature"):
        signing.verify_bundle(signed["bundle"], signed["trusted"])


def test_new_key_refuses_to_overwrite(tmp_path):
    signing.generate_key_pair(tmp_path / "key")
    with pytest.raises(signing.SignatureError, match="a key is already there"):
        signing.generate_key_pair(tmp_path / "key")
    assert oct((tmp_path / "key").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("case", ["unsigned", "bad signature", "other key"])
def test_install_refuses_in_one_line_and_changes_nothing(signed, tmp_path, case):
    root = tmp_path / "device" / "opt-mnist-edge"
    trusted = signed["other"] if case == "other key" else signed["trusted"]
    if case == "unsigned":
        signing.signature_path(signed["bundle"]).unlink()
    elif case == "bad signature":
        signed["bundle"].write_bytes(signed["bundle"].read_bytes() + b"appended")
    result = run_cli("-m", "edge_runtime", "install", str(signed["bundle"]), "--root", str(root),
                     "--trusted-keys", str(trusted), timeout=60)
    expected = {"unsigned": "not signed", "bad signature": "bad signature", "other key": "which is not in"}[case]
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and expected in result.stderr
    assert not root.parent.exists()  # no root, no lock, no state


def test_export_signing_cli_writes_a_signature_the_device_accepts(tmp_path):
    made = run_cli("-m", "export.signing", "new-key", str(tmp_path / "keys" / "release"), timeout=60)
    assert made.returncode == 0 and "SHA256:" in made.stdout, made.stderr
    target = tmp_path / "bundle.tar.gz"
    target.write_bytes(b"bytes")
    signed = run_cli("-m", "export.signing", "sign", str(target), "--key", str(tmp_path / "keys" / "release"), timeout=60)
    assert signed.returncode == 0, signed.stderr
    assert signing.verify_bundle(target, tmp_path / "keys" / "release.pub")[0] in made.stdout
