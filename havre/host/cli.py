"""``havre``: the command line of an enclave host.

havre check-config FILE          validate an enclave config, print every problem
havre demo-init [--state-dir D]  write the demo enclave (config, data, passwords) once
havre up --config FILE           start the hub, proxy and egress service; print the URL
                                 (--json: one JSON object saying what changed, for Ansible)
havre down --config FILE [--purge]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from havre import __version__
from havre.enclave.config import EnclaveConfig, EnclaveConfigError, load_enclave_config
from havre.host.demo import demo_roles
from havre.host.layout import StackError, StackOptions

DEFAULT_STATE_DIR = Path("/var/lib/havre")
DEFAULT_NOTEBOOK_IMAGE = f"havre/notebook:{__version__}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="havre", description="Run a Havre enclave.")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check-config", help="validate an enclave config file")
    check.add_argument("config", type=Path)

    demo = sub.add_parser("demo-init", help="write the demo enclave once (idempotent)")
    demo.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    demo.add_argument("--notebook-image", default=DEFAULT_NOTEBOOK_IMAGE)

    up = sub.add_parser("up", help="start the enclave's hub, proxy and egress service")
    up.add_argument("--config", type=Path, default=DEFAULT_STATE_DIR / "enclave.yaml")
    up.add_argument("--bind", default="127.0.0.1", help="host address of the web port")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--idp-port", type=int, default=8001, help="port of the embedded sign-in page")
    up.add_argument(
        "--public-host",
        default="",
        help="host name users type in their browser (default: the --bind address)",
    )
    up.add_argument("--hub-image", default=StackOptions.hub_image, help="hub image (and provider)")
    up.add_argument("--egress-image", default=StackOptions.egress_image, help="egress image")
    up.add_argument("--tls-cert", default="", help="PEM certificate: the proxy serves HTTPS")
    up.add_argument("--tls-key", default="", help="PEM private key of --tls-cert")
    up.add_argument(
        "--create-project-networks",
        action="store_true",
        help="make every project's network now, its bridge named hvp... (the host firewall's "
        "match) instead of at the first server start",
    )
    up.add_argument(
        "--json",
        action="store_true",
        help='print {"url", "changed", "changes"} as JSON instead of the welcome text',
    )

    down = sub.add_parser("down", help="stop the enclave's containers")
    down.add_argument("--config", type=Path, default=DEFAULT_STATE_DIR / "enclave.yaml")
    down.add_argument(
        "--purge", action="store_true", help="also remove its networks and state folder"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            enclave = load_enclave_config(args.config)
            print(f"{args.config}: valid ({len(enclave.projects)} projects)")
            return 0
        if args.command == "demo-init":
            from havre.host.demo import init_demo

            enclave, users = init_demo(args.state_dir, args.notebook_image)
            print(f"demo enclave config: {enclave.source}")
            return 0
        from havre.host import stack

        enclave = load_enclave_config(args.config)
        if args.command == "up":
            if bool(args.tls_cert) != bool(args.tls_key):
                print("havre: --tls-cert and --tls-key go together", file=sys.stderr)
                return 2
            opts = StackOptions(
                bind_ip=args.bind,
                port=args.port,
                idp_port=args.idp_port,
                public_host=args.public_host,
                hub_image=args.hub_image,
                egress_image=args.egress_image,
                tls_cert=args.tls_cert,
                tls_key=args.tls_key,
                create_project_networks=args.create_project_networks,
            )
            changes: list[str] = []
            url = stack.up(enclave, opts, changes)
            if args.json:
                print(json.dumps({"url": url, "changed": bool(changes), "changes": changes}))
            else:
                _print_welcome(enclave, opts)
            return 0
        if args.command == "down":
            stack.down(enclave, purge=args.purge)
            print("stopped" + (" and purged" if args.purge else ""))
            return 0
    except EnclaveConfigError as err:
        print(f"havre: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # a clear one-line error for the operator
        if isinstance(err, StackError):
            print(f"havre: {err}", file=sys.stderr)
            return 1
        import docker.errors

        if isinstance(err, docker.errors.APIError):  # e.g. a port already taken
            print(f"havre: Docker refused: {err.explanation or err}", file=sys.stderr)
            return 1
        raise
    return 1


def _print_welcome(enclave: EnclaveConfig, opts: StackOptions) -> None:
    print(f"\nHavre enclave '{enclave.name}' is running at {opts.public_url}/")
    if enclave.identity.provider == "embedded":
        print(f"Sign-in page (Havre's embedded OpenID Connect provider): {opts.idp_public_url}/")
    plain = enclave.state_dir / "secrets" / "demo-passwords.txt"
    if plain.exists():
        print("Sign in with one of these demo users (synthetic data only):")
        roles = demo_roles()
        for line in plain.read_text().splitlines():
            name, _, password = line.partition(" ")
            print(f"  {name:<8} password {password:<18} {roles.get(name, '')}")
        print(f"(passwords are kept in {plain}, readable by root only)")
    print("Each project is a server of its own: /user/<name>/<project>/")


if __name__ == "__main__":
    sys.exit(main())
