"""The ``neft`` command: ``neft demo``, ``neft report``, ``neft check CONFIG...``, ``neft keys``, ``neft plugins``."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from neft_plugins import __version__
from neft_plugins.config import NEFTuneConfig
from neft_plugins.errors import NEFTuneError
from neft_plugins.keys import KEYS, usage_lines
from neft_plugins.plugins import distributions, plugin_manager, schedules

AXOLOTL_PLUGIN = "neft_plugins.integrations.axolotl.NEFTunePlugin"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:
        from neft_plugins.demo.cli import demo_main

        return demo_main(argv[1:])
    if argv[:1] == ["report"]:
        from neft_plugins.demo.report_cli import report_main

        return report_main(argv[1:])
    parser = argparse.ArgumentParser(prog="neft", description="NEFTune, done right.")
    parser.add_argument("--version", action="version", version=f"neft-plugins {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="fine-tune a real small model with and without NEFTune and compare")
    commands.add_parser("report", help="compare two sets of generations with the paper's measures")
    check = commands.add_parser(
        "check",
        help="validate the neftune_* keys of YAML or JSON configs, and that the Axolotl plugins they list import",
    )
    check.add_argument("configs", type=Path, nargs="+", metavar="config")
    commands.add_parser("keys", help="the neftune_* keys: values, defaults and what each does")
    commands.add_parser("plugins", help="list the distributions, schedules and plugins installed")
    args = parser.parse_args(argv)
    if args.command == "check":
        return max(_check(path) for path in args.configs)
    if args.command == "keys":
        return _list_keys()
    return _list_plugins()


def _check(path: Path) -> int:
    text = path.read_text()
    if path.suffix == ".json":
        mapping = json.loads(text)
    else:
        try:
            import yaml
        except ImportError as error:
            raise SystemExit("neft check: reading YAML needs PyYAML (pip install pyyaml)") from error
        mapping = yaml.safe_load(text)
    mapping = mapping or {}
    try:
        config = NEFTuneConfig.from_mapping(mapping)
    except NEFTuneError as error:
        print(f"{path}: {error}", file=sys.stderr)
        return 2
    problems = [_plugin_problem(name) for name in mapping.get("plugins") or []]
    if config.enabled and "base_model" in mapping and AXOLOTL_PLUGIN not in (mapping.get("plugins") or []):
        problems.append(
            f"neftune_alpha is set but plugins does not list {AXOLOTL_PLUGIN}: Axolotl ignores it"
        )
    for problem in filter(None, problems):
        print(f"{path}: {problem}", file=sys.stderr)
    if any(problems):
        return 2
    print(f"{path}: ok\n{json.dumps(config.as_dict(), indent=2)}")
    return 0


def _plugin_problem(dotted_path: str) -> str | None:
    """Why Axolotl could not load the plugin ``dotted_path`` in this environment, or None if it imports.

    Axolotl logs one error line and trains on without a plugin it cannot import.
    """
    module_name, _, class_name = dotted_path.rpartition(".")
    try:
        plugin = getattr(importlib.import_module(module_name), class_name)
    except Exception as error:
        return (
            f"plugin {dotted_path} does not import here ({type(error).__name__}: {error}); Axolotl would train "
            "without it. Install neft-plugins in the environment that runs axolotl."
        )
    print(f"plugin {dotted_path}: imports ({plugin.__module__})")
    return None


def _list_keys() -> int:
    for key, line in zip(KEYS, usage_lines(), strict=True):
        print(f"{line.strip()}\n    {key.help}")
    return 0


def _list_plugins() -> int:
    print("distributions:", ", ".join(distributions()))
    print("schedules:", ", ".join(schedules()))
    for name, _plugin in plugin_manager().list_name_plugin():
        print(f"plugin: {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
