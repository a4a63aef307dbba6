"""Run directories: a JSON manifest next to safetensors tensors, written atomically.

Every command reads the previous command's run directory and writes its own. A run directory is
self-describing (``manifest.json``: what was run, on which model, SAE, hook and data, with which
library versions and options) and is refused by a later command when it was made for a different
model or SAE, with a message that names the field that differs.

Writes go to a hidden temporary directory beside the target and are renamed into place only when
complete, so a failure never leaves a half-written output. An existing output is replaced only
when the caller passes ``force=True`` (the CLI's ``--force``).
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hookunlearn import faults
from hookunlearn.errors import ArtifactError, IncompatibleArtifactError
from hookunlearn.runconfig import current_run_config

if TYPE_CHECKING:
    import torch

SCHEMA_VERSION = 1
"""Version of the manifest layout. Bumped on any incompatible change; readers refuse others."""

MANIFEST_NAME = "manifest.json"
TENSORS_NAME = "tensors.safetensors"

_TRACKED_PACKAGES = ("hookunlearn", "torch", "transformer-lens", "sae-lens", "transformers", "datasets")

# field name -> accepted JSON types, for validating manifests read from disk
_REQUIRED_FIELDS: dict[str, tuple[type, ...]] = {
    "schema_version": (int,),
    "kind": (str,),
    "command": (str,),
    "options": (dict,),
    "created_at": (str,),
    "versions": (dict,),
}
_OPTIONAL_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (dict, type(None)),
    "saes": (list,),
    "hook": (str, type(None)),
    "data": (dict,),
    "seed": (int, type(None)),
    "inputs": (dict,),
    "extra": (dict,),
    "config": (dict,),
}


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that decide a result (read from package metadata,
    so nothing heavy is imported)."""
    versions = {"python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


@dataclass
class Manifest:
    """What a run directory holds and how it was made."""

    kind: str
    """What the directory is: ``selection``, ``subspace``, ``unlearned``, ``report``, ``world``, ..."""
    command: str
    """The command line (or library call) that made it."""
    options: dict[str, Any] = field(default_factory=dict)
    """Every option of the run, defaults included, as JSON values."""
    model: dict[str, Any] | None = None
    """Model description: spec, architecture, ``config_fingerprint``, processing, dtype."""
    saes: list[dict[str, Any]] = field(default_factory=list)
    """One description per SAE used: spec, hook, d_in, d_sae, architecture."""
    hook: str | None = None
    """The hook point the run is about (e.g. ``blocks.2.hook_resid_post``), if one."""
    data: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Fingerprints of every dataset read, by role (``forget``, ``retain``, ...)."""
    seed: int | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    """Run directories this run was made from, by role."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Command-specific results and diagnostics."""
    config: dict[str, Any] = field(default_factory=current_run_config)
    """The effective configuration of the CLI command that wrote it: every option's value and
    where it came from (command line, ``--config`` file, ``--recipe``, default); empty for
    library calls."""
    versions: dict[str, str] = field(default_factory=library_versions)
    created_at: str = field(default_factory=_now)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=_json_default) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "manifest") -> Manifest:
        """Validate and build; errors name the field and the source."""
        if not isinstance(data, Mapping):
            raise ArtifactError(f"{source}: expected a JSON object, found {type(data).__name__}.")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            if isinstance(version, int) and version > SCHEMA_VERSION:
                hint = "it was written by a newer hookunlearn; upgrade hookunlearn to read it"
            elif isinstance(version, int):
                hint = "it was written by an older hookunlearn; re-run the command that made it"
            else:
                hint = "the field is missing or not an integer; this is not a hookunlearn manifest"
            raise IncompatibleArtifactError(
                f"{source}: field 'schema_version' is {version!r}, this hookunlearn reads "
                f"schema_version {SCHEMA_VERSION} ({hint})."
            )
        for name, types in _REQUIRED_FIELDS.items():
            if name not in data:
                raise ArtifactError(f"{source}: required field '{name}' is missing.")
            if not isinstance(data[name], types):
                raise ArtifactError(
                    f"{source}: field '{name}' should be {_type_names(types)}, found {type(data[name]).__name__}."
                )
        for name, types in _OPTIONAL_FIELDS.items():
            if name in data and not isinstance(data[name], types):
                raise ArtifactError(
                    f"{source}: field '{name}' should be {_type_names(types)}, found {type(data[name]).__name__}."
                )
        known = set(_REQUIRED_FIELDS) | set(_OPTIONAL_FIELDS)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ArtifactError(
                f"{source}: unknown field(s) {', '.join(unknown)} for schema_version {SCHEMA_VERSION}."
            )
        return cls(**{key: data[key] for key in data})


def _type_names(types: tuple[type, ...]) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer", type(None): "null"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------


def check_can_write(out_dir: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Fail early (before any work) when ``out_dir`` exists and ``force`` is not set."""
    out = Path(out_dir)
    parent = next((p for p in out.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ArtifactError(f"output {out}: {parent} is a file, not a directory; choose another output path.")
    if parent is not None and not out.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise ArtifactError(f"output {out}: {parent} is not writable; choose another output location.")
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"output {out}: exists and is not a directory; choose another output path.")
    if out.exists() and not force:
        raise ArtifactError(
            f"output directory {out} already exists; pass --force to replace it, "
            "or choose another output directory."
        )
    return out


def check_not_input(
    out_dir: str | os.PathLike[str], inputs: Mapping[str, str | os.PathLike[str] | None]
) -> None:
    """Refuse an output that is one of the inputs, or holds one, or sits inside one (``--force``
    would replace what the run reads); ``inputs``: label (e.g. ``SELECTION_DIR``) -> path."""
    out = Path(out_dir).resolve()
    for label, given in inputs.items():
        if given is None or not Path(given).exists():
            continue  # a spec that is not a local path (world, a hub id)
        path = Path(given).resolve()
        if out == path or out in path.parents or path in out.parents:
            relation = "is" if out == path else "holds" if out in path.parents else "is inside"
            raise ArtifactError(
                f"output {out_dir} {relation} the input {label} {given}; writing it would replace what "
                "the run reads. Choose another output directory."
            )


@contextmanager
def run_directory(out_dir: str | os.PathLike[str], *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``out_dir`` atomically.

    On any exception the temporary directory is removed and ``out_dir`` is left as it was
    (absent, or the previous run's content when ``force`` was given).
    """
    out = check_can_write(out_dir, force=force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    except OSError as exc:
        raise _write_error(out, exc) from None
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary directory
    try:
        yield tmp
        _ordinary_modes(tmp, umask)
        faults.reached("rename")
        _replace_dir(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            raise _write_error(out, exc) from None
        raise


@contextmanager
def staged_file(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it gets the mode the umask asks for
    and replaces ``target`` atomically, on any exception it is removed (`run_directory` for one
    file; overwrite checks are the caller's)."""
    out = Path(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)  # mkstemp makes it private
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR})
"""Errors of the output location (full disk, read-only, not a directory): user errors, not bugs."""


def _write_error(out: Path, exc: OSError) -> ArtifactError:
    what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded"}.get(
        exc.errno or 0, exc.strerror or str(exc)
    )
    return ArtifactError(
        f"output {out}: could not write ({what}: {exc.filename or out.parent}); nothing was written "
        f"and {'the previous ' + out.name + ' is unchanged' if out.exists() else 'no output was left'}. "
        "Free space or choose another output location."
    )


def _remove_stale_staging(out: Path) -> None:
    """Remove staging directories of ``out`` left by a killed process (its pid is in the name and
    no longer runs); a live writer's are left alone."""
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        pid = stale.name.removeprefix(f".{out.name}.partial-").split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)) and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's live process
        return True
    return True


def _ordinary_modes(directory: Path, umask: int) -> None:
    """Give each file the mode the umask asks for (some writers, e.g. safetensors, make them 0600)."""
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = Path(root) / name
            if not path.is_symlink():
                executable = path.stat().st_mode & 0o111
                path.chmod((0o777 if executable else 0o666) & ~umask)


def _replace_dir(new: Path, out: Path) -> None:
    if not out.exists():
        os.replace(new, out)
        return
    # Move the old directory aside first so that at every moment either the old or the new
    # complete directory is at `out`'s path (no instant with a half-deleted output).
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rmdir(old)
    os.replace(out, old)
    try:
        os.replace(new, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    path.write_text(
        json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n", encoding="utf-8"
    )


def save_tensors(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """Save named tensors as safetensors (contiguous CPU copies; no pickle)."""
    from safetensors.torch import save_file

    prepared = {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}
    save_file(prepared, str(path), metadata=dict(metadata) if metadata else None)


def write_run(
    out_dir: str | os.PathLike[str],
    manifest: Manifest,
    tensors: Mapping[str, torch.Tensor] | None = None,
    *,
    json_files: Mapping[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Write a complete run directory atomically: manifest, tensors and extra JSON files."""
    with run_directory(out_dir, force=force) as tmp:
        if tensors:
            save_tensors(tmp / TENSORS_NAME, tensors)
        for name, content in (json_files or {}).items():
            write_json(tmp / name, content)
        (tmp / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
    return Path(out_dir)


# ---------------------------------------------------------------------------------------------
# Reading and checking
# ---------------------------------------------------------------------------------------------


def read_manifest(run_dir: str | os.PathLike[str], *, kind: str | None = None) -> Manifest:
    """Read and validate ``run_dir/manifest.json``; ``kind`` checks what the directory holds."""
    path = Path(run_dir)
    if not path.exists():
        raise ArtifactError(f"run directory {path} does not exist.")
    if not path.is_dir():
        raise ArtifactError(f"{path} is not a directory; expected a hookunlearn run directory.")
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ArtifactError(
            f"{path} has no {MANIFEST_NAME}; it is not a hookunlearn run directory (or its write was interrupted)."
        )
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(
            f"{manifest_path}: not valid JSON ({exc}); re-run the command that made it."
        ) from exc
    manifest = Manifest.from_dict(data, source=str(manifest_path))
    if kind is not None and manifest.kind != kind:
        raise IncompatibleArtifactError(
            f"{path}: field 'kind' is {manifest.kind!r}, but a {kind!r} directory is needed here "
            f"(it was made by: {manifest.command})."
        )
    return manifest


def load_tensors(run_dir: str | os.PathLike[str], name: str = TENSORS_NAME) -> dict[str, torch.Tensor]:
    """Load the named safetensors file of a run directory, with clear errors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(run_dir) / name
    if not path.is_file():
        raise ArtifactError(
            f"{path} is missing; the run directory is incomplete, re-run the command that made it."
        )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(
            f"{path}: not a readable safetensors file ({exc}); re-run the command that made it."
        ) from exc


def check_compatible(
    manifest: Manifest,
    *,
    model: Mapping[str, Any] | None = None,
    saes: Iterable[Mapping[str, Any]] | None = None,
    source: str = "run directory",
) -> None:
    """Refuse an artifact made for a different model or SAE, naming the field that differs.

    ``model`` is a model description as stored in manifests (``ModelInfo.to_dict()``); the
    fields compared are those that change what activations mean, not device or spec spelling.
    """
    if model is not None and manifest.model is not None:
        for key in ("config_fingerprint", "processing"):
            if key in manifest.model and key in model and manifest.model[key] != model[key]:
                made, given = manifest.model.get("spec"), model.get("spec")
                which = (
                    f"both are called {made!r}, but they are different models (e.g. two worlds, or a "
                    "checkpoint that changed since)"
                    if made == given
                    else f"made with model {made!r}; given {given!r}"
                )
                raise IncompatibleArtifactError(
                    f"{source} was made for another model: field 'model.{key}' is "
                    f"{manifest.model[key]!r} there but {model[key]!r} for the model given ({which}). "
                    "Use the same model and weight processing, or re-run the earlier command."
                )
    if saes is not None and manifest.saes:
        given = {sae.get("hook_name"): sae for sae in saes}
        for stored in manifest.saes:
            other = given.get(stored.get("hook_name"))
            if other is None:
                continue
            for key in ("d_in", "d_sae", "architecture"):
                if key in stored and key in other and stored[key] != other[key]:
                    raise IncompatibleArtifactError(
                        f"{source} was made with another SAE at {stored.get('hook_name')}: field "
                        f"'saes.{key}' is {stored[key]!r} there but {other[key]!r} for the SAE given "
                        f"(made with {stored.get('spec')!r}; given {other.get('spec')!r})."
                    )


# ---------------------------------------------------------------------------------------------
# Fingerprints
# ---------------------------------------------------------------------------------------------


def fingerprint_texts(texts: Iterable[str]) -> dict[str, Any]:
    """Order-sensitive content hash of a text dataset, with its size."""
    digest = hashlib.sha256()
    count = 0
    chars = 0
    for text in texts:
        encoded = text.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
        count += 1
        chars += len(text)
    return {"sha256": digest.hexdigest()[:16], "n_items": count, "n_chars": chars}


def fingerprint_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Content hash of a file."""
    file_path = Path(path)
    digest = hashlib.sha256()
    with file_path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"sha256": digest.hexdigest()[:16], "bytes": file_path.stat().st_size, "path": str(file_path)}
