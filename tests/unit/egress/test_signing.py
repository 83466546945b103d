"""Unit tests for egress.audit.signing: Ed25519 keys and signed release records."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import stat
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from egress.audit.chain import Checkpoint, EventType, canonical_json, next_event
from egress.audit.file_log import AuditFile, read_checkpoints, read_jsonl
from egress.audit.signing import (
    RECORD_SCHEMA,
    KeyFileError,
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
    public_key_path,
    release_record,
    runtime_versions,
    sign_record,
    verify_record,
)
from tests.hypothesis_budget import examples

SHA_A = hashlib.sha256(b"table 1").hexdigest()
SHA_B = hashlib.sha256(b"figure 2").hexdigest()
HEAD = Checkpoint(
    "egress-audit", 42, hashlib.sha256(b"head").hexdigest(), "2025-03-01T10:00:00.000000Z"
)
POLICY = {
    "safe_threshold": 10,
    "safe_dof_threshold": 10,
    "safe_nk_n": 2,
    "safe_nk_k": 0.9,
    "safe_pratio_p": 0.1,
    "zeros_are_disclosive": True,
    "reviews_required": 2,
}


def record_inputs(**overrides):
    inputs = {
        "request_id": "req-0007",
        "project": "hospital-stays",
        "author": "alice",
        "released_at": "2025-03-01T10:00:01.000000Z",
        "files": [
            {"path": "outputs/table_1.csv", "sha256": SHA_A, "size": 1234},
            {"path": "outputs/figure_2.png", "sha256": SHA_B, "size": 56789},
        ],
        "votes": [
            {"reviewer": "carol", "file": "outputs/table_1.csv", "vote": "approved"},
            {"reviewer": "bob", "file": "outputs/table_1.csv", "vote": "approved"},
            {"reviewer": "bob", "file": "outputs/figure_2.png", "vote": "approved"},
            {"reviewer": "carol", "file": "outputs/figure_2.png", "vote": "approved"},
        ],
        "public_comments": [
            {"author": "bob", "time": "2025-03-01T09:00:00.000000Z", "text": "Zellen ≥ 10 ✓"},
            {"author": "alice", "time": "2025-03-01T09:05:00.000000Z", "text": "Thanks"},
        ],
        "sdc_policy": POLICY,
        "audit_head": HEAD,
        "tool_versions": {"acro": "1.0.2"},
        "released_by": "carol",
        "havre_version": "0.1.0",
        "python_version": "3.11.7",
    }
    inputs.update(overrides)
    return inputs


@pytest.fixture(scope="module")
def private_key():
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def signed(private_key):
    return sign_record(release_record(**record_inputs()), private_key)


# --------------------------------------------------------------------------------------------
# Keys


def test_generate_key_writes_private_0600_and_public_0644(tmp_path):
    path = tmp_path / "egress-signing.pem"
    public = generate_key(path)
    pub_path = tmp_path / "egress-signing.pem.pub"
    assert public_key_path(path) == str(pub_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub_path.stat().st_mode) == 0o644
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pub_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    private = load_private_key(path)
    assert key_id(private) == key_id(public) == key_id(load_public_key(pub_path))
    # No temporary files left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "egress-signing.pem",
        "egress-signing.pem.pub",
    ]


@pytest.mark.parametrize("umask", [0o000, 0o077, 0o022])
def test_key_modes_do_not_depend_on_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        generate_key(tmp_path / "key.pem")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "key.pem.pub").stat().st_mode) == 0o644


def test_generate_twice_never_overwrites(tmp_path):
    path = tmp_path / "key.pem"
    generate_key(path)
    before = path.read_bytes(), (tmp_path / "key.pem.pub").read_bytes()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        generate_key(path)
    assert (path.read_bytes(), (tmp_path / "key.pem.pub").read_bytes()) == before


def test_generate_refuses_when_only_a_stale_public_key_exists(tmp_path):
    (tmp_path / "key.pem.pub").write_text("stale")
    with pytest.raises(FileExistsError):
        generate_key(tmp_path / "key.pem")
    assert not (tmp_path / "key.pem").exists()
    assert (tmp_path / "key.pem.pub").read_text() == "stale"


def test_generate_refuses_a_dangling_symlink(tmp_path):
    (tmp_path / "key.pem").symlink_to(tmp_path / "elsewhere.pem")
    with pytest.raises(FileExistsError):
        generate_key(tmp_path / "key.pem")
    assert not (tmp_path / "elsewhere.pem").exists()


def test_load_private_key_refuses_a_key_others_can_read(tmp_path):
    path = tmp_path / "key.pem"
    generate_key(path)
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_private_key(path)
    assert isinstance(load_private_key(path, strict_permissions=False), Ed25519PrivateKey)


def test_load_rejects_other_kinds_of_key(tmp_path):
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_path = tmp_path / "rsa.pem"
    rsa_path.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    rsa_path.chmod(0o600)
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        load_private_key(rsa_path)
    rsa_pub = tmp_path / "rsa.pub"
    rsa_pub.write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        load_public_key(rsa_pub)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    garbage.chmod(0o600)
    with pytest.raises(KeyFileError):
        load_private_key(garbage)
    with pytest.raises(KeyFileError):
        load_public_key(garbage)
    # A private key where the public one is expected.
    generate_key(tmp_path / "ed.pem")
    with pytest.raises(KeyFileError):
        load_public_key(tmp_path / "ed.pem")


def test_key_id_is_sha256_of_the_raw_public_key(private_key):
    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert key_id(private_key) == hashlib.sha256(raw).hexdigest()[:16]
    assert len(key_id(private_key)) == 16


# --------------------------------------------------------------------------------------------
# Signing and verifying


def test_sign_verify_round_trip(signed, private_key):
    assert signed["signature"]["algorithm"] == "ed25519"
    assert signed["signature"]["key_id"] == key_id(private_key)
    assert verify_record(signed, private_key.public_key())
    # Through JSON on disk and back, pretty-printed or not.
    for text in (json.dumps(signed), json.dumps(signed, indent=2, ensure_ascii=True)):
        assert verify_record(json.loads(text), private_key.public_key())


def test_signature_is_plain_ed25519_over_the_canonical_json(signed, private_key):
    """Anyone can check a record with any Ed25519 tool: no hidden framing."""
    payload = canonical_json(signed["record"])
    raw = base64.b64decode(signed["signature"]["value"])
    private_key.public_key().verify(raw, payload)  # raises if not


def test_a_different_key_fails(signed):
    other = Ed25519PrivateKey.generate()
    assert not verify_record(signed, other.public_key())
    # Even if the forger copies our key id onto their own signature.
    forged = sign_record(signed["record"], other)
    forged["signature"]["key_id"] = signed["signature"]["key_id"]
    assert not verify_record(forged, Ed25519PrivateKey.generate().public_key())


def test_any_change_of_a_record_byte_fails(signed, private_key):
    public = private_key.public_key()
    text = canonical_json(signed).decode("utf-8")
    start = text.index('"record":') + len('"record":')
    end = text.index(',"signature":')
    checked = 0
    for pos in range(start, end):
        for replacement in ("0", "a", "}", '"', " "):
            if text[pos] == replacement:
                continue
            mutated = text[:pos] + replacement + text[pos + 1 :]
            try:
                doc = json.loads(mutated)
            except ValueError:
                continue  # no longer JSON: can't even be read as a record
            if doc.get("record") == signed["record"]:
                continue  # e.g. whitespace where JSON ignores it: nothing changed
            assert not verify_record(doc, public), (pos, replacement)
            checked += 1
    assert checked > 500


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.update(author="mallory"),
        lambda r: r["files"][0].update(sha256="0" * 64),
        lambda r: r["files"][0].update(size=1235),
        lambda r: r["files"].pop(),
        lambda r: r["votes"][0].update(vote="changes_requested"),
        lambda r: r["public_comments"].reverse(),
        lambda r: r["sdc_policy"].update(safe_threshold=5),
        lambda r: r["tool_versions"].update(python="3.12.0"),
        lambda r: r["audit_head"].update(seq=41),
        lambda r: r.update(extra="field"),
        lambda r: r.pop("released_by"),
    ],
)
def test_any_change_of_the_record_content_fails(signed, private_key, change):
    tampered = copy.deepcopy(signed)
    change(tampered["record"])
    assert tampered["record"] != signed["record"]
    assert not verify_record(tampered, private_key.public_key())


def _flip(value: str, index: int) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def test_any_change_of_the_signature_fails(signed, private_key):
    public = private_key.public_key()
    for index in range(64):
        tampered = copy.deepcopy(signed)
        tampered["signature"]["value"] = _flip(signed["signature"]["value"], index)
        assert not verify_record(tampered, public)
    for field, value in [
        ("algorithm", "rsa"),
        ("algorithm", "ED25519"),
        ("key_id", "0" * 16),
        ("value", signed["signature"]["value"][:-4]),
        ("value", signed["signature"]["value"] + "AAAA"),
        ("value", "not base64!"),
        ("value", "é"),
        ("value", None),
    ]:
        tampered = copy.deepcopy(signed)
        tampered["signature"][field] = value
        assert not verify_record(tampered, public), (field, value)


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        "signed",
        {},
        {"record": {}},
        {"record": 1, "signature": {}},
        {"record": {}, "signature": "x"},
        {
            "record": {"a": float("nan")},
            "signature": {"algorithm": "ed25519", "key_id": "", "value": ""},
        },
    ],
)
def test_bad_input_is_false_not_an_exception(bad, private_key):
    assert verify_record(bad, private_key.public_key()) is False


def test_extra_top_level_or_signature_fields_fail(signed, private_key):
    public = private_key.public_key()
    assert not verify_record({**signed, "note": "trust me"}, public)
    tampered = copy.deepcopy(signed)
    tampered["signature"]["comment"] = "x"
    assert not verify_record(tampered, public)


json_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
json_like = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=examples(200), deadline=None)
@given(record=st.dictionaries(st.text(max_size=6), json_like, max_size=5), junk=json_like)
def test_random_records_round_trip_and_junk_never_raises(record, junk, private_key):
    signed = sign_record(record, private_key)
    assert verify_record(json.loads(json.dumps(signed)), private_key.public_key())
    assert verify_record(junk, private_key.public_key()) is False
    assert verify_record({"record": record, "signature": junk}, private_key.public_key()) is False


def test_sign_record_rejects_non_json(private_key):
    with pytest.raises(ValueError):
        sign_record({"x": float("inf")}, private_key)
    with pytest.raises(TypeError):
        sign_record({"x": {1, 2}}, private_key)
    with pytest.raises(TypeError):
        sign_record(["not", "a", "mapping"], private_key)


# --------------------------------------------------------------------------------------------
# The release record


def test_release_record_contents():
    record = release_record(**record_inputs())
    assert record == {
        "schema": RECORD_SCHEMA,
        "request_id": "req-0007",
        "project": "hospital-stays",
        "author": "alice",
        "released_at": "2025-03-01T10:00:01.000000Z",
        "released_by": "carol",
        "files": [
            {"path": "outputs/figure_2.png", "sha256": SHA_B, "size": 56789},
            {"path": "outputs/table_1.csv", "sha256": SHA_A, "size": 1234},
        ],
        "votes": [
            {"file": "outputs/figure_2.png", "reviewer": "bob", "vote": "approved"},
            {"file": "outputs/figure_2.png", "reviewer": "carol", "vote": "approved"},
            {"file": "outputs/table_1.csv", "reviewer": "bob", "vote": "approved"},
            {"file": "outputs/table_1.csv", "reviewer": "carol", "vote": "approved"},
        ],
        "public_comments": [
            {"author": "bob", "time": "2025-03-01T09:00:00.000000Z", "text": "Zellen ≥ 10 ✓"},
            {"author": "alice", "time": "2025-03-01T09:05:00.000000Z", "text": "Thanks"},
        ],
        "sdc_policy": POLICY,
        "tool_versions": {"havre": "0.1.0", "python": "3.11.7", "acro": "1.0.2"},
        "audit_head": HEAD.to_dict(),
    }


def test_release_record_is_a_function_of_its_inputs():
    a = release_record(**record_inputs())
    shuffled = record_inputs(
        files=list(reversed(record_inputs()["files"])),
        votes=list(reversed(record_inputs()["votes"])),
    )
    assert canonical_json(release_record(**shuffled)) == canonical_json(a)
    # The inputs are not aliased: changing them afterwards doesn't change the record.
    inputs = record_inputs(sdc_policy={**POLICY, "by_type": {"count": {"threshold": 10}}})
    record = release_record(**inputs)
    inputs["sdc_policy"]["safe_threshold"] = 1
    inputs["sdc_policy"]["by_type"]["count"]["threshold"] = 1
    inputs["public_comments"][0]["text"] = "edited later"
    assert record["sdc_policy"]["safe_threshold"] == 10
    assert record["sdc_policy"]["by_type"] == {"count": {"threshold": 10}}
    assert record["public_comments"][0]["text"] == "Zellen ≥ 10 ✓"
    # Tuples and the like come out as the JSON a verifier will see.
    assert release_record(**record_inputs(sdc_policy={"bands": (1, 2)}))["sdc_policy"] == {
        "bands": [1, 2]
    }


def test_release_record_times_and_default_versions():
    paris = timezone(timedelta(hours=1))
    record = release_record(
        **record_inputs(
            released_at=datetime(2025, 3, 1, 11, 0, tzinfo=paris),
            havre_version=None,
            python_version=None,
            tool_versions=None,
        )
    )
    assert record["released_at"] == "2025-03-01T10:00:00.000000Z"
    assert record["tool_versions"] == runtime_versions()
    assert set(runtime_versions()) == {"havre", "python"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"files": []}, "at least one file"),
        ({"files": [{"path": "a", "sha256": SHA_A, "size": 1}] * 2}, "listed twice"),
        ({"files": [{"path": "a", "sha256": "abc", "size": 1}]}, "sha256"),
        ({"files": [{"path": "a", "sha256": SHA_A.upper(), "size": 1}]}, "sha256"),
        ({"files": [{"path": "a", "sha256": SHA_A, "size": -1}]}, "size"),
        ({"files": [{"path": "a", "sha256": SHA_A, "size": True}]}, "size"),
        ({"files": [{"path": "", "sha256": SHA_A, "size": 1}]}, "path"),
        ({"files": ["a"]}, "mapping"),
        (
            {"votes": [{"reviewer": "bob", "file": "secret.csv", "vote": "approved"}]},
            "not released",
        ),
        ({"votes": [{"reviewer": "", "file": "outputs/table_1.csv", "vote": "x"}]}, "reviewer"),
        ({"public_comments": ["text"]}, "mapping"),
        ({"sdc_policy": [("safe_threshold", 10)]}, "sdc_policy"),
        ({"sdc_policy": {"x": float("nan")}}, "Out of range"),
        ({"audit_head": HEAD.to_dict()}, "Checkpoint"),
        ({"released_at": "yesterday"}, "released_at"),
        ({"released_at": datetime(2025, 1, 1)}, "timezone-aware"),
        ({"request_id": ""}, "request_id"),
        ({"tool_versions": {"acro": 1}}, "version"),
    ],
)
def test_release_record_rejects_bad_inputs(overrides, message):
    with pytest.raises(ValueError, match=message):
        release_record(**record_inputs(**overrides))


def test_a_signed_release_record_is_a_checkpoint_of_the_audit_log(tmp_path):
    """The record's audit head pins the log as it was at release time."""
    log = AuditFile.create(tmp_path / "audit.jsonl", "egress-audit")
    log.append(actor="carol", event=EventType.RELEASED, request_id="req-0007")
    key = Ed25519PrivateKey.generate()
    signed = sign_record(
        release_record(**record_inputs(audit_head=log.checkpoint(), released_at=datetime.now(UTC))),
        key,
    )
    record_file = tmp_path / "release-req-0007.json"
    record_file.write_text(json.dumps(signed, indent=2))
    assert verify_record(json.loads(record_file.read_text()), key.public_key())
    cps = read_checkpoints(record_file)
    assert cps == [log.checkpoint()]
    log.append(actor="alice", event=EventType.DOWNLOADED, request_id="req-0007")
    assert log.verify(checkpoints=cps).ok
    # Rewrite the released event's actor and re-hash the whole log: the record catches it.
    rebuilt: list = []
    for ev in read_jsonl(tmp_path / "audit.jsonl"):
        fields = ev.to_dict(include_hash=False)
        del fields["seq"], fields["prev_hash"]
        if ev.event == "RELEASED":
            fields["actor"] = "mallory"
        rebuilt.append(next_event(rebuilt[-1] if rebuilt else None, "egress-audit", **fields))
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(b"".join(ev.to_line() for ev in rebuilt))
    assert AuditFile(forged).verify().ok  # a valid chain on its own...
    report = AuditFile(forged).verify(checkpoints=cps)  # ...that the signed record refutes
    assert not report.ok and "differs from the checkpoint" in report.problem
