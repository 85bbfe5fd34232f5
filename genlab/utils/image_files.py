"""The image files of a folder or a ZIP, in a fixed order, with their labels and a fingerprint of their state:
listed and stat'ed, never decoded (genlab/data/image_decode.py decodes). Below the data modules, since the config
counts the classes too (conf/data/image_folder.yaml's num_classes, resolved before any data is built).

The layouts:
- a folder of images, at any depth; with `labels=auto`, its first-level subfolders are the classes (sorted by
  name, as torchvision's ImageFolder numbers them), and a folder without subfolders is unlabelled;
- EDM's dataset_tool layout (a folder or a ZIP holding `dataset.json`): the labels are that file's
  `{"labels": [["00000/img00000000.png", 6], ...]}` (null: unlabelled), and its subfolders are not classes.
Images are ordered by their relative path (as EDM orders them), so a folder exported in index order keeps it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from genlab.errors import ConfigError, CorruptDatasetError, DatasetNotFoundError, one_line

# the formats decoded (genlab/data/image_decode.py opens with these only: PIL picks a plugin by content, and an
# EPS file named .png would otherwise run Ghostscript), and the file names that are taken for them
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "DIB", "GIF", "TIFF", "PPM", "TGA", "QOI")
IMAGE_EXTENSIONS = frozenset(
    ".png .jpg .jpeg .jpe .jfif .webp .bmp .dib .gif .tif .tiff .ppm .pgm .pbm .pnm .tga .qoi".split()
)
LABELS_FILE = "dataset.json"  # EDM's dataset_tool
MAX_CLASSES = 100_000  # a label beyond it is a mistake (a model would build a table of that many classes)


@dataclass(frozen=True)
class ImageListing:
    """The images of a folder or ZIP: relative POSIX names in order, a label each (0 when unlabelled)."""

    root: Path  # the folder, or the .zip file
    names: list[str]
    labels: list[int]
    classes: list[str]  # class names, [] when unlabelled; label i is classes[i]
    sizes: list[int]  # bytes; -1 where the file cannot be stat'ed (a broken or looping symlink)
    fingerprint: str  # changes when any image or the labels file is added, removed, resized or modified

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_zip(self) -> bool:
        return self.root.is_file()


def list_images(path: str | Path, labels: str, key: str = "data.path") -> ImageListing:
    """The images under `path` (a folder or a .zip), labelled as `labels` says (auto or none); one-line errors
    name `key` for a missing, empty or imageless folder, a symlink loop, or labels that cannot be read."""
    root = _root(path, key)
    entries = _zip_entries(root) if root.is_file() else _folder_entries(root, key)
    images = {name: entry for name, entry in entries.items() if PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS}
    if not images:
        what = f"{len(entries)} file{'s' if len(entries) > 1 else ''} but no images" if entries else "no files"
        example = f" (e.g. {min(entries)})" if entries else ""
        raise DatasetNotFoundError(
            f"{key}={path} holds {what}{example}: expected {', '.join(sorted(IMAGE_EXTENSIONS))} files"
        )
    names = sorted(images)
    classes, label_of = _classes(root, labels, key)
    if label_of is None:
        label_of = _by_class_folder(names, classes, path, key)
    missing = [name for name in names if name not in label_of]
    if missing:
        raise CorruptDatasetError(
            f"{root / LABELS_FILE}: no label for {missing[0]} ({len(missing)} images without one)"
        )
    fingerprint = hashlib.sha256(
        json.dumps([[name, *images[name]] for name in names] + [entries.get(LABELS_FILE)]).encode()
    ).hexdigest()
    return ImageListing(
        root, names, [label_of[name] for name in names], classes, [images[name][0] for name in names], fingerprint
    )


def count_classes(path: str, labels: str) -> int:
    """The number of classes `list_images` finds (without listing every image), 0 where there are none or it cannot
    tell: the datamodule then reads the folder and says what is wrong. For conf/data/image_folder.yaml's
    `num_classes: ${image_folder_classes:${data.path},${data.labels}}`."""
    try:
        return len(_classes(_root(path, "data.path"), labels, "data.path")[0])
    except (ConfigError, CorruptDatasetError, DatasetNotFoundError, OSError):
        return 0


def _root(path: str | Path, key: str) -> Path:
    root = Path(path).expanduser().absolute()
    if not root.exists():
        raise DatasetNotFoundError(f"{key}={path}: no such folder or ZIP file")
    if root.is_file() and not zipfile.is_zipfile(root):
        raise ConfigError(f"{key}={path} is a file but not a ZIP: give a folder of images, or a ZIP of them")
    return root


# --- listing -------------------------------------------------------------------------------------------------------


def _folder_entries(root: Path, key: str) -> dict[str, tuple[int, int]]:
    """{relative name: (size, modification time in ns)} of every file under `root`, symlinks followed; hidden files
    and folders (.DS_Store, .ipynb_checkpoints) left out. A folder that links back to one that holds it is refused:
    following it would never end."""
    entries: dict[str, tuple[int, int]] = {}
    pending = [(root, "", frozenset[tuple[int, int]]())]
    while pending:
        folder, prefix, ancestors = pending.pop()
        try:
            identity = (folder.stat().st_dev, folder.stat().st_ino)
            children = list(os.scandir(folder))
        except OSError as err:
            raise CorruptDatasetError(f"{key}: cannot read the folder {folder} ({one_line(err)})") from None
        if identity in ancestors:
            raise CorruptDatasetError(
                f"{key}: {folder} is a symlink to a folder that holds it (a loop): remove the link, or point "
                f"{key} at a folder without one"
            )
        for child in children:
            if child.name.startswith("."):
                continue
            name = f"{prefix}{child.name}"
            try:
                is_folder = child.is_dir()  # follows symlinks
            except OSError:
                is_folder = False
            if is_folder:
                pending.append((Path(child.path), f"{name}/", ancestors | {identity}))
                continue
            try:
                info = child.stat()  # follows symlinks
                if stat.S_ISREG(info.st_mode):
                    entries[name] = (info.st_size, info.st_mtime_ns)
            except OSError:  # a broken or looping symlink: listed, and named as unreadable when decoded
                entries[name] = (-1, 0)
    return entries


def _zip_entries(root: Path) -> dict[str, tuple[int, int]]:
    """{member name: (size, CRC-32)} of the files in a ZIP (outside hidden folders): a member that changes changes
    its CRC, and a ZIP written again with the same members needs no new cache."""
    try:
        with zipfile.ZipFile(root) as archive:
            members = archive.infolist()
    except (OSError, zipfile.BadZipFile) as err:
        raise CorruptDatasetError(f"{root}: not a ZIP that can be read ({one_line(err)})") from None
    return {
        member.filename: (member.file_size, member.CRC)
        for member in members
        if not member.is_dir() and not _hidden(member.filename)
    }


# --- labels --------------------------------------------------------------------------------------------------------


def _classes(root: Path, labels: str, key: str) -> tuple[list[str], dict[str, int] | None]:
    """The class names, and the label of each image where dataset.json gives them (else None: by class folder, or
    0 for all when there are no classes).
    With labels=auto and no dataset.json, every first-level subfolder is a class (torchvision's ImageFolder's rule)."""
    if labels == "none":
        return [], None
    if root.is_file():
        with zipfile.ZipFile(root) as archive:
            names = [name for name in archive.namelist() if not _hidden(name)]
        if LABELS_FILE in names:
            return _labels_file(root, key)
        return sorted({name.split("/", 1)[0] for name in names if "/" in name}), None
    if (root / LABELS_FILE).is_file():
        return _labels_file(root, key)
    return sorted(entry.name for entry in os.scandir(root) if not entry.name.startswith(".") and entry.is_dir()), None


def _by_class_folder(names: list[str], classes: list[str], path: str | Path, key: str) -> dict[str, int]:
    """Each image's label: the number of its first-level folder among `classes`; 0 for all where there are none."""
    if not classes:
        return dict.fromkeys(names, 0)
    top = [name for name in names if "/" not in name]
    if top:
        raise ConfigError(
            f"{key}={path} holds images at its top ({top[0]}) beside subfolders, which data.labels=auto takes as "
            f"classes ({', '.join(classes[:3])}): put every image in a class subfolder, or set data.labels=none"
        )
    index = {name: i for i, name in enumerate(classes)}
    empty = set(classes) - {name.split("/", 1)[0] for name in names}
    if empty:
        raise DatasetNotFoundError(
            f"{key}={path}: its subfolder {min(empty)} holds no images, and data.labels=auto takes every subfolder "
            f"as a class: remove it, or set data.labels=none"
        )
    return {name: index[name.split("/", 1)[0]] for name in names}


def _labels_file(root: Path, key: str) -> tuple[list[str], dict[str, int]]:
    """EDM's dataset.json: a label (an integer class) for each image, or null for none. Read as data: numbers
    and names, nothing else."""
    where = f"{root / LABELS_FILE}" if root.is_dir() else f"{root}:{LABELS_FILE}"
    try:
        if root.is_dir():
            text = (root / LABELS_FILE).read_bytes()
        else:
            with zipfile.ZipFile(root) as archive:
                text = archive.read(LABELS_FILE)
        content = json.loads(text)
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise CorruptDatasetError(f"{where}: not a labels file that can be read ({one_line(err)})") from None
    pairs = content.get("labels") if isinstance(content, dict) else ()
    if pairs is None:
        return [], None
    if not isinstance(pairs, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and type(pair[1]) is int
        for pair in pairs
    ):
        raise CorruptDatasetError(
            f'{where}: expected {{"labels": [["<image name>", <class number>], ...]}} (or "labels": null), as EDM\'s '
            f"dataset_tool writes it"
        )
    label_of = {name.replace("\\", "/"): label for name, label in pairs}
    if label_of and (min(label_of.values()) < 0 or max(label_of.values()) >= MAX_CLASSES):
        raise CorruptDatasetError(f"{where}: labels must be class numbers 0..{MAX_CLASSES - 1}")
    return [str(i) for i in range(max(label_of.values(), default=-1) + 1)], label_of


def _hidden(name: str) -> bool:
    return any(part.startswith(".") for part in PurePosixPath(name).parts)
