"""Dockerfile projects: named folders on the server holding a Dockerfile and the files it copies,
kept under ``<root>/<workspace id>/<project name>/`` and later used as image build contexts.

Users choose every file path, so path safety is the point of this module. A path is a relative
chain of plain names joined by '/'; it is checked as text first (no '..', no absolute paths, no
backslashes or NUL bytes), then walked on disk one folder at a time with ``O_NOFOLLOW`` relative to
the folder before (``dir_fd``), so a symlink anywhere on the way is refused even if one is swapped in
between the check and the use. Refused calls change nothing on disk.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import shutil
import stat
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cloudlet.errors import Conflict, Invalid, NotFound
from cloudlet.services.context import RequestContext
from cloudlet.services.names import DNS_LABEL, check_name

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_PROJECT_BYTES = 100 * 1024 * 1024
MAX_FILES = 1000
MAX_PATH_BYTES = 1024
MAX_NAME_BYTES = 255  # one path component, as most Linux file systems allow
DOCKERFILE = "Dockerfile"
# Files being written (then renamed into place) and projects being deleted carry these prefixes;
# listings skip them and users cannot name their files so.
TMP_PREFIX = ".cloudlet-tmp-"
DELETING_PREFIX = ".deleting-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class ProjectFile:
    path: str  # relative, posix separators
    size: int
    modified_at: datetime


@dataclass(frozen=True)
class ProjectInfo:
    name: str
    file_count: int
    total_bytes: int
    updated_at: datetime


def _bad_path(path: str, why: str) -> Invalid:
    return Invalid(f"invalid file path {path!r}: {why}", code="invalid_path")


def _timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def split_path(path: str) -> list[str]:
    """Check a user's file path as text and return its components; raises ``Invalid(invalid_path)``."""
    if not path:
        raise _bad_path(path, "it is empty")
    if "\0" in path:
        raise _bad_path(path, "it contains a NUL byte")
    if "\\" in path:
        raise _bad_path(path, "use '/' to separate folders, not '\\'")
    if path.startswith("/"):
        raise _bad_path(path, "it must be relative to the project folder")
    try:
        encoded = os.fsencode(path)
    except UnicodeEncodeError:
        raise _bad_path(path, "it is not valid text") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise _bad_path(path, f"it is longer than {MAX_PATH_BYTES} bytes")
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise _bad_path(path, "use plain names separated by single '/', without '.' or '..'")
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            raise _bad_path(path, f"a name is longer than {MAX_NAME_BYTES} bytes")
        if part.startswith(TMP_PREFIX):
            raise _bad_path(path, f"names starting with {TMP_PREFIX!r} are reserved")
    return parts


class Projects:
    """A workspace's Dockerfile projects on the server's disk.

    Writes to one project are serialised by an in-process lock, so the size and file-count limits
    hold under concurrent uploads to one server process.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}

    # -- projects --------------------------------------------------------------------------------
    def create(self, ctx: RequestContext, name: str, dockerfile: str | None = None) -> ProjectInfo:
        """Create an empty project, or one holding ``dockerfile`` as its Dockerfile. The folder is
        made with an exclusive mkdir: of two creates of one name, exactly one wins, the other gets
        409 ``name_taken``. A failure after the mkdir removes the folder again."""
        check_name(name, DNS_LABEL, "project name")
        content = None
        if dockerfile is not None:
            try:
                content = dockerfile.encode()
            except UnicodeEncodeError:  # a lone surrogate ("\ud800") is valid JSON, but no text
                raise Invalid("the Dockerfile is not valid Unicode text", code="invalid_content") from None
            self._check_file_size(DOCKERFILE, len(content))
        workspace = self._workspace_dir(ctx)
        workspace.mkdir(parents=True, exist_ok=True)
        folder = workspace / name
        try:
            folder.mkdir()
        except FileExistsError:
            raise Conflict(f"a project named {name!r} exists", code="name_taken") from None
        try:
            if content is not None:
                with self._lock(ctx, name):
                    self._write(folder, [DOCKERFILE], content)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return self._info(name, folder)

    def list(self, ctx: RequestContext) -> builtins.list[ProjectInfo]:
        """The workspace's projects, sorted by name."""
        workspace = self._workspace_dir(ctx)
        if not workspace.is_dir():
            return []
        projects = []
        for entry in sorted(os.scandir(workspace), key=lambda e: e.name):
            if DNS_LABEL.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                projects.append(self._info(entry.name, Path(entry.path)))
        return projects

    def get(self, ctx: RequestContext, name: str) -> ProjectInfo:
        return self._info(name, self.context_dir(ctx, name))

    def files(self, ctx: RequestContext, name: str) -> builtins.list[ProjectFile]:
        """Every regular file of the project, recursively, sorted by path. Symlinks (which the API
        never makes) are neither listed nor followed."""
        return self._scan(self.context_dir(ctx, name))

    def delete(self, ctx: RequestContext, name: str) -> None:
        """Delete a project and all its files. The folder is first renamed out of the way, so the
        project disappears at once and its name can be reused while the files are removed."""
        folder = self.context_dir(ctx, name)
        with self._lock(ctx, name):
            doomed = folder.with_name(f"{DELETING_PREFIX}{os.urandom(8).hex()}")
            try:
                folder.rename(doomed)
            except FileNotFoundError:
                raise self._project_not_found(name) from None
        shutil.rmtree(doomed)  # does not follow symlinks

    def context_dir(self, ctx: RequestContext, name: str) -> Path:
        """The project's folder, for an image build; 404 ``project_not_found`` when there is none."""
        if not DNS_LABEL.fullmatch(name):
            raise self._project_not_found(name)
        folder = self._workspace_dir(ctx) / name
        try:
            mode = folder.lstat().st_mode
        except FileNotFoundError:
            raise self._project_not_found(name) from None
        if not stat.S_ISDIR(mode):
            raise self._project_not_found(name)
        return folder

    # -- files -----------------------------------------------------------------------------------
    def read_file(self, ctx: RequestContext, name: str, path: str) -> bytes:
        parts = split_path(path)
        folder = self.context_dir(ctx, name)
        self._check_inside(folder, path)
        with self._open_parent(folder, path, parts[:-1], create=False) as parent:
            if parent is None:
                raise self._file_not_found(name, path)
            self._leaf_stat(parent, path, parts[-1], name)  # refuses symlinks and folders
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            except FileNotFoundError:
                raise self._file_not_found(name, path) from None
            except OSError as err:
                raise self._os_error(path, err) from None
            with os.fdopen(fd, "rb") as fh:
                return fh.read()

    def write_file(self, ctx: RequestContext, name: str, path: str, content: bytes) -> ProjectFile:
        """Create or replace a file, making its folders. The content goes to a temporary file in the
        same folder which is then renamed over the old one, so readers and builds see the whole old
        file or the whole new one. Limits: ``MAX_FILE_BYTES`` per file, ``MAX_PROJECT_BYTES`` and
        ``MAX_FILES`` per project (422 ``too_large``)."""
        parts = split_path(path)
        self._check_file_size(path, len(content))
        folder = self.context_dir(ctx, name)
        self._check_inside(folder, path)
        with self._lock(ctx, name):
            # Inspect before changing anything, so a refused write leaves the disk as it was.
            with self._open_parent(folder, path, parts[:-1], create=False) as parent:
                old = None if parent is None else self._leaf_stat(parent, path, parts[-1], name, True)
            files = self._scan(folder)
            total = sum(f.size for f in files) - (old.st_size if old else 0) + len(content)
            if old is None and len(files) >= MAX_FILES:
                raise Invalid(f"a project holds at most {MAX_FILES} files", code="too_large")
            if total > MAX_PROJECT_BYTES:
                raise Invalid(
                    f"a project holds at most {MAX_PROJECT_BYTES // 2**20} MiB; "
                    f"this write would make it {total} bytes",
                    code="too_large",
                )
            return self._write(folder, parts, content)

    def delete_file(self, ctx: RequestContext, name: str, path: str) -> None:
        parts = split_path(path)
        folder = self.context_dir(ctx, name)
        self._check_inside(folder, path)
        with (
            self._lock(ctx, name),
            self._open_parent(folder, path, parts[:-1], create=False) as parent,
        ):
            if parent is None:
                raise self._file_not_found(name, path)
            self._leaf_stat(parent, path, parts[-1], name)
            try:
                os.unlink(parts[-1], dir_fd=parent)
            except FileNotFoundError:
                raise self._file_not_found(name, path) from None

    # -- internals -------------------------------------------------------------------------------
    def _workspace_dir(self, ctx: RequestContext) -> Path:
        # Workspace ids come from the database (UUIDs), never from the request.
        return self.root / ctx.workspace_id

    def _lock(self, ctx: RequestContext, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((ctx.workspace_id, name), threading.Lock())

    @staticmethod
    def _project_not_found(name: str) -> NotFound:
        return NotFound(f"project {name!r} not found", code="project_not_found")

    @staticmethod
    def _file_not_found(name: str, path: str) -> NotFound:
        return NotFound(f"project {name!r} has no file {path!r}", code="file_not_found")

    @staticmethod
    def _check_file_size(path: str, size: int) -> None:
        if size > MAX_FILE_BYTES:
            raise Invalid(
                f"{path!r} is {size} bytes; a file may hold at most {MAX_FILE_BYTES // 2**20} MiB",
                code="too_large",
            )

    @staticmethod
    def _check_inside(folder: Path, path: str) -> None:
        """A second, independent guard after the text checks: the resolved path stays inside."""
        base = folder.resolve()
        if not (base / path).resolve().is_relative_to(base):
            raise _bad_path(path, "it leads out of the project")

    @staticmethod
    def _os_error(path: str, err: OSError) -> Exception:
        if err.errno == errno.ELOOP:
            return _bad_path(path, "it goes through a symlink")
        if err.errno == errno.ENOTDIR:
            return _bad_path(path, "a part of it is a file, not a folder")
        return err

    @contextlib.contextmanager
    def _open_parent(
        self, folder: Path, path: str, dirs: Sequence[str], *, create: bool
    ) -> Iterator[int | None]:
        """Open the folder that holds the file, one component at a time relative to the previous
        one and never following a symlink. Yields its descriptor, or None when a folder on the way
        is missing and ``create`` is False."""
        try:
            fd = os.open(folder, _DIR_FLAGS)
        except OSError as err:
            raise self._os_error(path, err) from None
        try:
            for part in dirs:
                try:
                    mode = os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode
                except FileNotFoundError:
                    if not create:
                        yield None
                        return
                    os.mkdir(part, 0o755, dir_fd=fd)
                    mode = stat.S_IFDIR
                if stat.S_ISLNK(mode):
                    raise _bad_path(path, f"{part!r} is a symlink")
                if not stat.S_ISDIR(mode):
                    raise _bad_path(path, f"{part!r} is a file, not a folder")
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as err:
                    raise self._os_error(path, err) from None
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def _leaf_stat(
        self, parent: int, path: str, leaf: str, name: str, missing_ok: bool = False
    ) -> os.stat_result | None:
        """lstat the file a path names; refuse symlinks and folders."""
        try:
            st = os.stat(leaf, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            if missing_ok:
                return None
            raise self._file_not_found(name, path) from None
        if stat.S_ISLNK(st.st_mode):
            raise _bad_path(path, "it is a symlink")
        if stat.S_ISDIR(st.st_mode):
            raise _bad_path(path, "it is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise _bad_path(path, "it is not a regular file")
        return st

    def _write(self, folder: Path, parts: Sequence[str], content: bytes) -> ProjectFile:
        path, leaf = "/".join(parts), parts[-1]
        with self._open_parent(folder, path, parts[:-1], create=True) as parent:
            assert parent is not None  # create=True never yields None
            tmp = f"{TMP_PREFIX}{os.urandom(8).hex()}"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(tmp, flags, 0o644, dir_fd=parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(content)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, leaf, src_dir_fd=parent, dst_dir_fd=parent)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=parent)
                raise
            st = os.stat(leaf, dir_fd=parent, follow_symlinks=False)
        return ProjectFile(path=path, size=st.st_size, modified_at=_timestamp(st.st_mtime))

    @staticmethod
    def _scan(folder: Path) -> builtins.list[ProjectFile]:
        files = []
        for dirpath, _dirs, names in os.walk(folder):  # never descends into symlinked folders
            base = Path(dirpath)
            for filename in names:
                if filename.startswith(TMP_PREFIX):
                    continue
                full = base / filename
                try:
                    st = full.lstat()
                except FileNotFoundError:  # removed while we looked
                    continue
                if stat.S_ISREG(st.st_mode):
                    rel = full.relative_to(folder).as_posix()
                    files.append(ProjectFile(path=rel, size=st.st_size, modified_at=_timestamp(st.st_mtime)))
        return sorted(files, key=lambda f: f.path)

    def _info(self, name: str, folder: Path) -> ProjectInfo:
        files = self._scan(folder)
        latest = max([folder.lstat().st_mtime, *(f.modified_at.timestamp() for f in files)])
        return ProjectInfo(
            name=name,
            file_count=len(files),
            total_bytes=sum(f.size for f in files),
            updated_at=_timestamp(latest),
        )
