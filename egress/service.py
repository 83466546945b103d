"""``havre-egress``: the egress (output-checking) service process.

A JupyterHub service at ``/services/egress/`` (Hub OAuth: users are who the hub says, with the
hub groups Havre manages). It keeps its state under ``<state_dir>/egress/``: the database
(SQLite with WAL by default; ``$HAVRE_EGRESS_DB`` for PostgreSQL), the content store of
snapshots, the release-signing key (made at first start, mode 0600) and the audit checkpoints.
The pages and the API are in :mod:`egress.web`; every operation in :mod:`egress.core`.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable

from tornado import ioloop

from egress.content_store import ContentStore
from egress.core import EgressService, ServicePaths
from egress.mailer import Mailer
from egress.signing import generate_key
from egress.store.db import make_engine, migrate
from egress.web import make_app
from spawner.enclave import EnclaveConfig, load_enclave_config

DEFAULT_PORT = 8090


def build_service(
    enclave: EnclaveConfig,
    *,
    public_url: str = "",
    notifier: Callable[[], None] | None = None,
) -> EgressService:
    """The core service over this enclave's state: migrated database, store, signing key."""
    paths = ServicePaths(enclave.state_dir)
    paths.egress_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    engine = make_engine(os.environ.get("HAVRE_EGRESS_DB") or paths.db_url)
    migrate(engine)
    if not paths.signing_key.exists():
        generate_key(paths.signing_key)
    return EgressService(
        engine,
        ContentStore(paths.content_dir),
        enclave,
        signing_key_path=paths.signing_key,
        checkpoint_path=paths.checkpoints,
        service_url=public_url,
        notifier=notifier,
    )


class MailLoop:
    """Runs the mailer in a worker thread: soon after a step queues e-mail, and every minute."""

    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer
        self.running = False

    def wake(self) -> None:
        ioloop.IOLoop.current().add_callback(self.run)

    async def run(self) -> None:
        if self.running:
            return
        self.running = True
        try:
            counts = await ioloop.IOLoop.current().run_in_executor(None, self.mailer.deliver)
            if counts["sent"] or counts["failed"]:
                logging.getLogger("egress.mailer").info("e-mail: %s", counts)
        except Exception:
            logging.getLogger("egress.mailer").exception("e-mail delivery failed")
        finally:
            self.running = False


def main() -> None:
    """Console entry point ``havre-egress``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    enclave = load_enclave_config(os.environ.get("HAVRE_CONFIG", "/etc/havre/enclave.yaml"))
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/egress/")
    public = os.environ.get("HAVRE_PUBLIC_URL", "").rstrip("/")
    loop_box: list[MailLoop] = []
    service = build_service(
        enclave,
        public_url=f"{public}{prefix}".rstrip("/") if public else "",
        notifier=lambda: loop_box[0].wake() if loop_box else None,
    )
    mailer = Mailer.from_enclave(service, enclave)
    if mailer is not None:
        loop_box.append(MailLoop(mailer))
        ioloop.PeriodicCallback(loop_box[0].run, 60_000).start()
    app = make_app(service, prefix, cookie_secret=os.urandom(32))
    port = int(os.environ.get("HAVRE_EGRESS_PORT", DEFAULT_PORT))
    # a hard cap on bodies (the API refuses more than 1 MiB itself, with a message)
    app.listen(port, address="0.0.0.0", max_body_size=8 * 1024 * 1024)
    loop = ioloop.IOLoop.current()
    signal.signal(signal.SIGTERM, lambda *_: loop.add_callback_from_signal(loop.stop))
    logging.getLogger("egress").info("havre-egress listening on :%s%s", port, prefix)
    loop.start()


if __name__ == "__main__":
    main()
