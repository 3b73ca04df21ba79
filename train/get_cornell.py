"""Fetch the Cornell Movie-Dialogs corpus into data/cornell (used by `make data`).

Either downloads the official zip (checksum-verified), or, with --data-path DIR, checks that DIR
holds the corpus and links data/cornell to it.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import requests

from train.config import DEFAULT_CORNELL_PATH

logger = logging.getLogger(__name__)

URL = "https://www.cs.cornell.edu/~cristian/data/cornell_movie_dialogs_corpus.zip"
# sha256 of the official zip, as pinned by several independent projects that download it.
ZIP_SHA256 = "3bde8a571f615201bc2d2453e22878090719638592f774720eddec739de8c900"
# sha256 of the original movie_conversations.txt; checked on every copy, zipped or not.
CONVERSATIONS_SHA256 = "600bc1d34ca629533643ca85c14b18849a548dce663e6d36977c14f24b75e055"
REQUIRED_FILES = ("movie_lines.txt", "movie_conversations.txt")
ZIP_FOLDER = "cornell movie-dialogs corpus/"  # every corpus file sits in this folder of the zip
DEFAULT_DEST = Path(DEFAULT_CORNELL_PATH)
HOW_TO_PROVIDE = (
    "To use a copy you already have, pass its folder (the one holding movie_lines.txt and "
    "movie_conversations.txt): `make data DATA_PATH=/path/to/cornell` or "
    "`python -m train.get_cornell --data-path /path/to/cornell`."
)


class CorpusError(RuntimeError):
    """The corpus could not be fetched or failed verification."""


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_corpus_dir(folder: Path) -> None:
    """Raise CorpusError unless `folder` holds both needed files and the original conversations file."""
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise CorpusError(f"{folder} lacks {', '.join(missing)}")
    actual = sha256_of(folder / "movie_conversations.txt")
    if actual != CONVERSATIONS_SHA256:
        raise CorpusError(f"{folder}/movie_conversations.txt has sha256 {actual}, expected {CONVERSATIONS_SHA256}")


def link_existing(source: Path, dest: Path) -> None:
    """Point `dest` at an existing corpus folder with a symlink (the corpus is ~40 MB; no copy)."""
    check_corpus_dir(source)
    if dest.is_symlink() or dest.exists():
        if dest.resolve() == source.resolve():
            return
        raise CorpusError(f"{dest} already exists and is not {source}; remove it first")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.symlink_to(source.resolve(), target_is_directory=True)


def download(url: str, target: Path, timeout: float) -> None:
    """Stream `url` into `target`; requests errors become CorpusError with the way out."""
    try:
        with requests.get(url, stream=True, timeout=timeout) as response:
            response.raise_for_status()
            with open(target, "wb") as f:
                for chunk in response.iter_content(chunk_size=1 << 20):
                    f.write(chunk)
    except requests.RequestException as e:
        raise CorpusError(f"could not download {url}: {e}\n{HOW_TO_PROVIDE}") from e


def extract(archive: Path, dest: Path) -> None:
    """Unpack the zip's corpus folder flat into `dest`, skipping __MACOSX and anything outside it."""
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = info.filename
            if info.is_dir() or not name.startswith(ZIP_FOLDER):
                continue
            # Use the base name only, so a crafted member name cannot write outside dest.
            with zf.open(info) as src, open(dest / Path(name).name, "wb") as out:
                shutil.copyfileobj(src, out)


def fetch(url: str, dest: Path, timeout: float, zip_sha256: str | None = ZIP_SHA256) -> None:
    """Download, verify and extract the corpus into `dest`."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "cornell.zip"
        logger.info("downloading %s", url)
        download(url, archive, timeout)
        actual = sha256_of(archive)
        if zip_sha256 and actual != zip_sha256:
            raise CorpusError(f"{url} has sha256 {actual}, expected {zip_sha256}")
        extract(archive, dest)
    check_corpus_dir(dest)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of `python -m train.get_cornell`."""
    p = argparse.ArgumentParser(prog="python -m train.get_cornell", description=__doc__.splitlines()[0])
    p.add_argument("--data-path", dest="source", metavar="DIR", type=Path, default=None,
                   help="use this existing corpus folder instead of downloading")
    p.add_argument("--dest", metavar="DIR", type=Path, default=DEFAULT_DEST,
                   help=f"where the corpus goes (default: {DEFAULT_DEST})")
    p.add_argument("--url", default=URL, help="zip to download (default: the official Cornell URL)")
    p.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default: 60)")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    """Make `args.dest` a verified corpus folder, by reuse, link or download."""
    if args.source is not None:
        link_existing(Path(args.source), args.dest)
        logger.info("%s -> %s (verified)", args.dest, Path(args.source).resolve())
        return
    if args.dest.is_dir():
        try:
            check_corpus_dir(args.dest)
            logger.info("%s already holds the corpus (verified)", args.dest)
            return
        except CorpusError as e:
            logger.info("%s is incomplete (%s); downloading", args.dest, e)
    # The zip checksum only holds for the official archive; a mirror is checked by its contents.
    fetch(args.url, args.dest, args.timeout, ZIP_SHA256 if args.url == URL else None)
    logger.info("corpus extracted into %s (verified)", args.dest)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 when the corpus is in place, 1 with a logged error otherwise."""
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    try:
        run(parse_args(argv))
    except CorpusError as e:
        logger.error("error: %s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
