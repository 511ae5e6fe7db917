"""Our tools write only into folders they created (``utils/owned_folder``):
the demo's work folder is emptied only when the demo made it."""
from __future__ import annotations

import pytest

from m2f_plugin.utils.owned_folder import (
    FolderNotOursError,
    claim_folder,
    fresh_owned_folder,
    write_owned_file,
)

FIX = 'Pass another folder.'


def test_fresh_run_empties_only_its_own_folder(tmp_path):
    ours = tmp_path / 'run'
    fresh_owned_folder(str(ours), 'm2f_demo', 'demo run', FIX)
    (ours / 'old.pth').write_bytes(b'stale')
    fresh_owned_folder(str(ours), 'm2f_demo', 'demo run', FIX)
    assert not (ours / 'old.pth').exists()  # ours: emptied for a fresh run
    assert (ours / '.m2f_demo').exists()

    users = tmp_path / 'experiments'
    users.mkdir()
    (users / 'best.pth').write_bytes(b'weeks of training')
    with pytest.raises(FolderNotOursError) as err:
        fresh_owned_folder(str(users), 'm2f_demo', 'demo run', FIX)
    assert (users / 'best.pth').read_bytes() == b'weeks of training'
    assert sorted(p.name for p in users.iterdir()) == ['best.pth']
    assert 'best.pth' in str(err.value) and FIX in str(err.value)


def test_a_legacy_folder_of_the_tool_is_still_its_own(tmp_path):
    old = tmp_path / 'demo'
    old.mkdir()
    (old / 'summary.png').write_bytes(b'png')
    fresh_owned_folder(str(old), 'm2f_demo', 'demo run', FIX,
                       legacy_marker='summary.png')
    assert sorted(p.name for p in old.iterdir()) == ['.m2f_demo']


def test_owned_file_is_replaced_a_foreign_or_edited_one_is_not(tmp_path):
    root = tmp_path / 'out'
    claim_folder(str(root), 'tool', 'files', FIX)
    write_owned_file(str(root), 'tool', 'a/b.json', b'1')
    write_owned_file(str(root), 'tool', 'a/b.json', b'2')  # its own: fine
    (root / 'a' / 'b.json').write_bytes(b'edited by hand')
    with pytest.raises(FolderNotOursError, match='b.json'):
        write_owned_file(str(root), 'tool', 'a/b.json', b'3')
    (root / 'mine.json').write_bytes(b'user')
    with pytest.raises(FolderNotOursError):
        write_owned_file(str(root), 'tool', 'mine.json', b'x')
    assert (root / 'mine.json').read_bytes() == b'user'
    assert (root / 'a' / 'b.json').read_bytes() == b'edited by hand'


def test_a_file_in_place_of_the_folder_is_refused(tmp_path):
    path = tmp_path / 'data'
    path.write_bytes(b'x')
    with pytest.raises(FolderNotOursError, match='is a file'):
        claim_folder(str(path), 'tool', 'files', FIX)
    assert path.read_bytes() == b'x'
