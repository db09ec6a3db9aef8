"""The data folder's layout and modes: who on the host may open what cloudlet keeps.

Only the user cloudlet runs as reads the data folder. QEMU runs as libvirt's own user (Debian:
libvirt-qemu), which libvirt names in its DAC base label; that user's group may traverse the
folders on the way to the disks it is given, but list none of them. libvirt hands each disk,
seed and base image to QEMU's user while a VM runs (``dynamic_ownership``), so files stay 0600.

    <data_dir>/                          0710, group QEMU's ("shared")
      cloudlet.db, -wal, -shm, -journal  0600
      jwt.key                            0600 (the sign-in key, see services/signing_keys.py)
      instances/, instances/<id>/        shared; disk.qcow2, seed.iso 0600
      images/                            shared; image files 0600
      volumes/                           shared (the default storage pool); volumes 0600
      projects/, operation-logs/,        0700
      import/, terminal-sessions/
      anything else                      left alone: the data folder keeps others out

Without a group to share with, shared folders are 0700 when QEMU runs as cloudlet's own user
(qemu:///session) or there is no hypervisor, and 0711 (anyone may traverse, no one list) when
cloudlet cannot give them QEMU's group (a non-root server on qemu:///system).

At start cloudlet tightens what it finds here (an older version's 0755/0644 layout is upgraded in
place, each change logged) and refuses to start when it cannot make things safe; ``check`` names
the rules.
"""

from __future__ import annotations

import logging
import os
import stat
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from cloudlet.errors import CloudletError

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
SHARED_DIR = 0o710  # owner: everything; QEMU's group: traverse; others: nothing
TRAVERSE_ONLY_DIR = 0o711  # the fallback without a group: traverse, never list
KEY_FILE = "jwt.key"
SHARED_DIRS = ("instances", "images", "volumes")
PRIVATE_DIRS = ("projects", "operation-logs", "import", "terminal-sessions")
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
# Settings whose value is a secret: a config file holding one must not be readable by others.
SECRET_SETTINGS = ("jwt_secret", "oidc_client_secret")
_OTHERS = 0o007
_GROUP_OR_OTHERS_WRITE = 0o022


class UnsafeFiles(CloudletError):
    """A file or folder cloudlet depends on is open to other users and cloudlet cannot close it."""

    status, code, title = 500, "unsafe_file_modes", "Unsafe file permissions"


def private_umask() -> int:
    """Files and folders the process makes are its own (0600/0700) unless made otherwise on
    purpose; returns the umask it had."""
    return os.umask(0o077)


@dataclass(frozen=True)
class Sharing:
    """How the folders QEMU must traverse are opened to it: ``mode`` and, when not None, the
    group ``gid`` they get."""

    mode: int
    gid: int | None = None

    @classmethod
    def for_hypervisor(cls, identity: tuple[int, int] | None) -> Sharing:
        """``identity``: the (uid, gid) QEMU runs as, None without a separate hypervisor user."""
        if identity is None or identity[0] == os.geteuid():
            return cls(PRIVATE_DIR)
        gid = identity[1]
        if os.geteuid() == 0 or gid == os.getegid() or gid in os.getgroups():
            return cls(SHARED_DIR, gid)
        log.warning(
            "cloudlet cannot give its folders QEMU's group (gid %d): they are made 0711, so any local "
            "user may traverse them (never list them or read the 0600 files in them); run cloudlet as "
            "root or in that group for 0710",
            gid,
        )
        return cls(TRAVERSE_ONLY_DIR)


def make_shared_dir(path: Path, sharing: Sharing) -> None:
    """Make ``path`` (and missing parents) as a folder QEMU traverses; FileExistsError if it is."""
    path.mkdir(mode=PRIVATE_DIR, parents=True)
    _chmod(path, sharing.mode, sharing.gid)


def _chmod(path: Path, mode: int, gid: int | None = None) -> None:
    """chown (group only) and chmod; a refusal of the system is the
    start-up refusal, naming the path."""
    try:
        if gid is not None:
            os.chown(path, -1, gid, follow_symlinks=False)
        os.chmod(path, mode)  # after chown, which may clear set-id bits; callers skip symlinks
    except OSError as err:
        raise UnsafeFiles(
            f"cannot restrict {path} to {mode:04o}: {err.strerror}; give it to the user cloudlet runs as"
        ) from err


def _set(path: Path, mode: int, gid: int | None = None) -> bool:
    """Give ``path`` exactly ``mode`` (and group ``gid``); True when that took a permission away."""
    st = path.lstat()
    regroup = gid is not None and st.st_gid != gid
    if not regroup and stat.S_IMODE(st.st_mode) == mode:
        return False
    _chmod(path, mode, gid if regroup else None)
    if stat.S_IMODE(st.st_mode) & ~mode:
        log.info("tightened %s: %s -> %s", path, _describe(st), _describe(path.lstat()))
        return True
    log.debug("opened %s to QEMU's group: %s -> %s", path, _describe(st), _describe(path.lstat()))
    return False


def _strip(path: Path, bits: int) -> bool:
    """Take ``bits`` away from ``path``'s mode; True when that changed it."""
    mode = stat.S_IMODE(path.lstat().st_mode)
    if not mode & bits:
        return False
    _chmod(path, mode & ~bits)
    log.info("tightened %s: %04o -> %04o", path, mode, mode & ~bits)
    return True


def _describe(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o} gid {st.st_gid}"


def _files_below(folder: Path) -> Iterator[Path]:
    """Regular files under ``folder``, never following symlinks."""
    for root, dirs, files in os.walk(folder):
        for name in files:
            path = Path(root, name)
            if stat.S_ISREG(path.lstat().st_mode):
                yield path
        dirs[:] = [d for d in dirs if not Path(root, d).is_symlink()]


def sqlite_path(database_url: str) -> Path | None:
    """The file of a SQLite database URL; None for other databases and in-memory SQLite."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def secrets_in(values: dict[str, Any]) -> list[str]:
    """The settings among ``values`` (a config file's) that hold a secret."""
    found = [name for name in SECRET_SETTINGS if values.get(name)]
    url = values.get("database_url")
    if isinstance(url, str) and url:
        try:
            if make_url(url).password:
                found.append("database_url (its password)")
        except Exception:  # an invalid URL: the settings refuse it, not this check
            log.debug("database_url is not a URL", exc_info=True)
    return found


class DataLayout:
    """The data folder of one deployment: its rules (``check``), what is tightened before the
    hypervisor is known (``prepare``) and after (``share``)."""

    def __init__(
        self, data_dir: Path, database_url: str, key_file: Path | None = None, *, uid: int | None = None
    ) -> None:
        self.data_dir = data_dir.resolve()  # a symlink's target is what must be safe
        self.database = sqlite_path(database_url)
        self.key_file = key_file or self.data_dir / KEY_FILE
        self.uid = os.geteuid() if uid is None else uid
        self.tightened: set[Path] = set()  # what was found more open than the layout

    # -- the rules ---------------------------------------------------------------------------------
    def check(self, config_file: Path | None = None) -> None:
        """Refuse (``UnsafeFiles``, naming each path and its fix) when cloudlet cannot make its
        files safe by itself:

        - the data folder, if it exists, belongs to another user;
        - a folder above it belongs to a user other than root and cloudlet's, or may be written by
          group or others without the sticky bit (they could swap the data folder);
        - the sign-in key file or a SQLite database outside the data folder is not cloudlet's and
          others may use it, or it belongs to a user other than root (group read is allowed: a
          key shared with a group of replicas on purpose);
        - the config file belongs to a user other than root and cloudlet's, anyone may write it,
          or it holds a secret (jwt_secret, oidc_client_secret, a database password) and anyone
          may read it.

        What cloudlet owns and finds too open it tightens instead (``prepare``)."""
        problems = [*self._folder_problems()]
        for path, what in ((self.key_file, "the sign-in key file"), (self.database, "the database")):
            if path is not None:
                problems += self._secret_file_problems(path, what)
        if config_file is not None:
            problems += self._config_problems(config_file)
        if problems:
            raise UnsafeFiles("; ".join(problems))

    def _folder_problems(self) -> Iterator[str]:
        data = self.data_dir
        if data.exists() and data.stat().st_uid != self.uid:
            yield (
                f"the data folder {data} belongs to uid {data.stat().st_uid}, not to the user cloudlet "
                f"runs as (uid {self.uid}): chown {self.uid} {data}, or choose another data_dir"
            )
        for folder in data.parents:
            if not folder.exists():
                continue
            st = folder.stat()
            if st.st_uid not in (0, self.uid):
                yield (
                    f"{folder} (above the data folder) belongs to uid {st.st_uid}, who could replace "
                    f"the data folder: choose a data_dir under folders of root or of cloudlet's user"
                )
            elif st.st_mode & _GROUP_OR_OTHERS_WRITE and not st.st_mode & stat.S_ISVTX:
                yield (
                    f"{folder} (above the data folder) may be written by other users, who could "
                    f"replace the data folder: chmod go-w {folder}"
                )

    def _secret_file_problems(self, path: Path, what: str) -> list[str]:
        if not path.exists():
            return []
        st = path.stat()
        if st.st_uid == self.uid:
            return []  # cloudlet's own: prepare() tightens it
        if st.st_uid != 0:
            return [f"{what} {path} belongs to uid {st.st_uid}: give it to root or to cloudlet's user"]
        if st.st_mode & (_OTHERS | 0o020):
            return [f"{what} {path} is open to other users ({_describe(st)}): chmod o-rwx,g-w {path}"]
        return []

    def _config_problems(self, path: Path) -> list[str]:
        if not path.is_file():
            return []
        st = path.stat()
        if st.st_uid not in (0, self.uid):
            return [f"the config file {path} belongs to uid {st.st_uid}, who could change any setting"]
        if st.st_mode & stat.S_IWOTH:
            return [f"anyone may change the config file {path}: chmod o-w {path}"]
        if st.st_mode & stat.S_IROTH:
            with path.open("rb") as fh:
                held = secrets_in(tomllib.load(fh))
            if held:
                return [
                    f"the config file {path} holds {', '.join(held)} and anyone on this host may read "
                    f"it: chmod o-rwx {path} (or set the secret in the environment instead)"
                ]
        return []

    # -- tightening --------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Before anything opens the data folder: make it (0700) or take read and write on it
        from group and others, make the private folders 0700, the database and the key 0600, and
        create a new SQLite database file 0600 so SQLite's own files follow its mode."""
        if not self.data_dir.exists():
            self.data_dir.mkdir(mode=PRIVATE_DIR, parents=True)
            _chmod(self.data_dir, PRIVATE_DIR)
        else:
            self._note(self.data_dir, _strip(self.data_dir, 0o066))
        for name in PRIVATE_DIRS:
            folder = self.data_dir / name
            if folder.is_dir() and not folder.is_symlink():
                self._note(folder, _set(folder, PRIVATE_DIR))
            elif not folder.exists():
                folder.mkdir(mode=PRIVATE_DIR)
                _chmod(folder, PRIVATE_DIR)
        for path in self._secret_files():
            if path.is_file() and path.stat().st_uid == self.uid:
                # in the data folder: cloudlet made it, 0600; elsewhere: an admin's, who may share
                # it with a group on purpose (0640)
                inside = path.parent.resolve() == self.data_dir
                self._note(path, _strip(path, 0o077 if inside else 0o027))
        if self.database is not None and not self.database.exists() and self.database.parent.is_dir():
            os.close(os.open(self.database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))

    def _secret_files(self) -> Iterator[Path]:
        yield self.key_file
        if self.database is not None:
            yield self.database
            for suffix in SQLITE_SIDE_FILES:
                yield self.database.with_name(self.database.name + suffix)

    def share(self, sharing: Sharing | None) -> None:
        """Open the data folder and the shared folders to QEMU as ``sharing`` says (None: the
        hypervisor cannot tell now, so folders keep their group and only lose read and write for
        group and others), and take group and other bits from every file in the shared folders."""
        folders = [self.data_dir]
        for name in SHARED_DIRS:
            folder = self.data_dir / name
            if not folder.exists() and name != "volumes" and sharing is not None:
                make_shared_dir(folder, sharing)  # the volumes pool's folder is libvirt's to make
            if not folder.is_dir() or folder.is_symlink():
                continue
            folders.append(folder)
            if name == "instances":
                folders += [p for p in sorted(folder.iterdir()) if p.is_dir() and not p.is_symlink()]
            for path in _files_below(folder):
                self._note(path, _strip(path, 0o077))
        for folder in folders:
            if sharing is None:
                self._note(folder, _strip(folder, 0o066))
            else:
                self._note(folder, _set(folder, sharing.mode, sharing.gid))

    def _note(self, path: Path, tightened: bool) -> None:
        if tightened:
            self.tightened.add(path)

    def report(self) -> None:
        """One warning when paths were found more open than the layout (an older version's, or
        made by hand) and tightened."""
        if self.tightened:
            log.warning(
                "tightened the modes of %d path(s) in %s that other users could reach (an older "
                "version's layout, or made by hand): see the info lines above",
                len(self.tightened),
                self.data_dir,
            )
            self.tightened.clear()
