"""Loading `.keras` files with an error that names what is wrong with the file."""

from __future__ import annotations

import os
import zipfile
from typing import Any

import keras

# The members Keras 3 writes into every `.keras` archive (`keras.saving.save_model`).
_REQUIRED_MEMBERS = ("metadata.json", "config.json")


def check_keras_archive(path: str | os.PathLike) -> None:
    """Raises a ValueError naming `path` unless it is a complete, readable `.keras` zip archive.

    Keras answers a truncated or empty `.keras` file with `ValueError: File not found` although
    the file exists, which sends people looking for the wrong problem (paths, mounts). This reads
    the zip's directory and checks every member's CRC, which costs one read of the file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such model file: {path!r}.")
    if os.path.isdir(path):
        raise ValueError(
            f"{path!r} is a directory, not a .keras file (a SavedModel export? load it with "
            "tf.saved_model.load)."
        )
    size = os.path.getsize(path)
    hint = ("It may be truncated (an interrupted copy, download or save) or not a .keras file; "
            "save the model again or copy the complete file.")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path!r} ({size} bytes) is not a valid .keras archive: it is not a "
                         f"complete zip file. {hint}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            corrupt = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise ValueError(f"{path!r} ({size} bytes) is not a valid .keras archive ({error}). "
                         f"{hint}") from None
    if corrupt is not None:
        raise ValueError(f"{path!r} is not a complete .keras archive: member {corrupt!r} is "
                         f"corrupt (CRC mismatch). {hint}")
    missing = [m for m in _REQUIRED_MEMBERS if m not in names]
    if missing:
        raise ValueError(f"{path!r} is a zip file but not a .keras archive: it lacks {missing} "
                         f"(members: {sorted(names)[:10]}).")


def load_model(path: str | os.PathLike, **kwargs: Any) -> keras.Model:
    """`keras.saving.load_model(path, **kwargs)` after `check_keras_archive(path)` for `.keras`
    files, so a truncated or empty file fails with a message that says so (and names the path).

    Importing `keras_mtl` registers every class a keras_mtl model's config names, so this also
    loads in Keras' default `safe_mode`. Legacy `.h5` files go to Keras unchecked.
    """
    path = os.fspath(path)
    if not path.endswith((".h5", ".hdf5")):
        check_keras_archive(path)
    return keras.saving.load_model(path, **kwargs)
