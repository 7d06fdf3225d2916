"""The project tree and the part of it a user may see.

organisation -> project -> building/area -> location: every device hangs on a node, and a
user is given one or more nodes (roots). The scope is each root and everything below it,
never anything above or beside it. Everything a user sees or controls is decided by one
question, `scope.can_see(project_id)`, asked of the project the thing belongs to.

The tree comes from `projects:` in configuration.yaml (children nested), plus projects that
appear later (a device naming a project the configuration does not know becomes a root of its
own; `ProjectTree.add` for projects created in the UI). A scope stores its roots, not an
expanded set, so a project added under a user's root later is visible to that user at once.

Things with no project (a state without a device, an alarm raised before its device had a
project) are visible only to an unrestricted scope (super_admin, system tokens): "not known to
be yours" means "not yours".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any


class ProjectTree:
    """Parent links of every known project; `version` moves whenever the tree changes."""

    def __init__(self) -> None:
        self.parent: dict[str, str | None] = {}
        self.names: dict[str, str] = {}
        #: (lat, lon) of the projects that give one: the web UI's map places them.
        self.positions: dict[str, tuple[float, float]] = {}
        self.version = 0

    @classmethod
    def from_config(cls, projects: Sequence[dict[str, Any]] | None) -> ProjectTree:
        tree = cls()
        tree.load(projects or [])
        return tree

    def load(self, projects: Sequence[dict[str, Any]], parent: str | None = None) -> None:
        for project in projects:
            project_id = project.get("id")
            if not isinstance(project_id, str):
                continue
            self.add(project_id, parent, project.get("name"))
            lat, lon = project.get("lat"), project.get("lon")
            if isinstance(lat, int | float) and isinstance(lon, int | float):
                self.positions[project_id] = (float(lat), float(lon))
            self.load(project.get("children") or [], project_id)

    def add(self, project_id: str, parent: str | None = None, name: str | None = None) -> None:
        """Add a project, or move it under `parent`; an unknown parent becomes a root."""
        if parent is not None and parent not in self.parent:
            self.add(parent)
        if project_id not in self.parent or (
            parent is not None and self.parent[project_id] != parent
        ):
            self.parent[project_id] = parent
            self.version += 1
        if name:
            self.names[project_id] = name

    def __contains__(self, project_id: object) -> bool:
        return project_id in self.parent

    def ancestors_or_self(self, project_id: str) -> Iterator[str]:
        seen: set[str] = set()
        current: str | None = project_id
        while current is not None and current not in seen:  # a cycle must not hang us
            seen.add(current)
            yield current
            current = self.parent.get(current)

    def subtree(self, roots: Iterable[str]) -> frozenset[str]:
        roots = set(roots)
        return frozenset(
            {p for p in self.parent if any(a in roots for a in self.ancestors_or_self(p))}
            | roots
        )

    def children(self, project_id: str | None) -> list[str]:
        return sorted(p for p, parent in self.parent.items() if parent == project_id)


class Scope:
    """The projects a principal may see: `roots` and their subtrees; None roots = everything."""

    __slots__ = ("_allowed", "_tree", "_version", "roots")

    def __init__(self, tree: ProjectTree, roots: Iterable[str] | None) -> None:
        self._tree = tree
        self.roots: frozenset[str] | None = None if roots is None else frozenset(roots)
        self._allowed: frozenset[str] | None = None
        self._version = -1

    @property
    def unrestricted(self) -> bool:
        return self.roots is None

    def allowed(self) -> frozenset[str] | None:
        """Every visible project id (for SQL `IN` filters); None when unrestricted."""
        if self.roots is None:
            return None
        if self._allowed is None or self._version != self._tree.version:
            self._allowed = self._tree.subtree(self.roots)
            self._version = self._tree.version
        return self._allowed

    def can_see(self, project_id: str | None) -> bool:
        if self.roots is None:
            return True
        if not project_id:
            return False
        if self._allowed is not None and self._version == self._tree.version:
            return project_id in self._allowed
        # One project's ancestors, not the whole subtree: routing an alarm asks this once per
        # subscriber with a fresh Scope, and building every subtree made that O(users x tree).
        # A project the tree does not know counts as a root of its own (as `subtree` does).
        return any(p in self.roots for p in self._tree.ancestors_or_self(project_id))

    def covers(self, project_ids: Iterable[str]) -> bool:
        return all(self.can_see(p) for p in project_ids)

    def narrow(self, roots: Iterable[str] | None) -> Scope:
        """This scope cut down to `roots` (a token's scope): never wider than this one."""
        if roots is None:
            return self
        return Scope(self._tree, [r for r in roots if self.can_see(r)])

    def filter(self, items: Iterable[Any], project_of: Any) -> list[Any]:
        if self.roots is None:
            return list(items)
        return [item for item in items if self.can_see(project_of(item))]

    def as_list(self) -> list[str] | None:
        return None if self.roots is None else sorted(self.roots)

    def __repr__(self) -> str:
        return f"<Scope {'*' if self.roots is None else sorted(self.roots)}>"
