"""`python -m export.signing`: make the key pair that signs bundles, and sign a bundle with it.

    python -m export.signing new-key keys/mnist-edge-signing     # writes the key and key.pub
    python -m export.signing sign artifacts/mnist-edge-bundle.tar.gz --key keys/mnist-edge-signing

`make signing-key` and `make bundle SIGNING_KEY=...` run these. The device trusts the `.pub` line
(ROOT/trusted-keys, see docs/install.md). The cryptography itself is edge_runtime.install.signing.
"""

import pathlib
import sys

from edge_runtime import errors
from edge_runtime.cli.options import OneLineParser
from edge_runtime.install import signing


def main(argv=None):
    parser = OneLineParser(prog="python -m export.signing", description=__doc__.splitlines()[0])
    actions = parser.add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    new_key = actions.add_parser("new-key", help="write an ed25519 key pair: PATH (private, 0600) and PATH.pub")
    new_key.add_argument("path", type=pathlib.Path)
    new_key.add_argument("--comment", default="mnist-edge bundle signing")
    sign = actions.add_parser("sign", help="write FILE.sig, the detached signature of FILE")
    sign.add_argument("file", type=pathlib.Path)
    sign.add_argument("--key", type=pathlib.Path, required=True, help="the private key")
    arguments = parser.parse_args(argv)
    try:
        if arguments.action == "new-key":
            private, public, fingerprint = signing.generate_key_pair(arguments.path, arguments.comment)
            print(f"Wrote {private} (keep it secret) and {public} ({fingerprint}): "
                  f"put {public.name}'s line into the device's trusted-keys file")
        else:
            if not arguments.file.is_file():
                raise errors.InputError(f"{arguments.file}: no such file to sign")
            written, fingerprint = signing.sign_file(arguments.file, arguments.key)
            print(f"Wrote {written} (signed by {fingerprint})")
    except errors.EdgeRuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return errors.EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
