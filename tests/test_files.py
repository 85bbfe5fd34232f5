"""Files written whole or not at all (genlab/utils/files.py): what metrics.json, report.html, samples.txt and every
checkpoint are written through."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from genlab.utils.files import replaced_atomically, write_text_atomically


def test_a_write_replaces_the_file_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    write_text_atomically(path, '{"val/loss": 1.0}\n')
    write_text_atomically(path, '{"val/loss": 0.5}\n')
    assert path.read_text() == '{"val/loss": 0.5}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.parametrize("previous", [None, '{"val/loss": 1.0}\n'])
def test_a_write_that_fails_halfway_leaves_the_previous_file_whole(tmp_path: Path, previous: str | None) -> None:
    path = tmp_path / "metrics.json"
    if previous is not None:
        path.write_text(previous)
    with pytest.raises(OSError, match="No space left"), replaced_atomically(path) as file:
        file.write('{"val/lo')  # the disk fills up here
        raise OSError(errno.ENOSPC, "No space left on device")
    assert (path.read_text() if path.exists() else None) == previous
    assert not list(tmp_path.glob(".*.partial"))
