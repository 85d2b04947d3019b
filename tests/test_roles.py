"""One role vocabulary (issue 25): P, P-T, RI-T as paper 003; older names are read as them."""

from __future__ import annotations

import pytest

from transferscope import roles
from transferscope.analyses import ModelEntry
from transferscope.errors import ConfigError


@pytest.mark.parametrize("text,expect", [("fine-tuned", "P-T"), ("P-T", "P-T"), ("pt", "P-T"),
                                         ("scratch", "RI-T"), ("from scratch", "RI-T"),
                                         ("RI-T", "RI-T"), ("source", "P"), (None, "other")])
def test_every_name_reads_as_one_role(text, expect):
    assert roles.role(text) == expect


def test_unknown_role_is_one_line_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown model role 'RI_T'.*did you mean 'RI-T'"):
        roles.role("RI_T")


def test_init_decides_the_role_and_the_source_weights_file_counts_as_pretrained():
    assert roles.role_of_init("imagenet") == roles.role_of_init("pretrained") == roles.PT
    assert roles.role_of_init("random") == roles.RIT
    assert roles.role_of_init("w.safetensors") == roles.OTHER
    assert roles.role_of_init("w.safetensors", source_init="w.safetensors") == roles.PT
    assert roles.INIT[roles.PT] == "imagenet" and roles.INIT[roles.RIT] == "random"


def test_model_entries_store_the_papers_names():
    assert ModelEntry("a", "fine-tuned", "x").role == "P-T"
    assert ModelEntry("b", "scratch", "x").role == "RI-T"
    assert {roles.DISPLAY[r] for r in (roles.PT, roles.RIT)} == {"fine-tuned", "from scratch"}
