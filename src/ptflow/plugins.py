"""Finding code by name: the built-ins, installed plugins (entry points), or an import path.

Both registries (models/registry.py, data/registry.py) resolve a name the same way:
1. a built-in name;
2. a name an installed package registers under the registry's entry-point group
   (`ptflow.models`, `ptflow.datasets`), after which it works like a built-in;
3. `PACKAGE.MODULE:NAME`, imported from the module.

The trust rule: a name the user typed is their own choice. A name read from a file (a model
file, a run folder's config) is code chosen by whoever wrote that file, so it is imported only
when it is built in or an installed entry point, and an import path only when the user said
they trust it (`--trust_model_code`, `trust_code=True`). Nothing is ever unpickled.
Pure standard library: `ptflow --help` lists the names without importing torch or numpy.
"""

from __future__ import annotations

import importlib
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ptflow.errors import PtflowError, UsageError, first_line

if TYPE_CHECKING:
    from importlib import metadata

IMPORT_PATH = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@dataclass(frozen=True, kw_only=True)
class Source:
    """Where the code for a name comes from; recorded in model files and run configs."""

    name: str  # as given: "mlp", "resnet_small" or "my_pkg.nets:Wide"
    kind: str  # "builtin", "entry_point" or "import_path"
    target: str  # the import path it loads, "module:attribute"
    package: str | None = None  # the distribution that provides it (entry points and import paths)
    version: str | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "target": self.target, "package": self.package,
                "version": self.version}


def is_import_path(name: str) -> bool:
    return IMPORT_PATH.fullmatch(name) is not None


def entry_points(group: str) -> dict[str, metadata.EntryPoint]:
    """The installed plugins of a group, by name (the first of duplicate names wins, as pip installs)."""
    from importlib import metadata  # 20 ms: here, so that `ptflow --help` does not pay it

    found: dict[str, metadata.EntryPoint] = {}
    for point in metadata.entry_points(group=group):
        found.setdefault(point.name, point)
    return found


def find(name: str, builtin: dict[str, str], group: str, what: str, also: tuple[str, ...] = ()) -> Source:
    """Where `name` comes from, without importing it; a one-line error naming the choices (the
    built-in names, `also`, and the installed plugins) if nowhere."""
    if name in builtin:
        return Source(name=name, kind="builtin", target=builtin[name])
    points = entry_points(group)
    if name in points:
        point = points[name]
        dist = getattr(point, "dist", None)
        return Source(name=name, kind="entry_point", target=point.value, package=dist.name if dist else None,
                      version=dist.version if dist else None)
    if is_import_path(name):
        package = name.split(".")[0].split(":")[0]
        return Source(name=name, kind="import_path", target=name, package=package, version=_version(package))
    plugins = f"; installed plugins: {', '.join(sorted(points))}" if points else ""
    raise UsageError(f"unknown {what} {name!r}: expected one of {', '.join([*builtin, *also])}{plugins}, or "
                     f"PACKAGE.MODULE:NAME")


def load(source: Source, trust_code: bool, origin: str | None, what: str) -> Callable:
    """The object `source` names, imported. origin names the file the name was read from (None: the
    user typed it); an import path read from a file needs trust_code."""
    if source.kind == "import_path" and origin is not None and not trust_code:
        raise PtflowError(f"{origin}: its {what} {source.name!r} is code imported from an import path written in "
                          f"the file; loading it runs that code. Pass --trust_model_code (trust_code=True in "
                          f"Python) if you trust whoever made the file, or install a package that registers "
                          f"it as a plugin")
    module_name, _, attribute = source.target.partition(":")
    hint = f" (from package {source.package} {source.version or ''}".rstrip() + ")" if source.package else ""
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise PtflowError(f"{what} {source.name!r}: cannot import {module_name}{hint}: {exc}") from None
    except (Exception, SystemExit) as exc:  # a module may raise anything while imported; Ctrl-C still interrupts
        raise PtflowError(f"{what} {source.name!r}: importing {module_name}{hint} failed: {describe(exc)}") from None
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PtflowError(f"{what} {source.name!r}: {module_name} has no {attribute}") from None
        except (Exception, SystemExit) as exc:  # a module's own __getattr__
            raise PtflowError(f"{what} {source.name!r}: reading {source.target} failed: {describe(exc)}") from None
    if not callable(obj):
        raise PtflowError(f"{what} {source.name!r}: {source.target} is not a class or function")
    return obj


@contextmanager
def running(what: str, name: str, doing: str, error: type[PtflowError] = PtflowError):
    """Code from outside ptflow (a dataset function, a model's constructor or forward) runs
    inside: whatever it raises becomes one line naming it, sys.exit() included. ptflow's own
    errors pass through, and KeyboardInterrupt is never caught, so Ctrl-C still interrupts.
    """
    try:
        yield
    except PtflowError:
        raise
    except (Exception, SystemExit) as exc:
        raise error(f"{what} {name!r}: {doing} failed: {describe(exc)}") from None


def describe(exc: BaseException) -> str:
    """An exception from someone else's code, as one line."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {first_line(exc)}"


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except (metadata.PackageNotFoundError, ValueError):
        return None
