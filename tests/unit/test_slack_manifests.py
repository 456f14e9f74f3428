"""The Slack app manifests in slack/ are valid against Slack's own manifest JSON Schema.

The schema is Slack's published one (slackapi/manifest-schema v0.5.0, vendored under
tests/fixtures/slack_manifest_schema with its source and MIT licence); its ``$ref`` URLs
are resolved to the vendored files, so the test needs no network.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from tests.paths import FIXTURES, REPO

SCHEMAS = FIXTURES / "slack_manifest_schema"
REF = "https://raw.githubusercontent.com/slackapi/manifest-schema/v0.5.0/schemas/"
MANIFESTS = {
    "http": REPO / "slack" / "manifest-http.yaml",
    "socket-mode": REPO / "slack" / "manifest-socket-mode.yaml",
}


def validator() -> Draft7Validator:
    registry = Registry()
    for version in ("1.0.0", "2.0.0"):
        name = f"manifest.schema.{version}.json"
        contents = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
        registry = registry.with_resource(
            REF + name, Resource.from_contents(contents, default_specification=DRAFT7)
        )
    main = json.loads((SCHEMAS / "manifest.schema.json").read_text(encoding="utf-8"))
    return Draft7Validator(main, registry=registry, format_checker=FormatChecker())


def manifest(kind: str) -> dict[str, Any]:
    """The manifest as an operator pastes it, with <your-host> filled in."""
    text = MANIFESTS[kind].read_text(encoding="utf-8")
    return yaml.safe_load(text.replace("<your-host>", "clampdown.example.com"))


def problems(document: dict[str, Any]) -> list[str]:
    found = []
    for error in validator().iter_errors(document):
        found += [f"{list(e.absolute_path)}: {e.message}" for e in error.context or [error]]
    return found


@pytest.mark.parametrize("kind", sorted(MANIFESTS))
def test_each_manifest_is_valid_for_slack(kind: str) -> None:
    assert problems(manifest(kind)) == []


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda m: m.pop("display_information"), "the old Socket Mode snippet had none"),
        (lambda m: m["settings"].update(socket_mode_enabled="yes"), "a string, not a boolean"),
        (lambda m: m["features"]["slash_commands"][0].pop("description"), "required"),
        (lambda m: m["oauth_config"]["scopes"].update(bot="chat:write"), "not a list"),
        (lambda m: m.update(event_subscription={}), "unknown top-level key"),
    ],
)
def test_the_schema_refuses_a_broken_manifest(change, why: str) -> None:
    broken = copy.deepcopy(manifest("socket-mode"))
    change(broken)
    assert problems(broken), f"accepted a manifest that should fail ({why})"


def test_the_two_manifests_differ_only_in_how_slack_reaches_the_server() -> None:
    http, socket = manifest("http"), manifest("socket-mode")
    assert http["settings"]["socket_mode_enabled"] is False
    assert socket["settings"]["socket_mode_enabled"] is True
    assert "request_url" not in socket["settings"]["interactivity"]
    assert all("url" not in c for c in socket["features"]["slash_commands"])
    for document in (http, socket):
        document["settings"].pop("socket_mode_enabled")
        document["settings"]["interactivity"].pop("request_url", None)
        for command in document["features"]["slash_commands"]:
            command.pop("url", None)
    assert http == socket


def test_the_scopes_are_the_ones_docs_slack_md_explains() -> None:
    """docs/slack.md points at the files (no copy of a manifest to drift) and its scope
    table names exactly the scopes the manifests ask for."""
    docs = (REPO / "docs" / "slack.md").read_text(encoding="utf-8")
    assert "slack/manifest-http.yaml" in docs and "slack/manifest-socket-mode.yaml" in docs
    assert "display_information:" not in docs, "a manifest copy is back in docs/slack.md"
    scopes = set(manifest("http")["oauth_config"]["scopes"]["bot"])
    table = docs[docs.index("### Scopes") : docs.index("## Socket Mode")]
    named = {
        cell.strip().strip("`")
        for line in table.splitlines()
        if line.startswith("| ")
        for cell in [line.rstrip(" |").rsplit("|", 1)[-1]]
    }
    assert scopes == named - {"bot scope", "none", "---"}
