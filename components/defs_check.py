"""Every defs.yaml under defs/ checked before dagster loads it, so each mistake has a clear message.

Called from definitions.py: file-level mistakes (encoding, empty file, duplicate keys, unknown
component type) for every file, and the attributes of our components against their models
(components.core.attributes). All problems are reported together, each with file:line and key.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import dagster as dg

from components.core.attributes import check_attributes
from components.core.defs_file import ComponentDoc, read_defs_file, unknown_type
from components.core.errors import ConfigError
from components.workload import WorkloadComponent

DEFS_DIR = "defs"
_DEFS_FILE_NAMES = ("defs.yaml", "defs.yml", "component.yaml")


def defs_error(project_root: Path) -> ConfigError | None:
    """One ConfigError listing every problem in the project's defs/*.yaml files, or None when all is well."""
    errors: list[ConfigError] = []
    for file in _defs_files(Path(project_root) / DEFS_DIR):
        errors.extend(file_errors(file))
    return combined(errors)


def load_checked(project_root: Path) -> tuple[dg.Definitions | None, ConfigError | None]:
    """The project's definitions, or the user's mistake that stops them: (defs, None) or (None, error).

    Runs defs_error first, then dagster's load, then the asset-graph check. A ConfigError from any of
    them (also one a component raised inside dagster's load) comes back bare, without its traceback,
    so the caller can raise it from one short frame: `dg check defs` then shows our message, not
    dagster's component tree and stack. Any other exception is a bug and propagates unchanged.
    """
    from components.core.graph_check import check_graph
    from components.session_sensor import with_sessions_sensor

    error = defs_error(project_root)
    if error is not None:
        return None, error
    try:
        defs = check_graph(dg.load_from_defs_folder(path_within_project=Path(project_root)))
        return with_sessions_sensor(defs, Path(project_root)), None
    except Exception as exc:  # noqa: BLE001 - only our ConfigError is unwrapped; the rest re-raised
        mistake = _config_error(exc)
        if mistake is None:
            raise
        return None, mistake.with_traceback(None)


def _config_error(exc: BaseException) -> ConfigError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ConfigError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def file_errors(file: Path) -> list[ConfigError]:
    """Every problem in one defs.yaml: the file-level one, else those of each component's attributes."""
    try:
        docs = read_defs_file(file)
    except ConfigError as exc:
        return [exc]
    return [error for doc in docs for error in _check_document(doc)]


def combined(errors: list[ConfigError]) -> ConfigError | None:
    """None, the one error, or one error whose message lists them all (each keeps its file:line)."""
    if not errors:
        return None
    if len(errors) == 1:
        return errors[0]
    listing = "\n".join(f"- {error}".replace("\n", "\n  ") for error in errors)
    return ConfigError(f"{len(errors)} problems in the YAML under {DEFS_DIR}/:\n{listing}")


def _defs_files(defs_dir: Path) -> list[Path]:
    found = []
    for name in _DEFS_FILE_NAMES:
        for file in defs_dir.rglob(name):
            if not any(part.startswith((".", "__")) for part in file.relative_to(defs_dir).parts):
                found.append(file)
    return sorted(found)


def _check_document(doc: ComponentDoc) -> list[ConfigError]:
    cls = component_class(doc.type_name)
    if cls is None:
        return [unknown_type(doc, registered_types(doc.type_name))]
    if doc.attributes is None or not issubclass(cls, WorkloadComponent):
        return []  # other components' attributes are dagster's to check
    return check_attributes(doc.attributes, cls, doc.file)


def component_class(type_name: str) -> type[dg.Component] | None:
    """The component class a `type:` names, or None when it does not import or is no component."""
    module_name, _, attr = type_name.rpartition(".")
    if not module_name or module_name.startswith("."):
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    cls = getattr(module, attr, None)
    return cls if isinstance(cls, type) and issubclass(cls, dg.Component) else None


def registered_types(type_name: str) -> list[str]:
    """Component types to suggest for a misspelled one: ours and those of the module it names."""
    names = set()
    candidates = ["components", type_name.rpartition(".")[0]]
    for module_name in dict.fromkeys(c for c in candidates if c and not c.startswith(".")):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for attr in dir(module):
            obj = getattr(module, attr)
            if isinstance(obj, type) and issubclass(obj, dg.Component) and not attr.startswith("_"):
                names.add(f"{module_name}.{attr}")
    return sorted(names)
