"""Unit tests for havre.enclave.config: loading and validating the enclave config file."""

from __future__ import annotations

import os
import pickle
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from havre.enclave.config import (
    DEFAULT_IMAGE,
    DEFAULT_LIMITS,
    GIB,
    MIB,
    USERNAME_PATTERN,
    EnclaveConfig,
    EnclaveConfigError,
    Limits,
    ReviewPolicy,
    UnknownProjectError,
    docker_safe_name,
    dump_enclave_config,
    format_size,
    load_enclave_config,
    parse_enclave_config,
    parse_enclave_yaml,
    parse_size,
)
from tests.hypothesis_budget import examples

DIGEST = "sha256:" + "0123456789abcdef" * 4

FULL = f"""\
enclave:
  name: havre-test
  state_dir: /srv/havre
images:
  allowed:
    - "havre/notebook:0.1.0"
    - "registry.example.org:5000/havre/notebook-r:4.4.1"
    - "havre/notebook@{DIGEST}"
  default: "havre/notebook:0.1.0"
limits:
  cpu: 1.5
  memory: 3G
  pids: 600
projects:
  cardio:
    title: "Cardiology outcomes"
    members: [alice, carol, "dave@example.org"]
    data_path: /srv/data/cardio
    image: "registry.example.org:5000/havre/notebook-r:4.4.1"
    limits: {{cpu: 2, memory: 4G, pids: 1024}}
  onco:
    title: "Oncology registry"
    members: [bob, carol, olivia]
    limits: {{memory: 512M}}
  empty-project:
    title: "Nobody yet"
    members: []
output_checkers: [olivia, oscar]
review:
  reviews_required: 3
  reexecution_seconds: 900
"""

MINIMAL = """\
projects:
  cardio:
    title: Cardiology outcomes
    members: [alice]
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(EnclaveConfigError) as info:
        parse_enclave_yaml(text)
    return info.value.problems


# --------------------------------------------------------------------------------------
# Valid configs
# --------------------------------------------------------------------------------------


def test_full_example_is_parsed():
    cfg = parse_enclave_yaml(FULL, "full.yaml")
    assert cfg.name == "havre-test"
    assert cfg.state_dir == Path("/srv/havre")
    assert cfg.allowed_images == (
        "havre/notebook:0.1.0",
        "registry.example.org:5000/havre/notebook-r:4.4.1",
        f"havre/notebook@{DIGEST}",
    )
    assert cfg.default_image == "havre/notebook:0.1.0"
    assert list(cfg.projects) == ["cardio", "onco", "empty-project"]
    assert cfg.output_checkers == frozenset({"olivia", "oscar"})
    assert cfg.review == ReviewPolicy(reviews_required=3, reexecution_seconds=900)
    assert cfg.source == "full.yaml"

    cardio = cfg.projects["cardio"]
    assert cardio.slug == "cardio"
    assert cardio.title == "Cardiology outcomes"
    assert cardio.members == frozenset({"alice", "carol", "dave@example.org"})
    assert cardio.data_path == Path("/srv/data/cardio")
    assert cardio.image == "registry.example.org:5000/havre/notebook-r:4.4.1"
    assert cardio.limits == Limits(cpu=2.0, memory_bytes=4 * GIB, pids=1024)
    assert isinstance(cardio.limits.cpu, float)

    onco = cfg.projects["onco"]
    # Per-project limits override a subset; the rest comes from the top-level limits.
    assert onco.limits == Limits(cpu=1.5, memory_bytes=512 * MIB, pids=600)
    assert onco.image == "havre/notebook:0.1.0"
    assert onco.data_path == Path("/srv/havre/projects/onco/data")
    assert cfg.projects["empty-project"].members == frozenset()


def test_full_example_round_trips():
    cfg = parse_enclave_yaml(FULL)
    text = dump_enclave_config(cfg)
    again = parse_enclave_yaml(text)
    assert again == cfg
    assert list(again.projects) == list(cfg.projects)
    # The dump is plain YAML that the non-strict loader and parse_enclave_config accept too.
    assert parse_enclave_config(yaml.safe_load(text)) == cfg
    # Dumping is stable.
    assert dump_enclave_config(again) == text


def test_load_from_file_round_trips(tmp_path):
    path = tmp_path / "enclave.yaml"
    path.write_text(FULL, encoding="utf-8")
    cfg = load_enclave_config(path)
    assert cfg.source == str(path)
    assert cfg == parse_enclave_yaml(FULL)
    out = tmp_path / "dumped.yaml"
    out.write_text(dump_enclave_config(cfg), encoding="utf-8")
    assert load_enclave_config(str(out)) == cfg


def test_defaults_are_applied():
    cfg = parse_enclave_yaml(MINIMAL)
    assert cfg.name == "havre"
    assert cfg.state_dir == Path("/var/lib/havre")
    assert cfg.allowed_images == (DEFAULT_IMAGE,)
    assert cfg.default_image == DEFAULT_IMAGE == "havre/notebook:0.1.0"
    assert cfg.output_checkers == frozenset()
    assert cfg.review.reviews_required == 2
    assert cfg.review.reexecution_seconds == 600
    project = cfg.project("cardio")
    assert project.limits == DEFAULT_LIMITS == Limits(cpu=1.0, memory_bytes=2 * GIB, pids=512)
    assert project.image == DEFAULT_IMAGE
    assert project.data_path == Path("/var/lib/havre/projects/cardio/data")
    assert cfg.source == "<string>"


def test_access_tier_per_project():
    """``access`` is per project; absent means browser; the desktop image has a default."""
    cfg = parse_enclave_yaml(
        "images:\n  desktop: site/desktop:2.0\n"
        "projects:\n  cardio:\n    title: a\n    access: desktop\n"
        "  onco:\n    title: b\n  renal:\n    title: c\n    access: browser\n"
    )
    assert [(p.slug, p.access, p.desktop) for p in cfg.projects.values()] == [
        ("cardio", "desktop", True),
        ("onco", "browser", False),
        ("renal", "browser", False),
    ]
    assert cfg.desktop_image == "site/desktop:2.0"
    assert parse_enclave_yaml(MINIMAL).desktop_image == "havre/desktop:0.1.0"
    assert parse_enclave_yaml(dump_enclave_config(cfg)) == cfg
    # desktop_limits: the top level's over the defaults, a project's over the top level's
    limited = parse_enclave_yaml(
        "desktop_limits:\n  memory: 1.5G\n"
        "projects:\n  cardio:\n    title: a\n    access: desktop\n"
        "    desktop_limits: {cpu: 2}\n  renal:\n    title: c\n    access: desktop\n"
    )
    assert limited.project("cardio").desktop_limits == Limits(2.0, 1536 * 1024**2, 512)
    assert limited.project("renal").desktop_limits == Limits(1.0, 1536 * 1024**2, 512)
    assert parse_enclave_yaml(dump_enclave_config(limited)) == limited
    assert cfg.desktop_container_name("cardio", "a@b") == "havre-desk-cardio-a-at-b"
    assert cfg.desktop_container_name("cardio", "a@b") != cfg.container_name("cardio", "a@b")


def test_empty_sections_mean_defaults():
    cfg = parse_enclave_yaml(
        "enclave:\nimages:\nlimits:\nreview:\noutput_checkers:\n"
        "projects:\n  cardio:\n    title: x\n    members:\n    limits:\n"
    )
    assert cfg == parse_enclave_yaml("projects:\n  cardio:\n    title: x\n")


def test_default_image_is_first_allowed_when_omitted():
    cfg = parse_enclave_yaml('images:\n  allowed: ["a/b:1", "c/d:2"]\n' + MINIMAL)
    assert cfg.default_image == "a/b:1"
    assert cfg.project("cardio").image == "a/b:1"


def test_allowed_is_default_only_when_omitted():
    cfg = parse_enclave_yaml('images:\n  default: "a/b:1"\n' + MINIMAL)
    assert cfg.allowed_images == ("a/b:1",)


def test_checker_may_also_be_a_researcher():
    cfg = parse_enclave_yaml(MINIMAL + "output_checkers: [alice]\n")
    assert "alice" in cfg.output_checkers
    assert cfg.is_member("alice", "cardio")


def test_quoted_yaml_booleans_are_fine_as_usernames():
    cfg = parse_enclave_yaml('projects:\n  cardio:\n    title: "yes"\n    members: ["no", "on"]\n')
    assert cfg.project("cardio").members == frozenset({"no", "on"})
    assert cfg.project("cardio").title == "yes"
    assert parse_enclave_yaml(dump_enclave_config(cfg)) == cfg


def test_data_path_under_own_data_dir_is_allowed():
    cfg = parse_enclave_yaml(MINIMAL + "    data_path: /var/lib/havre/projects/cardio/data/v2/\n")
    assert cfg.project("cardio").data_path == Path("/var/lib/havre/projects/cardio/data/v2")


def test_config_is_immutable_and_hashable():
    cfg = parse_enclave_yaml(FULL)
    with pytest.raises(AttributeError):
        cfg.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.projects["new"] = cfg.projects["cardio"]  # type: ignore[index]
    assert hash(cfg) == hash(parse_enclave_yaml(FULL))
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_equality_ignores_source():
    assert parse_enclave_yaml(MINIMAL, "a.yaml") == parse_enclave_yaml(MINIMAL, "b.yaml")


def test_parse_accepts_plain_data():
    data = {"projects": {"cardio": {"title": "Cardio", "members": ["alice"]}}}
    assert parse_enclave_config(data) == parse_enclave_yaml(
        MINIMAL.replace("Cardiology outcomes", "Cardio")
    )


# --------------------------------------------------------------------------------------
# Invalid configs: one problem each, naming the field and the value
# --------------------------------------------------------------------------------------


def project(body: str, slug: str = "cardio") -> str:
    """A config with one project whose body is ``body`` (YAML lines, unindented)."""
    return f"projects:\n  {slug}:\n" + textwrap.indent(textwrap.dedent(body), "    ")


OK_PROJECT = project("title: Cardio\nmembers: [alice]\n")
TWO_IMAGES = 'images:\n  allowed: ["havre/notebook:0.1.0", {}]\n' + OK_PROJECT

BAD = [
    # project slugs
    (
        "slug-underscore",
        project("title: x\n", "car_dio"),
        ["projects.car_dio", "slug", "'car_dio'"],
    ),
    ("slug-uppercase", project("title: x\n", "Cardio"), ["projects.Cardio", "slug", "'Cardio'"]),
    ("slug-too-long", project("title: x\n", "a" * 31), ["projects." + "a" * 31, "slug"]),
    ("slug-one-char", project("title: x\n", "a"), ["projects.a:", "slug", "(got 'a')"]),
    ("slug-trailing-dash", project("title: x\n", "cardio-"), ["projects.cardio-", "'cardio-'"]),
    ("slug-leading-digit", project("title: x\n", "1cardio"), ["projects.1cardio", "'1cardio'"]),
    ("slug-yaml-bool", project("title: x\n", "on"), ["projects.True", "(got True)", "quote"]),
    # titles
    ("title-missing", project("members: [alice]\n"), ["projects.cardio.title", "required"]),
    ("title-empty", project("title: ''\n"), ["projects.cardio.title", "(got '')"]),
    ("title-blank", project("title: '   '\n"), ["projects.cardio.title", "(got '   ')"]),
    ("title-bool", project("title: yes\n"), ["projects.cardio.title", "(got True)"]),
    ("title-number", project("title: 2024\n"), ["projects.cardio.title", "(got 2024)"]),
    (
        "title-control-char",
        project('title: "Cardio\\tlogy"\n'),
        ["projects.cardio.title", "control", "(got 'Cardio\\tlogy')"],
    ),
    (
        "title-bidi-override",
        project('title: "abc\\u202edef"\n'),
        ["projects.cardio.title", "control", "(got 'abc\\u202edef')"],
    ),
    # members
    (
        "members-not-list",
        project("title: x\nmembers: alice\n"),
        ["projects.cardio.members:", "must be a list", "(got 'alice')"],
    ),
    (
        "member-uppercase",
        project("title: x\nmembers: [alice, Bob]\n"),
        ["projects.cardio.members[1]", "invalid username", "(got 'Bob')"],
    ),
    (
        "member-too-long",
        project(f"title: x\nmembers: [{'a' * 65}]\n"),
        ["projects.cardio.members[0]", "'aaaa"],
    ),
    (
        "member-leading-dot",
        project("title: x\nmembers: ['.alice']\n"),
        ["projects.cardio.members[0]", "'.alice'"],
    ),
    (
        "member-with-slash",
        project("title: x\nmembers: ['../root']\n"),
        ["projects.cardio.members[0]", "'../root'"],
    ),
    (
        "member-duplicate",
        project("title: x\nmembers: [alice, alice]\n"),
        ["projects.cardio.members[1]", "duplicate", "(got 'alice')"],
    ),
    (
        "member-number",
        project("title: x\nmembers: [alice, 123]\n"),
        ["projects.cardio.members[1]", "(got 123)"],
    ),
    (
        "member-yaml-bool",
        project("title: x\nmembers: [alice, no]\n"),
        ["projects.cardio.members[1]", "(got False)", "quote"],
    ),
    (
        "members-same-container-name",
        project("title: x\nmembers: ['a@b', 'a-at-b']\n"),
        ["projects.cardio.members", "'a@b'", "'a-at-b'", "container name"],
    ),
    # images
    (
        "project-image-not-allowed",
        project("title: x\nimage: 'other/image:1.0'\n"),
        ["projects.cardio.image", "not in images.allowed", "(got 'other/image:1.0')"],
    ),
    (
        "project-image-number",
        project("title: x\nimage: 1.0\n"),
        ["projects.cardio.image", "(got 1.0)"],
    ),
    (
        "image-unpinned",
        TWO_IMAGES.format('"jupyter/scipy-notebook"'),
        ["images.allowed[1]", "pinned", "(got 'jupyter/scipy-notebook')"],
    ),
    (
        "image-latest",
        TWO_IMAGES.format('"jupyter/scipy-notebook:latest"'),
        ["images.allowed[1]", ":latest", "(got 'jupyter/scipy-notebook:latest')"],
    ),
    (
        "image-registry-port-no-tag",
        TWO_IMAGES.format('"localhost:5000/havre/notebook"'),
        ["images.allowed[1]", "pinned", "'localhost:5000/havre/notebook'"],
    ),
    (
        "image-short-digest",
        TWO_IMAGES.format('"havre/notebook@sha256:abc123"'),
        ["images.allowed[1]", "64", "'havre/notebook@sha256:abc123'"],
    ),
    (
        "image-uppercase",
        TWO_IMAGES.format('"Havre/Notebook:1.0"'),
        ["images.allowed[1]", "not a valid image reference", "'Havre/Notebook:1.0'"],
    ),
    (
        "image-duplicate",
        TWO_IMAGES.format('"havre/notebook:0.1.0"'),
        ["images.allowed[1]", "duplicate", "'havre/notebook:0.1.0'"],
    ),
    (
        "images-allowed-empty",
        "images:\n  allowed: []\n" + OK_PROJECT,
        ["images.allowed", "at least one", "(got [])"],
    ),
    (
        "images-allowed-string",
        "images:\n  allowed: havre/notebook:0.1.0\n" + OK_PROJECT,
        ["images.allowed", "must be a list", "(got 'havre/notebook:0.1.0')"],
    ),
    (
        "default-image-not-allowed",
        'images:\n  allowed: ["havre/notebook:0.1.0"]\n  default: "havre/notebook:0.2.0"\n'
        + OK_PROJECT,
        ["images.default", "must be one of images.allowed", "(got 'havre/notebook:0.2.0')"],
    ),
    (
        "default-image-unpinned",
        'images:\n  default: "havre/notebook"\n' + OK_PROJECT,
        ["images.default", "pinned", "(got 'havre/notebook')"],
    ),
    # limits
    ("memory-bad", "limits: {memory: 2X}\n" + OK_PROJECT, ["limits.memory", "(got '2X')"]),
    (
        "memory-too-small",
        "limits: {memory: 128M}\n" + OK_PROJECT,
        ["limits.memory", "at least 256M", "(got '128M')"],
    ),
    (
        "memory-bytes-too-small",
        "limits: {memory: 1000}\n" + OK_PROJECT,
        ["limits.memory", "at least 256M", "(got 1000)"],
    ),
    ("memory-float", "limits: {memory: 1.5}\n" + OK_PROJECT, ["limits.memory", "(got 1.5)"]),
    ("memory-negative", "limits: {memory: -1G}\n" + OK_PROJECT, ["limits.memory", "'-1G'"]),
    ("cpu-zero", "limits: {cpu: 0}\n" + OK_PROJECT, ["limits.cpu", "(got 0)"]),
    (
        "cpu-negative",
        project("title: x\nlimits: {cpu: -1.5}\n"),
        ["projects.cardio.limits.cpu", "(got -1.5)"],
    ),
    ("cpu-too-many", "limits: {cpu: 65}\n" + OK_PROJECT, ["limits.cpu", "64", "(got 65)"]),
    ("cpu-string", "limits: {cpu: '2'}\n" + OK_PROJECT, ["limits.cpu", "(got '2')"]),
    ("cpu-nan", "limits: {cpu: .nan}\n" + OK_PROJECT, ["limits.cpu", "(got nan)"]),
    ("cpu-bool", "limits: {cpu: yes}\n" + OK_PROJECT, ["limits.cpu", "(got True)"]),
    ("pids-string", "limits: {pids: '512'}\n" + OK_PROJECT, ["limits.pids", "(got '512')"]),
    ("pids-too-few", "limits: {pids: 16}\n" + OK_PROJECT, ["limits.pids", "32", "(got 16)"]),
    ("pids-too-many", "limits: {pids: 70000}\n" + OK_PROJECT, ["limits.pids", "(got 70000)"]),
    ("pids-float", "limits: {pids: 512.0}\n" + OK_PROJECT, ["limits.pids", "(got 512.0)"]),
    (
        "limits-not-mapping",
        "limits: 2G\n" + OK_PROJECT,
        ["limits:", "must be a mapping", "(got '2G')"],
    ),
    # unknown keys
    (
        "unknown-top-level-key",
        "colour: blue\n" + OK_PROJECT,
        [
            "colour: unknown key 'colour'",
            "allowed keys: cluster, culling, desktop_limits, enclave, identity, images, limits, "
            "logging, monitoring, notifications, output_checkers, projects, review",
        ],
    ),
    (
        "top-level-typo",
        "output_checker: [olivia]\n" + OK_PROJECT,
        ["output_checker:", "did you mean 'output_checkers'"],
    ),
    (
        "unknown-project-key",
        project("title: x\ntitel: y\n"),
        [
            "projects.cardio.titel",
            "unknown key 'titel'",
            "allowed keys: access, data_path, desktop_limits, desktop_paste, groups, image, "
            "limits, members, title",
        ],
    ),
    (
        "unknown-limits-key",
        project("title: x\nlimits: {memroy: 1G}\n"),
        ["projects.cardio.limits.memroy", "did you mean 'memory'"],
    ),
    (
        "unknown-enclave-key",
        "enclave: {name: havre, statedir: /x}\n" + OK_PROJECT,
        ["enclave.statedir", "unknown key"],
    ),
    # paths
    (
        "state-dir-relative",
        "enclave: {state_dir: var/lib/havre}\n" + OK_PROJECT,
        ["enclave.state_dir", "absolute", "(got 'var/lib/havre')"],
    ),
    (
        "state-dir-dotdot",
        "enclave: {state_dir: /var/lib/../havre}\n" + OK_PROJECT,
        ["enclave.state_dir", "'..'", "(got '/var/lib/../havre')"],
    ),
    (
        "state-dir-root",
        "enclave: {state_dir: /}\n" + OK_PROJECT,
        ["enclave.state_dir", "root", "(got '/')"],
    ),
    (
        "data-path-relative",
        project("title: x\ndata_path: data/cardio\n"),
        ["projects.cardio.data_path", "absolute", "(got 'data/cardio')"],
    ),
    (
        "data-path-home",
        project("title: x\ndata_path: ~/cardio\n"),
        ["projects.cardio.data_path", "absolute", "(got '~/cardio')"],
    ),
    (
        "data-path-contains-state-dir",
        project("title: x\ndata_path: /var/lib\n"),
        ["projects.cardio.data_path", "state directory", "(got '/var/lib')"],
    ),
    (
        "data-path-in-other-project",
        project("title: x\ndata_path: /var/lib/havre/projects/onco/data\n"),
        ["projects.cardio.data_path", "(got '/var/lib/havre/projects/onco/data')"],
    ),
    # review
    (
        "reviews-required-zero",
        "review: {reviews_required: 0}\n" + OK_PROJECT,
        ["review.reviews_required", "between 1 and 5", "(got 0)"],
    ),
    (
        "reviews-required-six",
        "review: {reviews_required: 6}\n" + OK_PROJECT,
        ["review.reviews_required", "(got 6)"],
    ),
    (
        "reexecution-seconds-too-short",
        "review: {reexecution_seconds: 5}\n" + OK_PROJECT,
        ["review.reexecution_seconds", "between 10 and 86400", "(got 5)"],
    ),
    (
        "reexecution-seconds-text",
        "review: {reexecution_seconds: ten minutes}\n" + OK_PROJECT,
        ["review.reexecution_seconds", "whole number", "(got 'ten minutes')"],
    ),
    (
        "reviews-required-word",
        "review: {reviews_required: two}\n" + OK_PROJECT,
        ["review.reviews_required", "(got 'two')"],
    ),
    # projects section
    ("projects-empty", "projects: {}\n", ["projects:", "at least one project", "(got {})"]),
    ("projects-missing", "enclave: {name: havre}\n", ["projects:", "required"]),
    ("projects-list", "projects: [cardio]\n", ["projects:", "mapping", "(got ['cardio'])"]),
    (
        "project-not-mapping",
        "projects:\n  cardio: Cardiology\n",
        ["projects.cardio:", "mapping", "(got 'Cardiology')"],
    ),
    # enclave
    (
        "enclave-name-uppercase",
        "enclave: {name: Havre}\n" + OK_PROJECT,
        ["enclave.name", "(got 'Havre')"],
    ),
    (
        "enclave-name-too-long",
        f"enclave: {{name: {'h' * 21}}}\n" + OK_PROJECT,
        ["enclave.name", "'hhhh"],
    ),
    (
        "enclave-name-trailing-newline",
        'enclave: {name: "havre\\n"}\n' + OK_PROJECT,
        ["enclave.name", "(got 'havre\\n')"],
    ),
    ("enclave-name-bool", "enclave: {name: no}\n" + OK_PROJECT, ["enclave.name", "(got False)"]),
    # output checkers
    (
        "checkers-not-list",
        "output_checkers: olivia\n" + OK_PROJECT,
        ["output_checkers:", "(got 'olivia')"],
    ),
    (
        "checker-bad-username",
        "output_checkers: [olivia, 'Oscar Wilde']\n" + OK_PROJECT,
        ["output_checkers[1]", "(got 'Oscar Wilde')"],
    ),
    # YAML level
    (
        "duplicate-yaml-key",
        "projects:\n  cardio:\n    title: a\n    title: b\n",
        ["projects.cardio.title", "duplicate key on line 4", "first defined on line 3"],
    ),
    (
        "duplicate-project-slug",
        "projects:\n  cardio:\n    title: a\n  cardio:\n    title: b\n",
        ["projects.cardio:", "duplicate key on line 4", "first defined on line 2"],
    ),
    (
        "yaml-syntax-error",
        "projects:\n  cardio:\n    title: [unclosed\n    members: [alice]\n",
        ["line 4, column 12", "invalid YAML", "flow sequence on line 3"],
    ),
    (
        "yaml-bad-indentation",
        "projects:\n  cardio:\n    title: x\n   members: [alice]\n",
        ["line 4", "invalid YAML"],
    ),
    (
        "yaml-python-tag",
        "projects: !!python/object/apply:os.system ['true']\n",
        ["line 1", "invalid YAML", "python/object/apply"],
    ),
    ("yaml-two-documents", OK_PROJECT + "---\n" + OK_PROJECT, ["single document"]),
    (
        "access-misspelt",
        project("title: x\naccess: dekstop\n"),
        ["projects.cardio.access", "must be 'browser' or 'desktop'", "did you mean 'desktop'?"],
    ),
    (
        "access-unknown",
        project("title: x\naccess: vpn\n"),
        ["projects.cardio.access", "must be 'browser' or 'desktop' (got 'vpn')"],
    ),
    (
        "access-not-a-string",
        project("title: x\naccess: true\n"),
        ["projects.cardio.access", "must be 'browser' or 'desktop'", "(got True)"],
    ),
    (
        "access-key-misspelt",
        project("title: x\nacess: desktop\n"),
        ["projects.cardio.acess", "unknown key 'acess', did you mean 'access'?"],
    ),
    (
        "desktop-image-unpinned",
        "images:\n  desktop: havre/desktop\n" + OK_PROJECT,
        ["images.desktop", "pinned", "(got 'havre/desktop')"],
    ),
    ("top-level-list", "- cardio\n- onco\n", ["top level", "mapping", "(got ['cardio', 'onco'])"]),
    ("top-level-scalar", "just a string\n", ["top level", "(got 'just a string')"]),
    ("empty-document", "# nothing here\n", ["top level", "empty"]),
]


@pytest.mark.parametrize(("text", "expected"), [row[1:] for row in BAD], ids=[r[0] for r in BAD])
def test_bad_config_is_reported(text, expected):
    problems = problems_of(text)
    assert len(problems) == 1, problems
    for fragment in expected:
        assert fragment in problems[0], (fragment, problems[0])


def test_bad_table_is_big_and_ids_are_unique():
    assert len(BAD) >= 25
    assert len({row[0] for row in BAD}) == len(BAD)


def test_all_problems_are_reported():
    text = textwrap.dedent(
        """\
        enclave: {name: Havre, state_dir: relative/dir}
        images: {allowed: ["havre/notebook"]}
        limits: {cpu: 0, memory: 1M}
        projects:
          Cardio:
            members: alice
          onco:
            title: Oncology
            members: [bob, bob]
            limits: {pids: many}
        review: {reviews_required: 9}
        extra: 1
        """
    )
    with pytest.raises(EnclaveConfigError) as info:
        parse_enclave_yaml(text, "multi.yaml")
    err = info.value
    expected = [
        "extra: unknown key",
        "enclave.name",
        "enclave.state_dir",
        "images.allowed[0]",
        "limits.cpu",
        "limits.memory",
        "review.reviews_required",
        "projects.Cardio: invalid project slug",
        "projects.Cardio.title: required",
        "projects.Cardio.members",
        "projects.onco.members[1]",
        "projects.onco.limits.pids",
    ]
    assert len(err.problems) == len(expected), err.problems
    for fragment in expected:
        assert any(p.startswith(fragment) for p in err.problems), fragment
    assert str(err) == "invalid enclave config multi.yaml:\n" + "\n".join(
        f"  - {p}" for p in err.problems
    )
    assert isinstance(err, ValueError)


def test_duplicate_keys_are_reported_with_other_problems():
    problems = problems_of("projects:\n  cardio:\n    title: a\n    title: b\n    members: x\n")
    assert len(problems) == 2
    assert problems[0].startswith("projects.cardio.title: duplicate key on line 4")
    assert problems[1].startswith("projects.cardio.members: must be a list")


def test_error_message_format():
    with pytest.raises(EnclaveConfigError) as info:
        parse_enclave_yaml("limits: {cpu: 0}\n" + OK_PROJECT, "/etc/havre/enclave.yaml")
    assert str(info.value) == (
        "invalid enclave config /etc/havre/enclave.yaml:\n"
        "  - limits.cpu: must be > 0 and <= 64 CPU cores (got 0)"
    )
    assert info.value.source == "/etc/havre/enclave.yaml"


def test_error_pickles():
    err = EnclaveConfigError(["a: b (got 1)", "c: d"], "x.yaml")
    again = pickle.loads(pickle.dumps(err))
    assert again.problems == err.problems and again.source == "x.yaml"
    assert str(again) == str(err)


def test_huge_values_are_shown_truncated():
    problems = problems_of("colour: " + "x" * 10000 + "\n" + OK_PROJECT)
    assert len(problems[0]) < 300


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def load_problems(path: Path | str) -> tuple[str, list[str]]:
    with pytest.raises(EnclaveConfigError) as info:
        load_enclave_config(path)
    return str(info.value), info.value.problems


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    message, problems = load_problems(path)
    assert problems == ["file not found"]
    assert message == f"invalid enclave config {path}:\n  - file not found"


def test_directory_instead_of_file(tmp_path):
    _, problems = load_problems(tmp_path)
    assert problems == ["is a directory, not a file"]


def test_unreadable_file(tmp_path):
    path = tmp_path / "enclave.yaml"
    path.write_text(MINIMAL)
    path.chmod(0)
    if os.geteuid() != 0:
        _, problems = load_problems(path)
        assert problems == ["cannot read file: permission denied"]
        return
    # root reads anything: check as an unprivileged user in a child process
    tmp_path.chmod(0o755)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.close(read)
        try:
            os.setgid(65534)
            os.setuid(65534)
            _, problems = load_problems(path)
            os.write(write, "|".join(problems).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as reader:
        reported = reader.read()
    os.waitpid(pid, 0)
    assert reported == "cannot read file: permission denied"


def test_not_utf8(tmp_path):
    path = tmp_path / "enclave.yaml"
    path.write_bytes(b"projects:\n  caf\xe9:\n    title: x\n")
    _, problems = load_problems(path)
    assert problems == ["file is not valid UTF-8 (byte offset 15)"]


def test_yaml_error_in_file_names_file_and_line(tmp_path):
    path = tmp_path / "enclave.yaml"
    path.write_text("projects:\n  cardio:\n    title: x\n  - oops\n")
    message, problems = load_problems(path)
    assert message.startswith(f"invalid enclave config {path}:\n  - line 4")
    assert len(problems) == 1


def test_top_level_list_in_file(tmp_path):
    path = tmp_path / "enclave.yaml"
    path.write_text("- a\n")
    message, _ = load_problems(path)
    assert str(path) in message and "top level: must be a mapping" in message


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "enclave.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_enclave_config(path) == parse_enclave_yaml(MINIMAL)


# --------------------------------------------------------------------------------------
# Membership, paths and names
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cfg() -> EnclaveConfig:
    return parse_enclave_yaml(FULL)


def test_is_member(cfg):
    assert cfg.is_member("alice", "cardio")
    assert not cfg.is_member("alice", "onco")
    assert not cfg.is_member("alice", "unknown")
    assert not cfg.is_member("oscar", "cardio")  # checker, not a researcher
    assert cfg.is_member("olivia", "onco")  # checker *and* researcher


def test_projects_of(cfg):
    assert [p.slug for p in cfg.projects_of("carol")] == ["cardio", "onco"]
    assert [p.slug for p in cfg.projects_of("bob")] == ["onco"]
    assert cfg.projects_of("mallory") == []


def test_project_lookup(cfg):
    assert cfg.project("onco").title == "Oncology registry"
    with pytest.raises(KeyError) as info:
        cfg.project("nope")
    assert isinstance(info.value, UnknownProjectError)
    assert str(info.value) == (
        "unknown project 'nope' (configured projects: cardio, onco, empty-project)"
    )


def test_directories(cfg):
    assert cfg.project_dir("cardio") == Path("/srv/havre/projects/cardio")
    assert cfg.home_dir("cardio", "alice") == Path("/srv/havre/projects/cardio/homes/alice")
    assert cfg.outputs_dir("onco") == Path("/srv/havre/projects/onco/outputs")


@pytest.mark.parametrize("slug", ["..", "../etc", "Cardio", "a/b", "", "cardio-"])
def test_directories_refuse_bad_slugs(cfg, slug):
    with pytest.raises(ValueError):
        cfg.project_dir(slug)
    with pytest.raises(ValueError):
        cfg.network_name(slug)


@pytest.mark.parametrize("username", ["..", "../bob", "a/b", "Alice", "", ".hidden"])
def test_home_dir_refuses_bad_usernames(cfg, username):
    with pytest.raises(ValueError):
        cfg.home_dir("cardio", username)
    with pytest.raises(ValueError):
        cfg.container_name("cardio", username)


def test_docker_names(cfg):
    assert cfg.network_name("cardio") == "havre-test-project-cardio"
    assert cfg.container_name("cardio", "alice") == "havre-test-nb-cardio-alice"
    assert cfg.container_name("cardio", "dave@example.org") == (
        "havre-test-nb-cardio-dave-at-example.org"
    )
    assert docker_safe_name("a@b c/d") == "a-at-b-c-d"


# --------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512M", 512 * MIB),
        ("512m", 512 * MIB),
        ("512Mi", 512 * MIB),
        ("512MiB", 512 * MIB),
        ("2G", 2 * GIB),
        ("1.5G", 3 * GIB // 2),
        ("1T", 1024 * GIB),
        ("4K", 4096),
        ("1024", 1024),
        (" 1G ", GIB),
        (1024, 1024),
        (0, 0),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "1.5", "-1", "1X", "1 G B", "1e3", True, 1.5, None, -5])
def test_parse_size_errors(text):
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


def test_format_size():
    assert format_size(4 * GIB) == "4G"
    assert format_size(512 * MIB) == "512M"
    assert format_size(1536 * MIB) == "1536M"
    assert format_size(1000) == 1000


@given(st.integers(min_value=0, max_value=2**50))
def test_size_round_trip(n):
    assert parse_size(format_size(n)) == n


# --------------------------------------------------------------------------------------
# Property: any valid config round-trips through dump
# --------------------------------------------------------------------------------------

usernames = st.from_regex(USERNAME_PATTERN, fullmatch=True)
slugs = st.from_regex(r"[a-z][a-z0-9-]{0,28}[a-z0-9]", fullmatch=True)
titles = st.text(
    st.characters(exclude_categories=("Cc", "Cf", "Cs", "Zl", "Zp")), min_size=1, max_size=40
).filter(lambda s: s.strip())
limits = st.fixed_dictionaries(
    {},
    optional={
        "cpu": st.floats(min_value=0.01, max_value=64),
        "memory": st.integers(min_value=256 * MIB, max_value=2**40),
        "pids": st.integers(min_value=32, max_value=65536),
    },
)


@st.composite
def configs(draw):
    members = st.lists(usernames, max_size=5, unique_by=docker_safe_name)
    projects = draw(
        st.dictionaries(
            slugs,
            st.fixed_dictionaries(
                {"title": titles, "members": members},
                optional={
                    "limits": limits,
                    "data_path": st.just("/data/x"),
                    "access": st.sampled_from(["browser", "desktop"]),
                },
            ),
            min_size=1,
            max_size=4,
        )
    )
    return {
        "projects": projects,
        "limits": draw(limits),
        "output_checkers": draw(st.lists(usernames, max_size=3, unique=True)),
        "review": {"reviews_required": draw(st.integers(1, 5))},
    }


@settings(max_examples=examples(60), deadline=None)
@given(configs())
def test_valid_configs_round_trip(data):
    cfg = parse_enclave_config(data)
    assert parse_enclave_yaml(dump_enclave_config(cfg)) == cfg


# -- identity: providers, group mapping -------------------------------------------------

IDENTITY_BAD = [
    ("identity:\n  provider: saml\n", "identity.provider: must be one of embedded, oidc"),
    ("identity:\n  checker_groups: checkers\n", "identity.checker_groups: must be a list"),
    ("identity:\n  admin_groups: [' x']\n", "identity.admin_groups[0]: must be a non-empty"),
    ("identity:\n  refresh_seconds: -1\n", "identity.refresh_seconds: must be a whole number"),
    ("identity:\n  provider: oidc\n", "identity.oidc.authorize_url: required"),
    (
        "identity:\n  provider: embedded\n  oidc: {client_id: x}\n",
        "identity.oidc: only used when identity.provider is oidc",
    ),
    (
        "identity:\n  provider: oidc\n  oidc: {authorize_url: ftp://x, token_url: http://k/t,"
        " userdata_url: http://k/u, client_id: havre, client_secret_file: /s}\n",
        "identity.oidc.authorize_url: must be an http(s) URL",
    ),
    ("culling:\n  idle_seconds: soon\n", "culling.idle_seconds: must be a whole number"),
    ("notifications:\n  smtp: relay\n", "notifications.smtp: must be a mapping"),
    (
        "notifications:\n  smtp: {host: relay}\n",
        "notifications.address_template: required with smtp",
    ),
    (
        "notifications:\n  smtp: {port: 25}\n  address_template: '{username}@x.org'\n",
        "notifications.smtp.host: required",
    ),
    (
        "projects:\n  cardio:\n    title: x\n    groups: [a, a]\n",
        "projects.cardio.groups[1]: duplicate group",
    ),
]


@pytest.mark.parametrize(("text", "expected"), IDENTITY_BAD)
def test_bad_identity_config_is_reported(text, expected):
    if "projects:" not in text:
        text += OK_PROJECT
    problems = problems_of(text)
    assert any(expected in problem for problem in problems), problems


KEYCLOAK = """\
identity:
  provider: oidc
  checker_groups: [/havre/checkers]
  admin_groups: [havre-admins]
  oidc:
    authorize_url: https://sso.example.org/realms/r/protocol/openid-connect/auth
    token_url: https://sso.example.org/realms/r/protocol/openid-connect/token
    userdata_url: https://sso.example.org/realms/r/protocol/openid-connect/userinfo
    client_id: havre
    client_secret_file: /etc/havre/oidc-secret
projects:
  cardio:
    title: Cardio
    groups: [project-cardio, /hospital/cardiology]
  diabetes:
    title: Diabetes
"""


@pytest.mark.parametrize(
    ("provider_groups", "hub_groups"),
    [
        ([], []),
        (["project-cardio"], ["project-cardio"]),
        (["/project-cardio"], ["project-cardio"]),  # Keycloak's top-level path form
        (["/hospital/cardiology"], ["project-cardio"]),
        (["hospital/cardiology"], []),  # a configured path matches only itself
        (["/other/project-cardio"], []),
        (["project-diabetes", "unrelated"], ["project-diabetes"]),  # default project group
        (["/havre/checkers"], ["output-checkers"]),
        (["havre/checkers", "checkers"], []),
        (["/havre-admins"], ["hub-admins"]),
        (["PROJECT-CARDIO"], []),  # case matters
    ],
)
def test_provider_groups_map_to_hub_groups(provider_groups, hub_groups):
    config = parse_enclave_yaml(KEYCLOAK)
    assert config.hub_groups_for(provider_groups) == hub_groups


def test_membership_by_list_or_by_group():
    config = parse_enclave_yaml(KEYCLOAK + "    members: [bob]\n")
    assert config.is_member("bob", "diabetes")
    assert not config.is_member("alice", "diabetes")
    assert config.is_member("alice", "diabetes", ["project-diabetes"])
    assert not config.is_member("alice", "cardio", ["project-diabetes"])
    assert [p.slug for p in config.projects_of("alice", ["project-cardio"])] == ["cardio"]
    assert config.is_checker("alice", ["output-checkers"])
    assert not config.is_checker("alice", ["project-cardio"])
    assert config.identity.oidc is not None
    assert config.identity.oidc.username_claim == "preferred_username"
    assert parse_enclave_yaml(dump_enclave_config(config)) == config
