"""Folders our tools write into: only ones they created themselves.

A tool that generates files (the synthetic data set, the demo's work
folder) first *claims* its output folder: a folder that does not exist or is
empty is created and marked with a small owner file; a folder that already
carries the same owner file is ours to write into again; anything else holds
someone's own files and is refused before a byte is written.
"""
from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
import shutil
from typing import Dict, Optional, Sequence

__all__ = ['FolderNotOursError', 'claim_folder', 'fresh_owned_folder',
           'owns_folder', 'write_owned_file']


class FolderNotOursError(FileExistsError):
    """Raised instead of writing into a folder a tool did not create."""


def _marker(path: str, owner: str) -> str:
    return osp.join(path, f'.{owner}')


def owns_folder(path: str, owner: str) -> bool:
    """Whether ``path`` carries ``owner``'s marker file."""
    return osp.isfile(_marker(path, owner))


def claim_folder(path: str, owner: str, what: str, fix: str,
                 legacy_marker: Optional[str] = None,
                 legacy_files: Sequence[str] = ()) -> None:
    """Create ``path`` for ``owner``, or accept it if it is already ours.

    Args:
        path: The output folder.
        owner: Short name of the writing tool; the marker is ``.<owner>``.
        what: What the tool writes (for the error message).
        fix: What the user should do instead (for the error message).
        legacy_marker: A file that older versions of the tool left in
            folders they wrote; such a folder is ours too.
        legacy_files: Files (relative paths) such older versions wrote;
            they are recorded as the tool's own when a legacy folder is
            claimed, so ``write_owned_file`` may replace them.

    Raises:
        FolderNotOursError: ``path`` exists, is not empty and carries no
            marker of ours. Nothing has been written.
    """
    if osp.isdir(path) and not owns_folder(path, owner):
        entries = sorted(os.listdir(path))
        legacy = legacy_marker is not None and legacy_marker in entries
        if legacy:
            _save_manifest(path, owner, {
                rel: _sha256(osp.join(path, rel)) for rel in legacy_files
                if osp.isfile(osp.join(path, rel))})
            return
        if entries and not legacy:
            shown = ', '.join(entries[:4]) + (', ...' if len(entries) > 4
                                              else '')
            raise FolderNotOursError(
                f'{path!r} already holds files ({shown}) that this tool did '
                f'not write, so it writes no {what} there (it only writes '
                f'into a new or empty folder, or one it created before). '
                f'{fix}')
    elif osp.exists(path) and not osp.isdir(path):
        raise FolderNotOursError(
            f'{path!r} is a file, not a folder; no {what} was written. {fix}')
    os.makedirs(path, exist_ok=True)
    if not owns_folder(path, owner):
        _save_manifest(path, owner, {})


def fresh_owned_folder(path: str, owner: str, what: str, fix: str,
                       legacy_marker: Optional[str] = None) -> None:
    """Empty ``path`` for a fresh run, if (and only if) it is ours.

    A folder ``owner`` created (marker file, or ``legacy_marker``) is deleted
    and made again; a new or empty folder is claimed; a folder with someone
    else's files raises ``FolderNotOursError`` and is left as it is.
    """
    if osp.isdir(path) and (owns_folder(path, owner) or (
            legacy_marker is not None
            and osp.exists(osp.join(path, legacy_marker)))):
        shutil.rmtree(path)
    claim_folder(path, owner, what, fix)


def _load_manifest(path: str, owner: str) -> Dict[str, str]:
    try:
        with open(_marker(path, owner)) as f:
            return dict(json.load(f).get('files', {}))
    except (OSError, ValueError, AttributeError):
        return {}


def _save_manifest(path: str, owner: str, files: Dict[str, str]) -> None:
    with open(_marker(path, owner), 'w') as f:
        json.dump({'owner': owner, 'files': files}, f, indent=1,
                  sort_keys=True)


def _sha256(path: str) -> str:
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def write_owned_file(root: str, owner: str, relpath: str, data: bytes) -> None:
    """Write ``root/relpath`` in a claimed folder, never over a file the tool
    did not write itself.

    The owner file records each such file's hash; an existing file whose
    bytes differ from what the tool last wrote there (a user's own file, or
    one the user edited) is refused.

    Raises:
        FolderNotOursError: The file exists and is not the tool's own.
    """
    target = osp.join(root, relpath)
    files = _load_manifest(root, owner)
    if osp.exists(target) and files.get(relpath) != _sha256(target):
        raise FolderNotOursError(
            f'{target!r} exists and was not written by this tool (or was '
            f'changed since); it is left as it is. Move it away, or point '
            f'the tool at a new folder.')
    os.makedirs(osp.dirname(target), exist_ok=True)
    with open(target, 'wb') as f:
        f.write(data)
    files[relpath] = hashlib.sha256(data).hexdigest()
    _save_manifest(root, owner, files)
