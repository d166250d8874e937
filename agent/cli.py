"""``edgefleet-agent``: run the device daemon from a validated TOML config (argparse keeps it light)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from agent.config import AgentConfig
from agent.daemon import Agent
from agent.errors import AgentError
from fleet.errors import FleetError


def build_parser() -> argparse.ArgumentParser:
    """The ``edgefleet-agent`` command line (tests check the documents' commands against it)."""
    parser = argparse.ArgumentParser(prog="edgefleet-agent", description="EdgeFleet device agent")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve the installed model and connect to the hub (retrying until it answers)")
    run.add_argument("--config", type=Path, required=True, help="path to agent.toml")
    run.add_argument("--log-level", default="INFO")
    check = sub.add_parser("check-config", help="validate agent.toml and exit")
    check.add_argument("--config", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edgefleet-agent`` console script."""
    args = build_parser().parse_args(argv)
    try:
        config = AgentConfig.load(args.config)
    except AgentError as exc:
        print(f"edgefleet-agent: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"{args.config}: ok (device {config.device_id}, target {config.target})")
        return 0
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    agent = Agent(config)
    try:
        agent.start(online_timeout_s=0)  # serve at once; the broker link comes up in the background
    except (AgentError, FleetError) as exc:
        print(f"edgefleet-agent: {exc}", file=sys.stderr)
        return 1
    if agent.api is not None:
        print(f"local inference API on {agent.api.url}", flush=True)
    print(f"agent {config.device_id} running; connecting to the broker in the background", flush=True)
    stop.wait()
    agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
