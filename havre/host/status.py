"""``havre status``: the page a sysadmin opens first.

What it shows, for one enclave: its containers (role, state, image), the images they run,
the notebook servers running per project, the requests waiting for output checkers (asked
of the egress container: ``havre-egress-admin pending --json``, since the host's command
line imports nothing of the egress service), the audit log's last verification (the
``egress/audit-last-verify.json`` the egress service writes) and the expiry of the TLS
certificate the proxy and the sign-in page serve (``hub-tls/cert.pem``, or ``--tls-cert``).
Each image is shown with the digest of its SBOM when ``images/build.sh`` wrote one
(``images/sbom/<name>.cdx.json``, see :func:`sbom_summary`), else "no SBOM".

:func:`gather` reads the machine (Docker, files); everything else works on plain data
(:class:`Status`), so that the rules (what counts as a problem) are unit-tested on their own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from havre.enclave.config import EnclaveConfig
from havre.host.sbom import read_sbom

#: the stack's service containers (``havre.role`` label); ``idp`` only with the embedded provider
SERVICE_ROLES = ("broker", "idp", "egress", "runner", "hub")
#: a certificate expiring sooner than this is a problem
CERTIFICATE_WARNING_DAYS = 30
#: the egress service's record of the last audit verification (egress.monitoring.verify_record)
LAST_VERIFY_FILE = Path("egress") / "audit-last-verify.json"
NO_SBOM = "no SBOM"


@dataclass(frozen=True)
class ContainerRow:
    name: str
    role: str
    state: str
    image: str
    project: str = ""
    user: str = ""


@dataclass(frozen=True)
class CertificateRow:
    path: str
    not_after: str
    days_left: int


@dataclass
class Status:
    enclave: str
    containers: list[ContainerRow]
    images: dict[str, str]  #: image reference -> image id (short)
    pending: list[dict[str, Any]] | None  #: None: the egress service could not be asked
    pending_error: str = ""
    last_verify: dict[str, Any] | None = None  #: {"ok": bool, "at": ISO time}
    certificates: list[CertificateRow] = field(default_factory=list)
    sboms: dict[str, str] = field(default_factory=dict)  #: image reference -> sbom_summary
    expected_roles: tuple[str, ...] = SERVICE_ROLES

    @property
    def servers(self) -> dict[str, list[str]]:
        """Running notebook servers: project -> users."""
        found: dict[str, list[str]] = {}
        for c in self.containers:
            if c.role == "notebook" and c.state == "running":
                found.setdefault(c.project, []).append(c.user)
        return {p: sorted(users) for p, users in sorted(found.items())}

    def problems(self) -> list[str]:
        """Sentences for what needs a sysadmin's attention (empty: all well)."""
        found = []
        by_role = {c.role: c for c in self.containers}
        for role in self.expected_roles:
            row = by_role.get(role)
            if row is None:
                found.append(f"The {role} container does not exist: run `havre up`.")
            elif row.state != "running":
                found.append(f"The {role} container ({row.name}) is {row.state}, not running.")
        if self.pending is None:
            found.append(
                f"The egress service could not list pending requests: {self.pending_error}"
            )
        if self.last_verify is None:
            found.append("The audit log has never been verified (the egress service's audit page).")
        elif not self.last_verify.get("ok"):
            found.append(
                f"The last audit verification, at {self.last_verify.get('at')}, FAILED: see "
                "docs/sysadmin/egress-operations.md#verifying."
            )
        for cert in self.certificates:
            if cert.days_left < 0:
                found.append(f"The certificate {cert.path} expired on {cert.not_after}.")
            elif cert.days_left < CERTIFICATE_WARNING_DAYS:
                found.append(
                    f"The certificate {cert.path} expires in {cert.days_left} days "
                    f"({cert.not_after})."
                )
        return found

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["servers"] = self.servers
        data["problems"] = self.problems()
        data.pop("expected_roles")
        return data


def certificate_row(path: Path, now: datetime) -> CertificateRow:
    """The expiry of the (first) PEM certificate in ``path``."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    not_after = cert.not_valid_after_utc
    return CertificateRow(str(path), not_after.isoformat(), (not_after - now).days)


def read_last_verify(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
        return {"ok": bool(data["ok"]), "at": str(data["at"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def sbom_summary(image: str, image_id: str, directory: Path | None = None) -> str:
    """What ``havre status`` says of ``image``'s SBOM (read by :func:`havre.host.sbom.read_sbom`):
    ``sha256:<first 12> (<n> components)``, with ``, of another build`` when the SBOM names an
    image id other than ``image_id`` (the image was rebuilt after the SBOM was written, so the
    SBOM no longer describes what runs); ``no SBOM`` when there is no file; the reader's
    sentence when the file is not an SBOM that images/build.sh wrote."""
    try:
        info = read_sbom(image, directory)
    except ValueError as err:
        return f"unreadable SBOM: {err}"
    if info is None:
        return NO_SBOM
    summary = f"sha256:{info.sha256[:12]} ({info.components} components"
    described = info.image_id.removeprefix("sha256:")
    if described and image_id and not described.startswith(image_id.removeprefix("sha256:")):
        summary += ", of another build"
    return summary + ")"


def container_rows(containers: Iterable[Mapping[str, Any]]) -> list[ContainerRow]:
    """Rows from Docker's container descriptions (``docker inspect`` dicts)."""
    rows = []
    for attrs in containers:
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        rows.append(
            ContainerRow(
                name=str(attrs.get("Name", "")).lstrip("/"),
                role=labels.get("havre.role", "?"),
                state=(attrs.get("State") or {}).get("Status", "?"),
                image=(attrs.get("Config") or {}).get("Image", ""),
                project=labels.get("havre.project", ""),
                user=labels.get("havre.user", ""),
            )
        )
    order = {role: i for i, role in enumerate(SERVICE_ROLES)}
    return sorted(rows, key=lambda r: (order.get(r.role, len(order)), r.name))


def gather(
    enclave: EnclaveConfig,
    client: Any,
    *,
    tls_cert: Path | None = None,
    now: datetime | None = None,
) -> Status:
    """Read the enclave's state from Docker (``client``: a ``docker.DockerClient``) and files."""
    import docker.errors

    now = now or datetime.now(UTC)
    listed = client.containers.list(all=True, filters={"label": f"havre.enclave={enclave.name}"})
    rows = container_rows(c.attrs for c in listed)
    images: dict[str, str] = {}
    for ref in sorted({r.image for r in rows} | set(enclave.allowed_images)):
        try:
            images[ref] = client.images.get(ref).short_id.removeprefix("sha256:")
        except docker.errors.ImageNotFound:
            images[ref] = "(not on this host)"
    sboms = {ref: sbom_summary(ref, "" if i.startswith("(") else i) for ref, i in images.items()}
    pending, error = _pending(enclave, client)
    cert_path = tls_cert or enclave.state_dir / "hub-tls" / "cert.pem"
    certificates = [certificate_row(cert_path, now)] if cert_path.exists() else []
    expected = tuple(
        r for r in SERVICE_ROLES if r != "idp" or enclave.identity.provider == "embedded"
    )
    return Status(
        enclave=enclave.name,
        containers=rows,
        images=images,
        pending=pending,
        pending_error=error,
        last_verify=read_last_verify(enclave.state_dir / LAST_VERIFY_FILE),
        certificates=certificates,
        sboms=sboms,
        expected_roles=expected,
    )


def _pending(enclave: EnclaveConfig, client: Any) -> tuple[list[dict[str, Any]] | None, str]:
    import docker.errors

    from havre.host.layout import egress_container_name

    try:
        egress = client.containers.get(egress_container_name(enclave))
        if egress.status != "running":
            return None, "its container is not running."
        command = ["havre-egress-admin", "--state", str(enclave.state_dir), "pending", "--json"]
        result = egress.exec_run(command)
    except docker.errors.NotFound:
        return None, "its container does not exist."
    except docker.errors.APIError as err:
        return None, f"Docker refused: {err.explanation or err}"
    text = result.output.decode(errors="replace")
    if result.exit_code != 0:
        return None, text.strip().splitlines()[-1] if text.strip() else f"exit {result.exit_code}"
    return [json.loads(line) for line in text.splitlines() if line.strip()], ""


def render(status: Status) -> str:
    """The text ``havre status`` prints."""
    out = [f"Enclave {status.enclave}", "", "Containers:"]
    for c in status.containers:
        if c.role != "notebook":
            out.append(f"  {c.role:<8} {c.state:<10} {c.name}  ({c.image})")
    out += ["", "Images:"]
    out += [
        f"  {ref:<40} {image_id}  SBOM: {status.sboms.get(ref, NO_SBOM)}"
        for ref, image_id in status.images.items()
    ]
    out += ["", "Notebook servers running:"]
    servers = status.servers
    out += [f"  {p:<20} {len(u)}: {', '.join(u)}" for p, u in servers.items()] or ["  none"]
    out += ["", "Requests waiting for output checkers:"]
    if status.pending is None:
        out.append(f"  unknown: {status.pending_error}")
    else:
        out.append(f"  {len(status.pending)}")
        for r in status.pending[:10]:
            out.append(f"    {r.get('id', '?')}  {r.get('project', '?')}  {r.get('state', '?')}")
    out += ["", "Audit log, last verification:"]
    lv = status.last_verify
    out.append("  never" if lv is None else f"  {'passed' if lv['ok'] else 'FAILED'} at {lv['at']}")
    out += ["", "TLS certificate:"]
    out += [
        f"  {c.path}: valid until {c.not_after} ({c.days_left} days)" for c in status.certificates
    ] or ["  none (plain HTTP, behind the site's own TLS proxy)"]
    problems = status.problems()
    out += ["", "Problems:" if problems else "No problems found."]
    out += [f"  - {p}" for p in problems]
    return "\n".join(out) + "\n"
