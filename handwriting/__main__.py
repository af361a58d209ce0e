"""`python -m handwriting`: write the handwriting set if needed, then report predict vs the reference."""

import argparse
import hashlib
import json
import pathlib
import shutil
import sys

from edge_runtime import errors


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m handwriting", description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=pathlib.Path, default=pathlib.Path("artifacts"))
    parser.add_argument("--model", type=pathlib.Path, default=None, help="default: the int8 model ARTIFACTS/manifest.json lists")
    parser.add_argument("--set-dir", type=pathlib.Path, default=None,
                        help="default: ARTIFACTS/handwriting (written if missing; a folder with your own "
                             "labels.csv (file,label,style,writer) is evaluated as it is)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--per-digit", type=int, default=None, help="pictures of each digit in each style")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="also write the figures here")
    parser.add_argument("--min-accuracy", type=float, default=0.0,
                        help="exit 3 when predict's overall accuracy (%%) is below this, or below the reference's")
    return parser.parse_args(argv)


def set_fingerprint(seed, per_digit):
    """What the set depends on: the generator's code and settings (fonts come from their packages)."""
    from handwriting import generate

    digest = hashlib.sha256(f"{seed} {per_digit}".encode())
    for path in sorted(pathlib.Path(generate.__file__).parent.glob("*.py")):
        if path.name in ("generate.py", "strokes.py"):
            digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_set(directory, seed, per_digit):
    """Write the set into `directory` unless the one there was made by the same code and settings.

    A directory with a labels.csv but no set.json is someone's own labelled set: used as it is.
    """
    from handwriting import generate

    stamp = directory / "set.json"
    fingerprint = set_fingerprint(seed, per_digit)
    if not stamp.is_file() and (directory / generate.LABELS_FILE).is_file():
        return
    if stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint:
        return
    if stamp.is_file():
        shutil.rmtree(directory)  # made by an older generator or other settings: ours to replace
    print(f"Writing the handwriting set to {directory} (seed {seed}, {per_digit} per digit and style)...")
    generate.generate(directory, seed=seed, per_digit=per_digit,
                      progress=lambda style, count: print(f"  {style:<7} {count:5d} images", flush=True))
    stamp.write_text(json.dumps({"fingerprint": fingerprint, "seed": seed, "per_digit": per_digit}) + "\n")


def main(argv=None):
    arguments = parse_args(argv)
    from edge_runtime import bundle
    from edge_runtime.classifier import Classifier
    from handwriting import evaluate, generate

    seed = generate.DEFAULT_SEED if arguments.seed is None else arguments.seed
    per_digit = generate.DEFAULT_PER_DIGIT if arguments.per_digit is None else arguments.per_digit
    set_dir = arguments.set_dir or arguments.artifacts / "handwriting"
    try:
        model_path = arguments.model or bundle.model_path(arguments.artifacts)
        ensure_set(set_dir, seed, per_digit)
        model = Classifier.load(model_path)
    except (FileNotFoundError, errors.EdgeRuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    def progress(name, done, total):
        if done == total or (sys.stdout.isatty() and done % 20 == 0):
            print(f"\r  {name:<9} prepared {done}/{total}", end="\n" if done == total else "", flush=True)

    result = evaluate.evaluate(set_dir, model, progress=progress)
    summary = evaluate.summarize(result)
    print(f"\n{model_path} on {len(result.samples)} handwritten digits ({set_dir}):\n")
    print(evaluate.format_table(summary))
    if arguments.json:
        arguments.json.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    overall = summary["rows"]["all"]
    if 100 * overall["candidate_accuracy"] < arguments.min_accuracy:
        print(f"error: predict's accuracy {100 * overall['candidate_accuracy']:.1f}% is below the floor "
              f"{arguments.min_accuracy:.1f}%", file=sys.stderr)
        return errors.EXIT_FAILED_CHECK
    if arguments.min_accuracy and overall["candidate_accuracy"] < overall["reference_accuracy"]:
        print("error: predict is less accurate than the reference preparation", file=sys.stderr)
        return errors.EXIT_FAILED_CHECK
    return 0


if __name__ == "__main__":
    sys.exit(main())
