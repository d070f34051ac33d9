"""``--resume`` lets Ray unpickle only what this user's own search wrote, in the order it wrote it.

Ray Tune restores an experiment by unpickling files in its folder: ``tuner.pkl``, the pickled fields
of ``experiment_state-*.json``, ``basic-variant-state-*.json``, ``searcher-state-*.pkl``,
``search_gen_state-*.json``, ``callback-states-*.pkl`` (every top-level ``.json`` and ``.pkl`` file is
copied to the driver before it looks for them) and, for a trial that failed, its ``error.pkl``.
Anyone who can write that folder (a shared NFS path, a bucket, an archive from elsewhere) could make
a resume run their code. So every asp_tune search keeps a signed copy of the files Ray restores from
(:data:`SIGNED_COPY`): each time Ray saves its state (in the driver's local staging folder, from which
Ray copies it to the experiment folder), the driver copies the saved files and signs their SHA-256
digests with HMAC-SHA256 under a key only this user can read (:func:`key_path`, mode 0600, made on
first use), together with the experiment's own id and a serial number that grows with every save.

Before a resume, :func:`restore_signed` checks the signature and puts the signed files in place of
the originals; every other top-level ``.json``/``.pkl`` file (asp_tune's own plain JSON aside) and
every trial's ``error.pkl`` is set aside (``NAME.unsigned``), so Ray reads the error's text instead.
A ledger beside the key (one small file per experiment) records the highest serial this machine
signed and the folder it signed it in: an older signed copy of the same experiment (a rollback) and
another experiment's signed copy put in this folder (a swap) are refused by name. A folder copied or
moved elsewhere resumes, since nothing but its place changed. The signed copy is also what a driver
killed while Ray rewrote its state resumes from.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import uuid
from pathlib import Path
from typing import Any

from asp_tune.atomic import atomic_write_text
from asp_tune.errors import AspTuneError, ConfigError
from asp_tune.flags import both_spellings
from asp_tune.signatures import key, key_path, mac
from asp_tune.tune.fulldata import AUDIT_FILE, CHANGES_FILE
from asp_tune.tune.storage import join, list_dirs, list_names, move, read_bytes, write_bytes

#: The files Ray Tune unpickles on a restore (the newest of each pattern).
RESTORED = ("tuner.pkl", "experiment_state-*.json", "basic-variant-state-*.json", "search_gen_state-*.json",
            "searcher-state-*.pkl", "callback-states-*.pkl")
#: Top-level files Ray copies to the driver on a restore (anything of these kinds may be read there).
RAY_READS = ("*.json", "*.pkl")
#: A trial's pickled error, which Ray unpickles when it reports a failed trial.
TRIAL_ERROR = "error.pkl"
SIGNED_COPY = ".asp_tune_signed.json"
#: asp_tune's own files in an experiment folder: plain JSON, parsed as JSON only, never unpickled.
OWN_FILES = (SIGNED_COPY, "asp_tune_settings.json", "asp_tune_progress.json", CHANGES_FILE, AUDIT_FILE)
SET_ASIDE = ".unsigned"
VERSION = 2
UNSIGNED = both_spellings("resume_unsigned")


def ledger_dir() -> Path:
    """Where this machine records the latest serial it signed for each experiment (beside the key)."""
    path = key_path()
    return path.with_name(path.name + ".ledger")


def signing_problem() -> str | None:
    """Why this machine cannot sign a search (the key or its ledger cannot be made), or None: said
    aloud before a search starts, since its ``--resume`` would then be refused."""
    try:
        key()
        folder = ledger_dir()
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"{folder} is not writable"
    except (AspTuneError, OSError) as exc:
        return str(exc)
    return None


def restored_files(experiment: str, staging: str | None = None) -> dict[str, bytes]:
    """The files of ``experiment`` Ray would unpickle on a restore, by name; each from Ray's local
    ``staging`` folder where it holds one (written whole by the step that just ended, while the copy
    in the experiment folder may be one Ray is still uploading)."""
    out = {}
    for pattern in RESTORED:
        local = sorted(Path(staging).glob(pattern)) if staging else []
        if local:
            out[local[-1].name] = local[-1].read_bytes()
            continue
        names = list_names(experiment, pattern)
        if names:
            out[names[-1]] = read_bytes(join(experiment, names[-1]))
    return out


def _mac(files: dict[str, bytes], secret: bytes, identity: str, serial: int) -> str:
    digests = json.dumps({name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())},
                         sort_keys=True)
    return mac(secret, f"signed state v{VERSION}", f"experiment {identity}\nserial {serial}\n{digests}")


def _ledger_file(identity: str) -> Path:
    return ledger_dir() / f"{identity}.json"


def _ledger(identity: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(_ledger_file(identity).read_text())
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) and isinstance(entry.get("serial"), int) else None


def _record(identity: str, serial: int, experiment: str) -> None:
    folder = ledger_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write_text(_ledger_file(identity), json.dumps({"serial": serial, "path": _place(experiment)}))


def _place(experiment: str) -> str:
    return experiment if "://" in experiment else str(Path(experiment).resolve())


def _read_copy(experiment: str) -> dict[str, Any]:
    """The signed copy of ``experiment`` (OSError when there is none, ValueError when it does not parse)."""
    copy = json.loads(read_bytes(join(experiment, SIGNED_COPY)))
    if not isinstance(copy, dict):
        raise ValueError("not an object")
    return copy


#: The identity and serial of each experiment this process signed (so a save costs no extra read).
_SIGNED: dict[str, tuple[str, int]] = {}


def _next_serial(experiment: str, secret: bytes) -> tuple[str, int]:
    """The experiment's id and the serial of its next signed copy: one more than the last one this
    process, the folder's own valid copy or this machine's ledger knows."""
    if experiment in _SIGNED:
        identity, serial = _SIGNED[experiment]
    else:
        identity, serial = uuid.uuid4().hex, 0
        try:
            copy = _read_copy(experiment)
            files = {n: base64.b64decode(d) for n, d in copy["files"].items()}
            if copy.get("version") == VERSION and hmac.compare_digest(
                    _mac(files, secret, str(copy["experiment"]), int(copy["serial"])), str(copy["mac"])):
                identity, serial = str(copy["experiment"]), int(copy["serial"])  # a resumed search goes on
        except (OSError, ValueError, KeyError, TypeError):
            pass
    recorded = _ledger(identity)
    return identity, max(serial, recorded["serial"] if recorded else 0) + 1


def sign(experiment: str, staging: str | None = None) -> bool:
    """Copy and sign the files a restore reads (from Ray's ``staging`` folder where it has them), bound
    to the experiment and the next serial; False (the last signed copy kept) when the state file does
    not parse, as when Ray is writing it."""
    files = restored_files(experiment, staging)
    state = [n for n in files if n.startswith("experiment_state-")]
    if not state:
        return False
    try:
        json.loads(files[state[0]])
    except ValueError:
        return False
    secret = key()
    identity, serial = _next_serial(experiment, secret)
    copy = {"version": VERSION, "experiment": identity, "serial": serial,
            "files": {n: base64.b64encode(d).decode() for n, d in files.items()},
            "mac": _mac(files, secret, identity, serial)}
    write_bytes(join(experiment, SIGNED_COPY), json.dumps(copy).encode())
    _SIGNED[experiment] = (identity, serial)
    _record(identity, serial, experiment)
    return True


def _refuse(experiment: str, allowed: str) -> None:
    raise ConfigError("resume", experiment, allowed)


def check_signed(experiment: str) -> dict[str, bytes]:
    """The signed files of ``experiment`` after every check: a copy that exists and parses, signed with
    this user's key, not older than the latest this machine signed for the experiment (no rollback),
    and not another experiment's put in a folder this machine knows as someone else's (no swap)."""
    try:
        copy = _read_copy(experiment)
    except OSError:
        _refuse(experiment, "an experiment this user's asp-tune wrote: it has no signed copy of the state Ray would "
                            f"unpickle (an experiment from elsewhere, or from asp_tune before 0.2; {UNSIGNED} "
                            "resumes it at your own risk)")
    except ValueError:
        _refuse(experiment, f"an experiment whose signed state copy is readable (it is not: {UNSIGNED} "
                            "resumes from Ray's files at your own risk)")
    if copy.get("version") != VERSION:
        _refuse(experiment, f"an experiment signed by this version of asp_tune (its copy is version "
                            f"{copy.get('version')!r}, which binds no experiment id or order; {UNSIGNED} "
                            "resumes it at your own risk)")
    try:
        files = {str(n): base64.b64decode(d) for n, d in copy["files"].items()}
        identity, serial, mac = str(copy["experiment"]), int(copy["serial"]), str(copy["mac"])
    except (ValueError, KeyError, TypeError, AttributeError):
        _refuse(experiment, f"an experiment whose signed state copy is readable (it is not: {UNSIGNED} "
                            "resumes from Ray's files at your own risk)")
    if not hmac.compare_digest(_mac(files, key(create=False), identity, serial), mac):
        _refuse(experiment, f"an experiment signed with your key ({key_path()}): its state copy does not match its "
                            "signature, so it was changed by someone else or signed on another machine (copy that "
                            "key to resume here)")
    recorded = _ledger(identity)
    if recorded is not None and recorded["serial"] > serial:
        _refuse(experiment, f"the latest signed state of this experiment: this copy is number {serial}, but this "
                            f"machine signed number {recorded['serial']} of it (in {recorded.get('path')}), so an "
                            "older copy was put back (a rollback); if you copied the folder yourself, resume the "
                            "newest copy")
    here = _place(experiment)
    owner = _owner_of(here)
    if owner is not None and owner != identity:
        _refuse(experiment, f"this folder's own signed state: the copy here was signed for another experiment "
                            f"({identity[:12]}) than the one this machine last signed in this folder ({owner[:12]}), "
                            "so it was swapped in")
    return files


def _owner_of(place: str) -> str | None:
    """The experiment this machine last signed in ``place`` (None: none, or no ledger)."""
    folder = ledger_dir()
    if not folder.is_dir():
        return None
    for entry in folder.glob("*.json"):
        try:
            if json.loads(entry.read_text()).get("path") == place:
                return entry.stem
        except (OSError, ValueError, AttributeError):
            continue
    return None


def _set_aside(folder: str, name: str) -> None:
    """Rename ``folder/name`` to ``name.unsigned`` (``.1``, ``.2``, ... when taken): never deleted, and
    never over another file."""
    taken = set(list_names(folder, name + SET_ASIDE + "*"))
    target = next(f"{name}{SET_ASIDE}{'' if i == 0 else f'.{i}'}" for i in range(len(taken) + 1)
                  if f"{name}{SET_ASIDE}{'' if i == 0 else f'.{i}'}" not in taken)
    move(join(folder, name), join(folder, target))


def restore_signed(experiment: str) -> list[str]:
    """Check the signed copy of ``experiment`` (:func:`check_signed`) and put its files in place; every
    other file Ray would read on a restore is renamed ``NAME.unsigned``. Returns the names that differed
    from their signed copy (a driver killed between Ray's write and the next signature leaves one; so
    does a change by someone else) and the top-level files set aside. A :class:`ConfigError` naming ``resume``
    when any check fails; nothing is changed then."""
    files = check_signed(experiment)
    changed = []
    for name in sorted({n for pattern in RAY_READS for n in list_names(experiment, pattern)}):
        if name not in files and name not in OWN_FILES:
            _set_aside(experiment, name)
            changed.append(name)
    for trial in list_dirs(experiment):
        folder = join(experiment, trial)
        if TRIAL_ERROR in list_names(folder, TRIAL_ERROR):
            _set_aside(folder, TRIAL_ERROR)  # Ray then reports the error's text (error.txt)
    for name, data in files.items():
        try:
            same = read_bytes(join(experiment, name)) == data
        except OSError:
            same = False
        if not same:
            write_bytes(join(experiment, name), data)
            changed.append(name)
    return sorted(set(changed))
