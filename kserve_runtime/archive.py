"""The TorchServe archive (.mar) as the KServe runtime reads it: one artifact for both engines.

A .mar is a zip: MAR-INF/MANIFEST.json names the checkpoint (`serializedFile`) and the model-config
(`configFile`); beside them are the `model` package and the `serving` core that TorchServe's handler imports. The
KServe runtime unpacks it, puts the unpacked folder first on sys.path (so the model and the core are the archive's,
as under TorchServe) and reads the same model-config: batching (batchSize, maxBatchDelay, jobQueueSize) and the
`handler:` section (quantize, threads, max_chars, decoding defaults and limits).
"""
from __future__ import annotations

import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

MANIFEST = "MAR-INF/MANIFEST.json"


class ArchiveError(ValueError):
    """An archive the runtime cannot serve, with what to do about it."""


@dataclass
class Archive:
    """An unpacked .mar: where it is, its checkpoint, and its model-config."""

    folder: Path
    checkpoint: Path
    model_config: dict

    @property
    def handler_section(self) -> dict:
        """The model-config's `handler:` section (the serving core's settings)."""
        return self.model_config.get("handler") or {}


def unpack(mar: Path, folder: Path) -> Archive:
    """Unpack `mar` into `folder` and read its manifest and model-config; ArchiveError naming what is wrong."""
    if not mar.is_file():
        raise ArchiveError(f"archive not found: {mar} (build it with `make mar`)")
    try:
        with zipfile.ZipFile(mar) as archive:
            archive.extractall(folder)
    except zipfile.BadZipFile:
        raise ArchiveError(f"{mar} is not a TorchServe archive (not a zip file): rebuild it with `make mar`") from None
    try:
        manifest = json.loads((folder / MANIFEST).read_text())["model"]
        checkpoint = folder / manifest["serializedFile"]
        config_file = manifest.get("configFile")
    except (OSError, KeyError, ValueError) as e:
        raise ArchiveError(f"{mar} has no usable {MANIFEST} ({type(e).__name__}): rebuild it with `make mar`") from None
    if not config_file or not (folder / config_file).is_file():
        raise ArchiveError(f"{mar} holds no model-config: rebuild it with `make mar` (it packs "
                           "handler/model-config.yaml)")
    if not (folder / "serving").is_dir():
        raise ArchiveError(f"{mar} holds no serving core (an archive built before it existed): rebuild it with "
                           "`make mar`")
    return Archive(folder, checkpoint, yaml.safe_load((folder / config_file).read_text()) or {})


def use_archive_code(archive: Archive) -> None:
    """Import `model` and `serving` from the archive from now on, as TorchServe's worker does."""
    for name in [m for m in sys.modules if m.split(".")[0] in ("model", "serving")]:
        del sys.modules[name]  # an earlier import of the repo's copies would otherwise stay
    sys.path.insert(0, str(archive.folder))
