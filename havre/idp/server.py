"""The embedded provider's application, TLS server and ``havre-idp`` command.

The endpoints are in :mod:`havre.idp.handlers`, :mod:`havre.idp.authorize` and
:mod:`havre.idp.admin`; see docs/sysadmin/embedded-oidc-provider.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import ssl
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tornado.httpserver
import tornado.web

from havre.idp.admin import AdminRevokeHandler, AdminUserHandler, AdminUsersHandler
from havre.idp.authorize import AuthorizeHandler
from havre.idp.config import ConfigError, ProviderConfig, ensure_secret_file, load_config
from havre.idp.constants import (
    KEY_FILE_NAME,
    MAX_BODY_BYTES,
    TEMPLATES,
    log,
)
from havre.idp.handlers import (
    DiscoveryHandler,
    JWKSHandler,
    LogoutHandler,
    NotFoundHandler,
    RevokeHandler,
    TokenHandler,
    UserinfoHandler,
)
from havre.idp.tokens import Provider, SigningKey
from havre.idp.users import (
    _dummy_hash,
    write_users_file,
)


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """Access log without query strings (they may carry codes or tokens)."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    request = handler.request
    log.log(
        level,
        "%d %s %s (%s) %.1fms",
        status,
        request.method,
        request.path,
        request.remote_ip,
        1000 * request.request_time(),
    )


def make_app(config: ProviderConfig) -> tornado.web.Application:
    """The provider as a tornado application (loads or creates the signing key)."""
    provider = Provider(config)
    _dummy_hash()  # computed once now, not during the first sign-in
    base = re.escape(provider.issuer_path)
    name = r"/admin/users/([^/]+)"
    handlers: list[Any] = [
        (base + r"/\.well-known/openid-configuration", DiscoveryHandler),
        (base + r"/jwks", JWKSHandler),
        (base + r"/authorize", AuthorizeHandler),
        (base + r"/token", TokenHandler),
        (base + r"/userinfo", UserinfoHandler),
        (base + r"/revoke", RevokeHandler),
        (base + r"/logout", LogoutHandler),
        (base + r"/admin/users", AdminUsersHandler),
        (base + name, AdminUserHandler),
        (base + name + r"/revoke-tokens", AdminRevokeHandler),
    ]
    return tornado.web.Application(
        handlers,
        template_path=str(TEMPLATES),
        default_handler_class=NotFoundHandler,
        log_function=_log_request,
        havre_idp_provider=provider,
        debug=False,
        autoreload=False,
        serve_traceback=False,
        xsrf_cookies=False,
    )


def tls_context(
    cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str]
) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2 or later) for a PEM certificate (chain) and its key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(
            "--tls-cert/--tls-key",
            [f"can't use the TLS certificate {cert_file} with the key {key_file}: {err}"],
        ) from None
    return context


def make_server(
    app: tornado.web.Application, ssl_context: ssl.SSLContext | None = None
) -> tornado.httpserver.HTTPServer:
    """An HTTP server for ``app`` with the provider's limits (body size, timeouts); HTTPS when
    ``ssl_context`` is given (see :func:`tls_context`)."""
    config: ProviderConfig = app.settings["havre_idp_provider"].config
    return tornado.httpserver.HTTPServer(
        app,
        ssl_options=ssl_context,
        xheaders=config.behind_proxy,
        max_body_size=MAX_BODY_BYTES,
        idle_connection_timeout=60,
        body_timeout=30,
    )


def init_files(config: ProviderConfig) -> list[Path]:
    """Create what is missing: secret files, an empty users file, the signing key."""
    created = []
    secret_files = [c.client_secret_file for c in config.clients]
    if config.admin_token_file:
        secret_files.append(config.admin_token_file)
    for path in secret_files:
        if not path.exists():
            ensure_secret_file(path)
            created.append(path)
    if not config.users_file.exists():
        config.users_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_users_file(config.users_file, {})
        created.append(config.users_file)
    key_file = config.state_dir / KEY_FILE_NAME
    if not key_file.exists():
        SigningKey.load_or_create(config.state_dir)
        created.append(key_file)
    return created


async def _serve(
    config: ProviderConfig,
    address: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    internal_port: int | None = None,
) -> None:
    app = make_app(config)
    server = make_server(app, ssl_context)
    server.listen(port, address)
    servers = [server]
    if internal_port:
        # plain HTTP for relying parties on a private network (the hub's token calls)
        internal = make_server(app)
        internal.listen(internal_port, address)
        servers.append(internal)
        log.info("Back channel (plain HTTP) on %s:%d", address, internal_port)
    log.info(
        "Havre sign-in service %s listening on %s:%d (%s)",
        config.issuer,
        address,
        port,
        "HTTPS" if ssl_context else "plain HTTP",
    )
    if ssl_context is None and config.issuer.startswith("https:") and not config.behind_proxy:
        log.warning("The issuer is https but no --tls-cert was given: serving plain HTTP.")
    if config.issuer.startswith("http:") and urlsplit(config.issuer).hostname not in (
        "127.0.0.1",
        "localhost",
        "::1",
    ):
        log.warning(
            "The issuer is plain http on a network address: passwords and tokens "
            "cross the network in clear. Put a TLS reverse proxy in front."
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("Stopping")
    for each in servers:
        each.stop()
        await each.close_all_connections()


def main(argv: list[str] | None = None) -> int:
    """``havre-idp``: run the embedded OpenID Connect provider."""
    parser = argparse.ArgumentParser(
        prog="havre-idp",
        description="Havre's embedded OpenID Connect provider (demo enclaves and tests).",
    )
    parser.add_argument(
        "--config",
        default=os.environ.get("HAVRE_IDP_CONFIG"),
        help="YAML config file (default: $HAVRE_IDP_CONFIG)",
    )
    parser.add_argument("--port", type=int, default=8001, help="port (default 8001)")
    parser.add_argument("--address", default="0.0.0.0", help="address (default 0.0.0.0)")
    parser.add_argument(
        "--init",
        action="store_true",
        help="create missing secret files, users file and signing key, then exit",
    )
    parser.add_argument("--tls-cert", default="", help="PEM certificate (chain): serve HTTPS")
    parser.add_argument("--tls-key", default="", help="the certificate's PEM private key")
    parser.add_argument(
        "--internal-port",
        type=int,
        default=None,
        help="with --tls-cert: also serve plain HTTP on this port (a private network's back "
        "channel; never publish it)",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    args = parser.parse_args(argv)
    if not args.config:
        parser.error("give --config or set HAVRE_IDP_CONFIG")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("give both --tls-cert and --tls-key, or neither")
    if args.internal_port is not None and not args.tls_cert:
        parser.error("--internal-port is only for a provider that serves HTTPS (--tls-cert)")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.init:
            for path in init_files(load_config(args.config, check_files=False)):
                print(f"created {path}")
        config = load_config(args.config)
        context = tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    except ConfigError as err:
        print(f"havre-idp: refusing to start: {err}", file=sys.stderr)
        return 78  # EX_CONFIG
    if args.init:
        return 0
    asyncio.run(_serve(config, args.address, args.port, context, args.internal_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
