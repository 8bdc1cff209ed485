"""`gradstarve data ...`: fetch, verify and prepare data sets."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from gradstarve.cli._shell import (
    _DATA_ROOT_HELP,
    DataSet,
    _print_table,
    console,
    data_app,
)


@data_app.command("download")
def data_download(
    dataset: DataSet = typer.Argument(..., help="The data set to fetch."),
    data_root: Path = typer.Option(None, "--data-root", help=_DATA_ROOT_HELP),
    mirror: list[str] = typer.Option(
        None, "--mirror", help="Folder URL to fetch from, instead of the default mirrors; repeat to try several."
    ),
    force: bool = typer.Option(False, "--force", help="Download again even when a verified copy is present."),
    timeout: float = typer.Option(60.0, min=0.1, help="Seconds to wait for a mirror before trying the next."),
) -> None:
    """Fetch a data set's original files into <data root>/<dataset>/, verifying each file's MD5.

    MNIST: the four IDX .gz files from https://ossci-datasets.s3.amazonaws.com/mnist/, else
    http://yann.lecun.com/exdb/mnist/. A file is moved into place only once its checksum matches.
    """
    from gradstarve.data import mnist
    from gradstarve.data.errors import DataError
    from gradstarve.data.paths import dataset_dir

    console.print(f"data folder: {dataset_dir(dataset.value, data_root)}")
    try:
        fetched = mnist.download_mnist(data_root, mirror or mnist.MNIST_MIRRORS, force=force, timeout=timeout)
    except DataError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(1) from None
    for item in fetched:
        state = "downloaded and verified" if item.downloaded else "already present, verified"
        console.print(f"[green]ok[/green] {item.path.name}: {state}")


@data_app.command("verify")
def data_verify(
    dataset: DataSet = typer.Argument(..., help="The data set to check."),
    data_root: Path = typer.Option(None, "--data-root", help=_DATA_ROOT_HELP),
) -> None:
    """Check that every file of a data set is present and intact (checksums, headers); exit 1 if not."""
    from gradstarve.data import mnist
    from gradstarve.data.paths import dataset_dir, download_command

    checks = mnist.check_mnist(data_root)
    folder = dataset_dir(dataset.value, data_root)
    table = Table(title=f"{dataset.value} in {folder}")
    for column in ("file", "status", "as", "expected MD5 of the .gz"):
        table.add_column(column, no_wrap=True)
    colours = {"ok": "green", "missing": "yellow", "corrupt": "red"}
    formats = {".gz": "gz", ".npz": "npz"}
    for check in checks:
        form = formats.get(check.path.suffix, "raw") if check.path else ""
        table.add_row(check.entry.name, f"[{colours[check.status]}]{check.status}[/]", form, check.entry.gz_md5)
    _print_table(table)
    for check in checks:
        if check.status == "corrupt":
            console.print(f"[red]corrupt:[/red] {check.message}", soft_wrap=True)
    if any(check.status == "missing" for check in checks):
        console.print(f"[yellow]missing:[/yellow] each file is read as <file>.gz, else <file>, else {mnist.NPZ_NAME}")
    if any(check.status != "ok" for check in checks):
        console.print(f"fix: {download_command(dataset.value, data_root)}", soft_wrap=True)
        raise typer.Exit(1)
    console.print("[green]all files verified[/green]")


_PREPARABLE = ("celeba",)


@data_app.command("prepare")
def data_prepare(
    dataset: str = typer.Argument(..., help=f"Data set to prepare: {', '.join(_PREPARABLE)}."),
    data_root: Path = typer.Option(
        ..., "--data-root", help="The CelebA folder, or a data root holding it as celeba/ (e.g. ../shared/data)."
    ),
    resolution: int = typer.Option(64, min=8, help="Side of the square images (CPU preset 64, paper 224)."),
    cache_dir: Path = typer.Option(
        None, "--cache-dir", help="Cache folder [default: $XDG_CACHE_HOME/gradstarve/image-cache]."
    ),
    layout: str = typer.Option("auto", help="auto, metadata (metadata.csv) or official (list_attr/list_eval files)."),
    target: str = typer.Option("Blond_Hair", help="Target attribute."),
    attribute: str = typer.Option("Male", help="Spurious attribute."),
    workers: int = typer.Option(None, min=0, help="Decoding threads [default: all cores]."),
) -> None:
    """Decode a data set's images once into the cache and print the group counts per split.

    Later loads (training runs, reproductions) then read the cached pixels in seconds.
    """
    if dataset not in _PREPARABLE:
        raise typer.BadParameter(f"expected one of {', '.join(_PREPARABLE)}, got {dataset!r}", param_hint="DATASET")
    import torch

    from gradstarve.data.celeba import load_celeba

    start = time.perf_counter()
    try:
        splits = load_celeba(
            data_root,
            resolution=resolution,
            target=target,
            attribute=attribute,
            cache_dir=cache_dir,
            layout=layout,
            workers=workers,
            dtype=torch.uint8,  # counts and cache only: skip the float copy
        )
    except (ValueError, FileNotFoundError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    first = next(iter(splits.values()))
    table = Table(
        title=f"CelebA groups ({target} x {attribute}) at {resolution}x{resolution}, {first.metadata['layout']} layout"
    )
    table.add_column("split")
    for name in first.group_names:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right")
    table.add_column("cache")
    for split, data in splits.items():
        counts = data.metadata["group_counts"]
        status = "reused" if data.metadata["from_cache"] else "built"
        table.add_row(split, *(f"{counts[name]:,}" for name in data.group_names), f"{len(data):,}", status)
    _print_table(table)
    skipped = first.metadata["n_skipped_missing_images"]
    if skipped:
        console.print(f"{skipped:,} of {first.metadata['n_listed_images']:,} listed images are not on disk: skipped")
    console.print(f"cache files: {', '.join(data.metadata['cache_file'] for data in splits.values())}")
    console.print(f"done in {time.perf_counter() - start:.1f} s")
