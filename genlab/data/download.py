"""Download datasets ahead of time through the datamodules' own prepare_data (MD5-checked), e.g. for CI.

    python -m genlab.data.download --data-dir DIR fashion_mnist shakespeare

Each name is a `data=` option (conf/data/<name>.yaml). Files already there are checked and never overwritten; a
dataset that cannot be fetched ends the command with its one-line error and a non-zero exit code.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydra.utils import instantiate

from genlab.errors import ConfigError, GenlabError
from genlab.utils.config import CONF_DIR, compose


def download(name: str, data_dir: Path) -> None:
    """prepare_data() of the `data=<name>` datamodule rooted at data_dir, then its files read as a run reads them."""
    if not (CONF_DIR / "data" / f"{name}.yaml").is_file():
        choices = sorted(path.stem for path in (CONF_DIR / "data").glob("*.yaml"))
        raise ConfigError(f"no dataset {name!r}: expected one of {', '.join(choices)}")
    cfg = compose([f"data={name}", f"paths.data_dir={data_dir}", f"paths.output_dir={data_dir}"])
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")  # reads what was downloaded: a truncated or foreign file is named here, not in a run
    print(f"{name}: ready in {data_dir}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="data= options, e.g. fashion_mnist shakespeare")
    parser.add_argument("--data-dir", type=Path, required=True, help="the folder DATA_DIR will name")
    args = parser.parse_args(argv)
    try:
        for name in args.names:
            download(name, args.data_dir.resolve())
    except GenlabError as err:  # a missing, unreachable or corrupt dataset: one line, exit code 1
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
