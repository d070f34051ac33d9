"""This user's signing key, and signatures on what asp_tune wrote for this user.

A file this user's asp_tune wrote may name this user's code (a model file's builder, a results
folder's data set or strategy): it is signed with HMAC-SHA256 under a key only this user can read
(:func:`key_path`, mode 0600, made on first use), so reading it back can trust what it names. A file
from anyone else is not signed with this key: what it names is imported only when it is registered
or the user trusts its module (:func:`asp_tune.imports.check_trusted`). The same key signs the
state ``--resume`` lets Ray unpickle (:mod:`asp_tune.tune.signing`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from asp_tune.atomic import create_private
from asp_tune.errors import AspTuneError, ConfigError
from asp_tune.flags import both_spellings


def key_path() -> Path:
    """``$ASP_TUNE_KEY`` or ``$XDG_CONFIG_HOME/asp_tune/resume.key`` (``~/.config`` by default)."""
    if os.environ.get("ASP_TUNE_KEY"):
        return Path(os.environ["ASP_TUNE_KEY"]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "asp_tune" / "resume.key"


def key(create: bool = True) -> bytes:
    """This user's signing key, made (32 random bytes, mode 0600) on first use when ``create``;
    refused when others can read or write it, or (``create=False``) when it is missing."""
    path = key_path()
    if not path.exists():
        if not create:
            raise ConfigError("resume key", str(path), "your signing key, which is missing (deleted, or never made "
                                                       "on this machine): no signed experiment can be checked "
                                                       "without the key that signed it (restore the file, or "
                                                       f"{both_spellings('resume_unsigned')} at your own risk)")
        try:
            create_private(path, secrets.token_bytes(32))  # False: made by a search started at the same moment
        except OSError as exc:
            raise ConfigError("resume key", str(path), f"a file this user can create ({exc.strerror or exc}): "
                                                       "set ASP_TUNE_KEY to a file in a writable folder") from None
    info = path.stat()
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO) or (hasattr(os, "getuid") and info.st_uid != os.getuid()):
        raise ConfigError("resume key", str(path), "a file that only you own and can read (chmod 600): with it "
                                                   "anyone can sign an experiment for your --resume")
    data = path.read_bytes()
    if len(data) < 16:
        raise ConfigError("resume key", str(path), "at least 16 bytes (delete it to have a new one made; "
                                                   "experiments signed with the old one then cannot be resumed)")
    return data


def mac(secret: bytes, purpose: str, text: str) -> str:
    """HMAC-SHA256 of ``text`` for one ``purpose`` (a signature for one use is never valid for another)."""
    return hmac.new(secret, f"asp_tune {purpose}\n{text}".encode(), hashlib.sha256).hexdigest()


def canonical(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)


def sign_payload(purpose: str, payload: Any) -> str | None:
    """This user's signature on ``payload`` (JSON-like), or None when no key can be had here (the
    file is then simply unsigned: what it names needs the reader's trust)."""
    try:
        return mac(key(), purpose, canonical(payload))
    except (AspTuneError, OSError):
        return None


def signed_by_me(purpose: str, payload: Any, signature: Any) -> bool:
    """Whether ``signature`` is this user's on ``payload`` (False without a key: nothing is made)."""
    if not isinstance(signature, str):
        return False
    try:
        secret = key(create=False)
    except (AspTuneError, OSError):
        return False
    return hmac.compare_digest(mac(secret, purpose, canonical(payload)), signature)
