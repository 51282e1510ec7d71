"""One-line patches of real functions, compiled from their own source: the mechanism behind the mutation catalog.

A :class:`SourcePatch` names a function (or method) and an exact ``old -> new`` fragment of its source. Building it
reads the function with :func:`inspect.getsource`, checks that ``old`` occurs exactly once and spans the declared
number of lines, replaces it, checks that exactly those lines changed, and compiles the result **with the real file
name and line numbers** in the function's own module namespace (closure cells, ``super()`` included). Frames and
tracebacks of the patched function therefore point into the real file, and the reported location is the mutated
line of the real file. Nothing is edited on disk and no module attribute is replaced: the caller installs the
built function where only the candidate sees it (see :func:`reroute` for functions reached through a caller).

Rules that keep a patch honest:

- ``old`` must occur exactly once in the function's source; if the source changed and it no longer matches (or
  matches twice) the build fails with :class:`SourcePatchError` naming the function, file and fragment — a stale
  patch never runs silently;
- ``new`` keeps the line count of ``old`` (an inserted statement joins its line with ``;``), so every other line of
  the compiled function keeps its real line number;
- ``old`` lies on one line unless the patch declares ``lines=N`` (e.g. two swapped statements); only those lines can
  change, and the location is the first line that does.

Several patches of one function (several bugs injected into the same code) compile into one function with
:func:`build_together`, each found in the original source and located on its own lines; patches sharing a line are
refused.
"""

from __future__ import annotations

import __future__
import ast
import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

from pogo_audit.model.locations import display_path

REPO_ROOT = Path(__file__).resolve().parent.parent

_FUTURE_FLAGS = reduce(lambda acc, name: acc | getattr(__future__, name).compiler_flag,
                       __future__.all_feature_names, 0)
PATCH_SCOPE = "__source_patch_scope__"


class SourcePatchError(Exception):
    """A patch does not apply to the current source (stale or ambiguous fragment, wrong line count, ...)."""


@dataclass(frozen=True)
class Location:
    """Where a patch lands: ``path`` relative to the repository root (posix), 1-based ``line``, the function's
    qualified name, and the original and mutated text of that line (stripped; ``mutated`` is None when the
    location only marks code that a behavioural mutant replaces)."""

    path: str
    line: int
    function: str
    original: str
    mutated: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "function": self.function, "original": self.original,
                "mutated": self.mutated}


@dataclass(frozen=True)
class Patched:
    """A built patch: the compiled function, its location, and the full original and mutated source lines."""

    function: Callable[..., Any]
    location: Location
    original_source: list[str]
    mutated_source: list[str]


def _source(target: Callable[..., Any]) -> tuple[Callable[..., Any], list[str], int, str]:
    fn = inspect.unwrap(target)
    if not isinstance(fn, types.FunctionType):
        raise SourcePatchError(f"{target!r} is not a Python function; only functions and methods can be patched")
    try:
        lines, start = inspect.getsourcelines(fn)
        path = inspect.getsourcefile(fn)
    except (OSError, TypeError) as exc:
        raise SourcePatchError(f"{fn.__qualname__}: source not available ({exc})") from None
    if path is None:
        raise SourcePatchError(f"{fn.__qualname__}: source file not found")
    return fn, lines, start, path


def _find_once(fn: Callable[..., Any], source: str, path: str, start: int, fragment: str) -> int:
    count = source.count(fragment)
    if count != 1:
        found = "not found" if count == 0 else f"found {count} times"
        raise SourcePatchError(f"{fn.__qualname__} ({display_path(path, REPO_ROOT)}:{start}): fragment {fragment!r} {found} in "
                               "its source; the code changed or the fragment is ambiguous — update the mutant")
    return source.index(fragment)


@dataclass(frozen=True)
class SourceLine:
    """The unique line of ``target``'s source that contains ``fragment`` (a location without a patch: what a
    behavioural mutant replaces). Fails like a :class:`SourcePatch` when the fragment is missing or ambiguous."""

    target: Callable[..., Any]
    fragment: str

    def location(self) -> Location:
        fn, lines, start, path = _source(self.target)
        at = _find_once(fn, "".join(lines), path, start, self.fragment)
        index = "".join(lines)[:at].count("\n")
        return Location(display_path(path, REPO_ROOT), start + index, fn.__qualname__, lines[index].strip())


@dataclass(frozen=True)
class SourcePatch:
    """Replace ``old`` by ``new`` in ``target``'s source; ``lines`` is how many source lines ``old`` spans."""

    target: Callable[..., Any]
    old: str
    new: str
    lines: int = 1

    def build(self) -> Patched:
        """The patched function compiled in ``target``'s module namespace, and its location (see the module
        docstring for the checks). Raises :class:`SourcePatchError` when the patch does not apply."""
        function, (location,), lines, new_lines = _apply(self.target, [self])
        return Patched(function, location, lines, new_lines)


def build_together(patches: list[SourcePatch]) -> tuple[Callable[..., Any], list[Location]]:
    """Several patches of **one** function compiled into one function (several bugs injected into the same code),
    with one location per patch, in the order given. Each fragment is found in the original source under the same
    rules as :meth:`SourcePatch.build`; patches whose lines overlap cannot be combined (:class:`SourcePatchError`)."""
    if not patches:
        raise SourcePatchError("no patch to build")
    targets = {inspect.unwrap(p.target) for p in patches}
    if len(targets) != 1:
        raise SourcePatchError("patches of different functions cannot be built into one function")
    function, locations, _, _ = _apply(patches[0].target, patches)
    return function, locations


def _apply(target: Callable[..., Any], patches: list[SourcePatch]
           ) -> tuple[Callable[..., Any], list[Location], list[str], list[str]]:
    """Apply every patch (fragments found in the original source, line ranges disjoint) and compile the result."""
    fn, lines, start, path = _source(target)
    where = f"{fn.__qualname__} ({display_path(path, REPO_ROOT)}:{start})"
    source = "".join(lines)
    edits = []
    for patch in patches:
        at = _find_once(fn, source, path, start, patch.old)
        first = source[:at].count("\n")
        last = source[:at + len(patch.old.rstrip("\n"))].count("\n")
        if last - first + 1 != patch.lines:
            raise SourcePatchError(f"{where}: fragment {patch.old!r} spans {last - first + 1} line(s), the patch "
                                   f"declares {patch.lines}")
        if patch.new.count("\n") != patch.old.count("\n"):
            raise SourcePatchError(f"{where}: new fragment {patch.new!r} has {patch.new.count(chr(10)) + 1} line(s), "
                                   f"old has {patch.old.count(chr(10)) + 1}; keep the line count (join an inserted "
                                   "statement with ';') so every other line keeps its real line number")
        edits.append((at, first, last, patch))
    ordered = sorted(edits, key=lambda e: e[0])
    for (_, _, last, a), (_, first, _, b) in zip(ordered, ordered[1:]):
        if first <= last:
            raise SourcePatchError(f"{where}: fragments {a.old!r} and {b.old!r} share a line; they cannot be "
                                   "applied together")
    mutated = source
    for at, _, _, patch in reversed(ordered):
        mutated = mutated[:at] + patch.new + mutated[at + len(patch.old):]
    new_lines = mutated.splitlines(keepends=True)
    locations = []
    for _, first, last, patch in edits:
        # same line count and every edit confined to its own lines first..last: no other line can differ
        changed = [i for i in range(first, last + 1) if lines[i] != new_lines[i]]
        if not changed:
            raise SourcePatchError(f"{where}: the new fragment {patch.new!r} changes nothing")
        i = changed[0]
        locations.append(Location(display_path(path, REPO_ROOT), start + i, fn.__qualname__, lines[i].strip(),
                                  new_lines[i].strip()))
    _refuse_name_mangling(fn, mutated, where)
    return _compile(fn, mutated, start, path), locations, list(lines), new_lines


def _refuse_name_mangling(fn: Callable[..., Any], source: str, where: str) -> None:
    """Private ``__names`` are mangled with the class name at compile time; compiled outside the class they would
    silently refer to something else, so such methods are refused."""
    if "." not in fn.__qualname__.replace(".<locals>", ""):
        return
    tree = ast.parse(_parseable(source))
    for node in ast.walk(tree):
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
        if name.startswith("__") and not name.endswith("__"):
            raise SourcePatchError(f"{where}: uses the class-private name {name}, which cannot be recompiled "
                                   "outside its class")


def _parseable(source: str) -> str:
    indent = len(source) - len(source.lstrip(" \t"))
    return f"if True:\n{source}" if indent else source


def _compile(fn: types.FunctionType, source: str, start: int, path: str) -> Callable[..., Any]:
    """Compile ``source`` (the whole ``def``, decorators included) so that its lines keep their real numbers in
    ``path``: padded with blank lines, and — for an indented def (a method, a nested function) — wrapped in a scope
    function whose parameters are the original's free variables (``__class__`` for ``super()``), called with the
    original closure's current values."""
    flags = fn.__code__.co_flags & _FUTURE_FLAGS
    name = fn.__code__.co_name
    indent = len(source) - len(source.lstrip(" \t"))
    freevars = fn.__code__.co_freevars
    if indent:
        if start < 2:
            raise SourcePatchError(f"{fn.__qualname__}: an indented def on line {start} cannot keep its line number")
        head = f"def {PATCH_SCOPE}({', '.join(freevars)}):\n"
        text = "\n" * (start - 2) + head + source + f"{source[:indent]}return {name}\n"
    else:
        text = "\n" * (start - 1) + source
    code = compile(text, path, "exec", flags=flags, dont_inherit=True)
    namespace: dict[str, Any] = {}
    exec(code, fn.__globals__, namespace)  # noqa: S102 - the real function's own source, one fragment replaced
    if indent:
        cells = [c.cell_contents for c in fn.__closure__ or ()]
        built = namespace[PATCH_SCOPE](*cells)
    else:
        built = namespace[name]
    if isinstance(built, (staticmethod, classmethod)):
        built = built.__func__
    if isinstance(built, types.FunctionType):
        built.__qualname__ = fn.__qualname__
    return built


def reroute(caller: Callable[..., Any], callee: Callable[..., Any], replacement: Callable[..., Any]) -> \
        Callable[..., Any]:
    """A copy of ``caller`` whose global name(s) for ``callee`` resolve to ``replacement``.

    This is how a patched module-level function reaches only the candidate: the module keeps its function, the
    reference (and every other caller) keeps calling it, and only the candidate's copy of the caller — installed on
    the candidate instance — sees the mutant. The copy shares code, defaults and closure with ``caller`` but reads
    a snapshot of its module's globals (functions nested in it inherit that snapshot). Raises
    :class:`SourcePatchError` when ``caller`` does not reach ``callee`` through a global name.
    """
    fn = inspect.unwrap(caller)
    names = {n for n, v in fn.__globals__.items() if v is callee} & _referenced_names(fn.__code__)
    if not names:
        raise SourcePatchError(f"{fn.__qualname__} does not call {getattr(callee, '__qualname__', callee)} through "
                               "a module-level name; reroute a caller that does")
    env = dict(fn.__globals__)
    env.update(dict.fromkeys(names, replacement))
    copy = types.FunctionType(fn.__code__, env, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__qualname__ = fn.__qualname__
    copy.__annotations__ = fn.__annotations__
    copy.__doc__ = fn.__doc__
    copy.__dict__.update({k: v for k, v in fn.__dict__.items() if k != "__wrapped__"})
    return copy


def _referenced_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _referenced_names(const)
    return names


def resolves_to(owner: Any, name: str, function: Callable[..., Any]) -> bool:
    """Whether ``owner.name`` (an instance or a class, looked up on the class) is ``function`` — the check that
    installing a patch there replaces the code the patch was built from."""
    cls = owner if isinstance(owner, type) else type(owner)
    attr = inspect.getattr_static(cls, name, None)
    if isinstance(attr, (staticmethod, classmethod)):
        attr = attr.__func__
    return attr is function

