"""What the pack says it supports matches the hosts the tests run on (devtools/hostenv.py HOSTS)."""

from __future__ import annotations

import re

import hostenv
import tomllib

REPO = hostenv.REPO


def test_registry_metadata_states_the_oldest_tested_comfyui():
    comfy = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["comfy"]
    assert comfy["requires-comfyui"] == f">={hostenv.FLOOR.version}"


def test_readme_names_every_tested_comfyui_and_editor():
    readme = (REPO / "README.md").read_text()
    [line] = [p for p in readme.split("\n\n") if p.startswith("**Supported ComfyUI:**")]
    for host in hostenv.HOSTS:
        assert re.search(rf"\b{re.escape(host.version)}\b", line), f"README's supported line lacks {host.version}"
        assert host.frontend in line, f"README's supported line lacks editor {host.frontend}"


def test_hosts_are_listed_newest_first_with_distinct_versions():
    versions = [tuple(int(part) for part in host.version.split(".")) for host in hostenv.HOSTS]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions)


def test_the_newest_host_runs_everything_and_the_floor_what_depends_on_the_host():
    assert hostenv.NEWEST.ci == "all", "the whole suite runs on the newest host"
    assert hostenv.FLOOR.ci == "host", "the oldest supported host runs every test marked `host`"
    assert [host.ci for host in hostenv.HOSTS].count("all") == 1
    assert {host.ci for host in hostenv.HOSTS} <= set(hostenv.CI_SELECTIONS)


def test_readme_states_what_each_host_runs():
    readme = (REPO / "README.md").read_text()
    [line] = [" ".join(p.split()) for p in readme.split("\n\n") if p.startswith("**Supported ComfyUI:**")]
    for host in hostenv.HOSTS:
        assert f"{host.version} ({CI_WORDS[host.ci]}" in line, \
            f"README's supported line must say that {host.version} runs {CI_WORDS[host.ci]}"


# How the README's supported line says what a host runs, right after its version (in brackets).
CI_WORDS = {"all": "the whole suite", "host": "what depends on the host", "contract": "the host contract"}
