"""Every hook spec has a section in docs/writing-plugins.md (as Datasette's test_docs does).

An integrator reads the docs, not hookspecs.py; a hook added without a section would be a hook
nobody knows how to use. The test is parametrised by hook so a failure names the missing one.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from hub.core import hookspecs

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-plugins.md"
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def hookspec_names() -> list[str]:
    """Functions in hub.core.hookspecs carrying pluggy's `voltwatch_spec` marker."""
    marker = f"{hookspecs.PROJECT}_spec"
    return sorted(
        name
        for name, func in inspect.getmembers(hookspecs, inspect.isfunction)
        if getattr(func, marker, None) is not None
    )


def headings() -> list[str]:
    text = _FENCE.sub("", DOC.read_text(encoding="utf-8"))  # a `# comment` in code is no heading
    return _HEADING.findall(text)


def test_hookspecs_are_found() -> None:
    # Guards the parametrisation below: an empty list would make every check vacuous.
    names = hookspec_names()
    assert "voltwatch_setup" in names
    assert len(names) >= 9


@pytest.mark.parametrize("hook", hookspec_names())
def test_hook_has_a_section(hook: str) -> None:
    assert DOC.exists(), f"{DOC} is missing"
    assert any(hook in heading for heading in headings()), (
        f"hook {hook} has no section heading in docs/writing-plugins.md"
    )
