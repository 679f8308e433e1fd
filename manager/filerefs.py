"""A service's secret and config references, checked and completed against the store.

Docker's CLI turns names into ids before it calls the API; Shoal's API also takes a reference
by name alone (as a compose file gives it), fills in the id, and gives each file its default
target: /run/secrets/<name> for a secret, /<name> for a config.
"""
from __future__ import annotations

from typing import Any

from api.filetarget import target_path
from api.objects import Config, ConfigSpec, ContainerSpec, FileTarget, Secret, SecretSpec


class FileRefError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def pending_objects(kind: str, names) -> list[Any]:
    """Stand-ins for secrets or configs a change is about to create (a placement preview takes
    them as existing); their ids say what they are."""
    cls = Secret if kind == "secret" else Config
    spec_cls = SecretSpec if kind == "secret" else ConfigSpec
    return [cls(id=f"pending-{kind}-{name}", spec=spec_cls(name=name)) for name in sorted(names)]


def _lookup(objs: list[Any], ref_id: str, ref_name: str) -> Any | None:
    if ref_id:
        exact = [o for o in objs if o.id == ref_id]
        if exact:
            return exact[0]
        prefixed = [o for o in objs if o.id.startswith(ref_id)]
        return prefixed[0] if len(prefixed) == 1 else None
    named = [o for o in objs if o.spec.name == ref_name]
    return named[0] if named else None


def complete_references(cs: ContainerSpec, secrets: list[Any], configs: list[Any],
                        where: str = "TaskTemplate.ContainerSpec") -> None:
    """Fills ids, names and default file targets in place; raises FileRefError naming the field."""
    targets: dict[str, str] = {}
    for kind, refs, objs in (("secret", cs.secrets, secrets), ("config", cs.configs, configs)):
        for i, ref in enumerate(refs):
            field = f"{where}.{kind.capitalize()}s[{i}]"
            ref_id, ref_name = getattr(ref, f"{kind}_id"), getattr(ref, f"{kind}_name")
            if not ref_id and not ref_name:
                raise FileRefError(400, f"{field}: a {kind.capitalize()}ID or {kind.capitalize()}Name is required")
            obj = _lookup(objs, ref_id, ref_name)
            if obj is None:
                raise FileRefError(404, f"{field}: {kind} {ref_id or ref_name!r} not found")
            if ref_name and ref_id and obj.spec.name != ref_name:
                raise FileRefError(400, f"{field}.{kind.capitalize()}Name: {ref_name!r} is not the name of "
                                          f"{kind} {ref_id} ({obj.spec.name!r})")
            setattr(ref, f"{kind}_id", obj.id)
            setattr(ref, f"{kind}_name", obj.spec.name)
            if ref.file is None:
                ref.file = FileTarget(name=obj.spec.name)
            f = ref.file
            if not f.name:
                f.name = obj.spec.name
            if "\0" in f.name or (not f.name.startswith("/") and ("/" in f.name or f.name in (".", ".."))):
                raise FileRefError(400, f"{field}.File.Name: {f.name!r} must be a file name or an absolute path")
            for attr in ("uid", "gid"):
                value = getattr(f, attr) or "0"
                if not value.isdigit():
                    raise FileRefError(400, f"{field}.File.{attr.upper()}: must be a numeric id, got {value!r}")
                setattr(f, attr, value)
            if not 0 <= f.mode <= 0o7777:
                raise FileRefError(400, f"{field}.File.Mode: must be a file mode (0 to 0o7777), got {f.mode}")
            path = target_path(kind, f.name)
            if path == "/" or path in targets:
                other = targets.get(path, "")
                raise FileRefError(400, f"{field}.File.Name: target {path} is already used"
                                          f"{' by ' + other if other else ''}")
            targets[path] = f"{kind} {obj.spec.name!r}"
