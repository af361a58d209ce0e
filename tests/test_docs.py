"""The documentation: the bundle's DEPLOY.md is docs/device.md, and the pages' links lead somewhere."""

import hashlib
import json
import pathlib
import re
import tarfile
import tomllib

import pytest

from edge_runtime import manifest
from export import bundle
from tests.conftest import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", REPO_ROOT / "CHANGELOG.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
# A Markdown link or image: [text](target) or ![alt](target).
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def wheel_name():
    """The file name pip gives this checkout's wheel, from pyproject.toml's name and version."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return f"{project['name'].replace('-', '_')}-{project['version']}-py3-none-any.whl"


def fake_export(directory):
    """A small export the bundle accepts: three files with the device roles and their manifest."""
    contents = {"model_int8.tflite": b"int8 model", "model_f32.tflite": b"float model", "test_set.npz": b"test set"}
    roles = {"model_int8.tflite": ("int8-model", "int8"), "model_f32.tflite": ("float-reference", "float32")}
    files = {}
    for name, data in contents.items():
        (directory / name).write_bytes(data)
        entry = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        if name in roles:
            entry.update(role=roles[name][0], precision=roles[name][1], test_accuracy=0.98)
        else:
            entry.update(role="test-set", images=10)
        files[name] = entry
    document = {
        "format_version": manifest.FORMAT_VERSION,
        "source_model": {"file": "model.keras", "test_accuracy": 0.98},
        "input": {"shape": [28, 28, 1], "layout": "NHWC", "scaling": "uint8 / 255"},
        "classes": [str(digit) for digit in range(10)],
        "class_names_source": "MNIST digits",
        "preparation": {"name": "digit", "polarity": "light-on-dark"},
        "data": {"source": "a test"},
        "calibration": {"images": 300, "seed": 0},
        "tolerances": {"int8_max_accuracy_drop_points": 0.5, "float_min_agreement": 0.999},
        "files": files,
    }
    (directory / manifest.MANIFEST_NAME).write_text(json.dumps(document))
    return directory


@pytest.fixture
def without_pip(monkeypatch):
    """Stand in for pip's wheel build (slow, and not what these tests are about) with a named file."""
    def build_wheel(destination):
        wheel = pathlib.Path(destination) / wheel_name()
        wheel.write_bytes(b"a wheel")
        return wheel

    monkeypatch.setattr(bundle, "build_wheel", build_wheel)


def test_the_bundle_ships_the_device_page_as_its_deploy_md(tmp_path, without_pip):
    export_dir = fake_export(tmp_path)
    path = bundle.build_bundle(export_dir, tmp_path / "bundle.tar.gz")
    with tarfile.open(path) as archive:
        deploy = archive.extractfile(f"{bundle.BUNDLE_DIR_NAME}/DEPLOY.md").read()
    assert deploy == (REPO_ROOT / "docs" / "device.md").read_bytes()


def test_the_device_page_installs_the_wheel_this_checkout_builds():
    assert wheel_name() in (REPO_ROOT / "docs" / "device.md").read_text()


def test_a_missing_device_page_is_refused_in_one_line(tmp_path, without_pip, monkeypatch):
    monkeypatch.setattr(bundle, "DEVICE_PAGE", tmp_path / "docs" / "device.md")
    with pytest.raises(RuntimeError) as raised:
        bundle.build_bundle(fake_export(tmp_path), tmp_path / "bundle.tar.gz")
    assert str(raised.value) == f"{tmp_path / 'docs' / 'device.md'}: missing; the bundle ships it as DEPLOY.md"
    assert not (tmp_path / "bundle.tar.gz").exists()


def test_a_device_page_naming_another_wheel_is_refused(tmp_path, without_pip, monkeypatch):
    page = tmp_path / "device.md"
    page.write_text('pip install "mnist-edge-bundle/mnist_edge-0.0.1-py3-none-any.whl[edge]"\n')
    monkeypatch.setattr(bundle, "DEVICE_PAGE", page)
    with pytest.raises(RuntimeError, match=re.escape(f"do not name {wheel_name()}, the wheel being bundled")):
        bundle.build_bundle(fake_export(tmp_path), tmp_path / "bundle.tar.gz")


def anchors(page):
    """The anchors GitHub makes for a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    found, in_code = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            heading = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", heading).replace(" ", "-"))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO_ROOT).as_posix())
def test_every_link_within_the_repository_finds_its_file_and_heading(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        linked = page.parent / path if path else page
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    assert broken == [], f"{page.name} has links to no file or no heading"


def test_the_readme_stays_a_front_door():
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 160, f"README.md has {len(lines)} lines: reference belongs in docs/, history in CHANGELOG.md"
