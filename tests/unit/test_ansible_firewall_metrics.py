"""The havre_firewall role's rule for the published metrics port (issue #19), rendered as
Ansible renders the role's template with its defaults. The live proof (the rule loaded, a
scrape from another address dropped, the named scraper's answered) is
tests/integration/test_metrics_live.py::test_the_published_metrics_port_answers_only_the_named_scraper.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLE = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "havre_firewall"
templating = pytest.importorskip("ansible.template", reason="ansible-core is a dev dependency")


def rules(**variables: str) -> list[str]:
    from ansible.parsing.dataloader import DataLoader

    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    templar = templating.Templar(
        loader=DataLoader(), variables={**defaults, "ansible_managed": "t", **variables}
    )
    text = templar.template((ROLE / "templates" / "rules.v4.j2").read_text())
    return [line for line in text.splitlines() if line.startswith("-A ")]


def test_no_metrics_rule_unless_both_the_port_and_the_scraper_are_named():
    assert not [r for r in rules() if "metrics" in r]
    assert not [r for r in rules(havre_metrics_publish="10.0.0.1:9190") if "metrics" in r]
    assert not [r for r in rules(havre_metrics_scrape_from="10.0.0.5") if "metrics" in r]


def test_the_rule_drops_every_other_source_before_the_chain_returns():
    found = rules(havre_metrics_publish="10.0.0.1:9190", havre_metrics_scrape_from="10.0.0.5")
    (rule,) = [r for r in found if "metrics" in r]
    assert "--ctorigdst 10.0.0.1 --ctorigdstport 9190 ! --ctorigsrc 10.0.0.5" in rule
    assert rule.endswith("-j DROP")
    assert found.index(rule) < found.index("-A HAVRE-FORWARD -j RETURN")
