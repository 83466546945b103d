"""The images' SBOMs (havre.host.sbom): written with cyclonedx-py for real, read back for
``havre status``. What the image really holds is listed (its ``pip list``), each package with
the sha256 its lock file gave it, and the image id it describes."""

from __future__ import annotations

import hashlib
import json

import pytest

from havre.host.sbom import locked_hashes, read_sbom, requirements_with_hashes, write

H1, H2 = "1" * 64, "2" * 64
LOCK = f"""# source-sha256: {"0" * 64}
pyyaml==6.0.4 \\
    --hash=sha256:{H1}
six==1.17.0 \\
    --hash=sha256:{H2}
"""
INSTALLED = "PyYAML==6.0.4\nhavre==0.1.0\npip==26.3\n"  # six was removed after the install
IMAGE_ID = "sha256:" + "ab" * 32


def test_locked_hashes_reads_pip_hash_format():
    assert locked_hashes(LOCK) == {("pyyaml", "6.0.4"): [H1], ("six", "1.17.0"): [H2]}


def test_requirements_keep_what_is_installed_with_its_locked_hash():
    text = requirements_with_hashes(INSTALLED, LOCK, {("havre", "0.1.0"): "3" * 64})
    assert text.splitlines() == [
        f"havre==0.1.0 --hash=sha256:{'3' * 64}",
        "pip==26.3",  # the venv's own pip: not from the lock, listed without a hash
        f"pyyaml==6.0.4 --hash=sha256:{H1}",
    ]


@pytest.fixture
def written(tmp_path):
    wheel = tmp_path / "havre-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"not really a wheel")
    out = tmp_path / "sbom" / "egress.cdx.json"
    write(
        name="egress",
        tag="havre/egress:0.1.0",
        image_id=IMAGE_ID,
        installed=INSTALLED,
        lock_text=LOCK,
        output=out,
        wheels=[wheel],
    )
    return out, hashlib.sha256(wheel.read_bytes()).hexdigest()


def test_write_gives_cyclonedx_json_of_the_image(written):
    out, wheel_sha = written
    bom = json.loads(out.read_text())
    assert bom["bomFormat"] == "CycloneDX"
    component = bom["metadata"]["component"]
    assert (component["type"], component["name"], component["version"]) == (
        "container",
        "havre/egress",
        "0.1.0",
    )
    assert component["hashes"] == [{"alg": "SHA-256", "content": "ab" * 32}]
    by_name = {c["name"]: c for c in bom["components"]}
    assert set(by_name) == {"havre", "pip", "pyyaml"}  # six is not in the image

    def sha(name):
        refs = by_name[name].get("externalReferences", [])
        return [h["content"] for r in refs for h in r.get("hashes", [])]

    assert sha("pyyaml") == [H1] and sha("havre") == [wheel_sha] and sha("pip") == []
    assert by_name["pyyaml"]["purl"] == "pkg:pypi/pyyaml@6.0.4"


def test_read_sbom_summarises_and_says_which_image_it_describes(written):
    out, _ = written
    info = read_sbom("havre/egress:0.1.0", out.parent)
    assert info is not None
    assert (info.image_tag, info.image_id, info.components) == (
        "havre/egress:0.1.0",
        IMAGE_ID,
        3,
    )
    assert info.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    assert info.describes(IMAGE_ID) and not info.describes("sha256:" + "cd" * 32)
    assert read_sbom("egress", out.parent) == info
    assert read_sbom("havre/hub:0.1.0", out.parent) is None  # none written


def test_a_file_that_is_not_our_sbom_is_refused_with_a_sentence(tmp_path):
    (tmp_path / "hub.cdx.json").write_text('{"bomFormat": "CycloneDX"}')
    with pytest.raises(ValueError, match=r"hub.cdx.json is not an SBOM written by images/build"):
        read_sbom("hub", tmp_path)
