"""``--resume`` lets Ray unpickle only what this user's own search wrote.

Ray Tune restores an experiment by unpickling files in its folder: ``tuner.pkl``, the pickled fields
of ``experiment_state-*.json``, ``searcher-state-*.pkl``, ``search_gen_state-*.json`` and
``callback-states-*.pkl``. Anyone who
can write that folder (a shared NFS path, a bucket, an archive from elsewhere) could make a resume
run their code. So every asp_tune search keeps a signed copy of those files
(:data:`SIGNED_COPY`): each time Ray saves its state (in the driver's local staging folder, from
which Ray copies it to the experiment folder), the driver copies the saved files and signs their
SHA-256 digests with HMAC-SHA256 under a key only this user can read (:func:`key_path`, mode 0600,
made on first use). Before a resume, :func:`restore_signed` checks the signature and puts
the signed files in place of the originals, setting aside any other file Ray would read; a folder
without a valid signed copy is refused by name. The signed copy is also what a driver killed while
Ray rewrote its state resumes from.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path

from asp_tune.atomic import create_private
from asp_tune.errors import ConfigError
from asp_tune.tune.storage import join, list_names, move, read_bytes, write_bytes

#: The files Ray Tune unpickles on a restore (the newest of each pattern).
RESTORED = ("tuner.pkl", "experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl",
            "callback-states-*.pkl")
SIGNED_COPY = ".asp_tune_signed.json"
SET_ASIDE = ".unsigned"
VERSION = 1


def key_path() -> Path:
    """``$ASP_TUNE_KEY`` or ``$XDG_CONFIG_HOME/asp_tune/resume.key`` (``~/.config`` by default)."""
    if os.environ.get("ASP_TUNE_KEY"):
        return Path(os.environ["ASP_TUNE_KEY"]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "asp_tune" / "resume.key"


def key() -> bytes:
    """This user's signing key, made (32 random bytes, mode 0600) on first use; refused when others can
    read or write it."""
    path = key_path()
    if not path.exists():
        create_private(path, secrets.token_bytes(32))  # False: made by a search started at the same moment
    info = path.stat()
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO) or (hasattr(os, "getuid") and info.st_uid != os.getuid()):
        raise ConfigError("resume key", str(path), "a file that only you own and can read (chmod 600): with it "
                                                   "anyone can sign an experiment for your --resume")
    data = path.read_bytes()
    if len(data) < 16:
        raise ConfigError("resume key", str(path), "at least 16 bytes (delete it to have a new one made; "
                                                   "experiments signed with the old one then cannot be resumed)")
    return data


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


def _mac(files: dict[str, bytes], secret: bytes) -> str:
    digests = json.dumps({name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())},
                         sort_keys=True)
    return hmac.new(secret, f"asp_tune signed state v{VERSION}\n{digests}".encode(), hashlib.sha256).hexdigest()


def sign(experiment: str, staging: str | None = None) -> bool:
    """Copy and sign the files a restore reads (from Ray's ``staging`` folder where it has them); False
    (the last signed copy kept) when the state file does not parse, as when Ray is writing it."""
    files = restored_files(experiment, staging)
    state = [n for n in files if n.startswith("experiment_state-")]
    if not state:
        return False
    try:
        json.loads(files[state[0]])
    except ValueError:
        return False
    copy = {"version": VERSION, "files": {n: base64.b64encode(d).decode() for n, d in files.items()},
            "mac": _mac(files, key())}
    write_bytes(join(experiment, SIGNED_COPY), json.dumps(copy).encode())
    return True


def restore_signed(experiment: str) -> list[str]:
    """Check the signed copy of ``experiment`` and put its files in place; any other file a restore would
    read is renamed ``NAME.unsigned``. Returns the names that differed from their signed copy (a driver
    killed between Ray's write and the next signature leaves one; so does a change by someone else).
    A :class:`ConfigError` naming ``resume`` when there is no signed copy or its signature is wrong."""
    try:
        copy = json.loads(read_bytes(join(experiment, SIGNED_COPY)))
        files = {n: base64.b64decode(d) for n, d in copy["files"].items()}
        mac = str(copy["mac"])
    except OSError:
        raise ConfigError("resume", experiment, "an experiment this user's asp-tune wrote: it has no signed copy "
                                                "of the state Ray would unpickle (an experiment from elsewhere, or "
                                                "from asp_tune before 0.2; --resume-unsigned resumes it at your "
                                                "own risk)") from None
    except (ValueError, KeyError, TypeError):
        raise ConfigError("resume", experiment, "an experiment whose signed state copy is readable (it is not: "
                                                "--resume-unsigned resumes from Ray's files at your own risk)") from None
    if not hmac.compare_digest(_mac(files, key()), mac):
        raise ConfigError("resume", experiment, f"an experiment signed with your key ({key_path()}): its state "
                                                "copy does not match its signature, so it was changed by someone "
                                                "else or signed on another machine (copy that key to resume here)")
    changed = []
    for pattern in RESTORED:
        for name in list_names(experiment, pattern):
            if name not in files:  # renamed, never deleted, and never over another file
                taken = set(list_names(experiment, name + SET_ASIDE + "*"))
                target = next(f"{name}{SET_ASIDE}{'' if i == 0 else f'.{i}'}" for i in range(len(taken) + 1)
                              if f"{name}{SET_ASIDE}{'' if i == 0 else f'.{i}'}" not in taken)
                move(join(experiment, name), join(experiment, target))
                changed.append(name)
    for name, data in files.items():
        try:
            same = read_bytes(join(experiment, name)) == data
        except OSError:
            same = False
        if not same:
            write_bytes(join(experiment, name), data)
            changed.append(name)
    return sorted(set(changed))
