"""The `duet-edge provision …` commands: from the box to trusted uploads in one visit.

Secrets (private keys, signing keys) are written 0600 and never printed or logged: every
message below names files, ids, serials and fingerprints only. Output conventions (stdout
vs stderr, exit codes, no truncation) are those of :mod:`edge.console`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import httpx
import typer
from rich.markup import escape

from edge.console import (
    EXIT_UNREACHABLE,
    LateProgress,
    PlainTyper,
    fail,
    warn,
)
from edge.console import err as err_console
from edge.console import out as console
from provisioning import bundles, doctor, inventory, label, starter
from provisioning.broker import BrokerFiles, render_broker_config
from provisioning.ca import ROLES, CAError, CertificateAuthority
from provisioning.identity import (
    IdentityError,
    IdentityPaths,
    check_gateway_id,
    create_identity,
    give_to,
    key_matches_cert,
    load_certificates,
    load_csr,
    load_private_key,
    new_gateway_id,
    read_cert_expiry,
)
from provisioning.secrets import write_public, write_secret

if TYPE_CHECKING:
    from collections.abc import Iterable

    from edge.config import SourceSettings
    from provisioning.config_edit import Entry
    from provisioning.register import Plan, PlannedEntity

log = logging.getLogger("provisioning")

app = PlainTyper(no_args_is_help=True, help="Provision gateways, nodes and credentials.")
ca_app = PlainTyper(no_args_is_help=True, help="A small certificate authority (labs, cities).")
bundle_app = PlainTyper(no_args_is_help=True, help="Signed config and calibration bundles.")
app.add_typer(ca_app, name="ca")
app.add_typer(bundle_app, name="bundle")
node_app = PlainTyper(no_args_is_help=True, help="Firmware nodes: onboard over serial.")
app.add_typer(node_app, name="node")

DEFAULT_IDENTITY = Path("/etc/duet-edge/identity")
DEFAULT_CONFIG = Path("/etc/duet-edge/gateway.toml")
DEFAULT_DATA = Path("/var/lib/duet-edge")
CaDir = Annotated[Path, typer.Option("--ca-dir", help="The CA directory.")]
PassEnv = Annotated[
    str | None,
    typer.Option("--passphrase-env", help="Environment variable holding the CA key passphrase."),
]


_fail = fail


def _one_line(exc: Exception) -> str:
    """An error as one line: a ConfigError's problems joined, with where to learn more."""
    from edge.config import ConfigError

    if isinstance(exc, ConfigError):
        hint = (f" (`duet-edge config check {exc.source}` explains each)"
                if Path(exc.source).exists() else "")
        return f"{exc.source}: {'; '.join(exc.problems)}{hint}"
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"cannot use {exc.filename}: {exc.strerror}"
    return str(exc)


# --- init ------------------------------------------------------------------------------
@app.command()
def init(
    broker_host: Annotated[str, typer.Option(help="MQTT broker host (as in its certificate).")],
    gateway_id: Annotated[str | None, typer.Option(help="Gateway id; default gw-<random>.")] = None,
    source: Annotated[
        list[str] | None,
        typer.Option(help="A sensor, NAME=TYPE[:PORT], e.g. pm=sds011:/dev/ttyUSB0 (repeatable)."),
    ] = None,
    broker_port: Annotated[int, typer.Option(help="MQTT over TLS port.")] = 8883,
    twin_url: Annotated[str | None, typer.Option(help="SensorThings service root.")] = None,
    name: Annotated[str, typer.Option(help="Human-readable site name.")] = "",
    latitude: Annotated[float | None, typer.Option(help="Site latitude (WGS84).")] = None,
    longitude: Annotated[float | None, typer.Option(help="Site longitude (WGS84).")] = None,
    data_dir: Annotated[Path, typer.Option(help="Outbox and state directory.")] = DEFAULT_DATA,
    identity_dir: Annotated[Path, typer.Option(help="Key, CSR, certs.")] = DEFAULT_IDENTITY,
    config: Annotated[Path, typer.Option(help="Config file to write.")] = DEFAULT_CONFIG,
    inventory_dir: Annotated[Path | None, typer.Option(help="Write a fleet record here.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing identity and config.")] = False,
    owner: Annotated[str | None, typer.Option(help="Service user that will own the key.")] = None,
    contact_name: Annotated[str, typer.Option(help="Whom the host contacts (status page).")] = "",
    contact_email: Annotated[str, typer.Option(help="Their e-mail (status page).")] = "",
    contact_phone: Annotated[str, typer.Option(help="Their phone number (status page).")] = "",
    contact_url: Annotated[str, typer.Option(help="A help page (status page).")] = "",
) -> None:
    """Create this gateway's identity (key 0600 + CSR) and a complete starting config."""
    gid = gateway_id or new_gateway_id()
    # The gateway runs from another working directory: the config holds absolute paths.
    identity_dir, data_dir = identity_dir.absolute(), data_dir.absolute()
    try:
        check_gateway_id(gid)
        sources = tuple(starter.SourceSpec.parse(s) for s in (source or ["pm=sds011:/dev/ttyUSB0"]))
    except (IdentityError, ValueError) as exc:
        raise _fail(_one_line(exc)) from None
    if config.exists() and not force:
        raise _fail(f"{config} exists; use --force to replace it")
    if owner is not None:
        import pwd

        try:
            pwd.getpwnam(owner)
        except KeyError:
            raise _fail(f"no such user {owner!r} (create the service account first)") from None
    paths = IdentityPaths(identity_dir)
    spec = starter.StarterSpec(
        gateway_id=gid, identity=paths, sources=sources, broker_host=broker_host,
        broker_port=broker_port, name=name, data_dir=data_dir, latitude=latitude,
        longitude=longitude, twin_url=twin_url,
        contact={"name": contact_name, "email": contact_email, "phone": contact_phone,
                 "url": contact_url},
    )
    text = starter.render(spec)
    try:
        starter.validate(text, source=str(config))
    except Exception as exc:  # edge.config.ConfigError
        raise _fail(f"the starting config would be invalid: {_one_line(exc)}") from None
    with err_console.status("generating the gateway key (ECDSA P-256)…"):
        try:
            create_identity(identity_dir, gid, overwrite=force)
        except IdentityError as exc:
            raise _fail(_one_line(exc)) from None
    if force and paths.cert.exists():
        paths.cert.unlink()  # issued for the replaced key: revoke it with `provision ca revoke`
        console.print(f"  removed {paths.cert} (it belonged to the old key; revoke it)")
    write_public(config, text.encode())
    if owner is not None:
        try:
            give_to(paths, owner)
        except IdentityError as exc:
            raise _fail(_one_line(exc)) from None
    if inventory_dir is not None:
        inventory.write_record(inventory_dir, gid, name=name or None, latitude=latitude,
                               longitude=longitude, config=str(config))
    log.info("gateway identity created",
             extra={"gateway_id": gid, "identity_dir": str(identity_dir)})
    console.print(f"[green]✓[/green] gateway [bold]{gid}[/bold]")
    console.print(f"  private key  {paths.key}  (0600, stays on this device)")
    console.print(f"  CSR          {paths.csr}  → have it signed: "
                  f"duet-edge provision ca sign {paths.csr} --ca-dir CA_DIR")
    console.print(f"  config       {config}")
    console.print(f"  status page  http://{socket.gethostname()}.local:{spec.web_port}/ "
                  "(home network, read-only)", highlight=False)
    if not source:
        warn("no --source given: the config lists an SDS011 on /dev/ttyUSB0 — edit [[sources]] "
             "to match the site")
    console.print("  next: install the signed certificate with "
                  "`duet-edge provision install-cert GATEWAY.crt --ca CA.crt`, then run "
                  "`duet-edge provision doctor`")


@app.command("install-cert")
def install_cert(
    cert: Annotated[Path, typer.Argument(help="Signed certificate chain (PEM) for this gateway.")],
    ca: Annotated[Path | None, typer.Option(help="CA certificate that signed broker/twin.")] = None,
    identity_dir: Annotated[Path, typer.Option(help="The identity directory.")] = DEFAULT_IDENTITY,
) -> None:
    """Install the signed certificate after checking it belongs to this gateway's key."""
    paths = IdentityPaths(identity_dir)
    try:
        chain = load_certificates(cert)
        key = load_private_key(paths.key)
    except (OSError, IdentityError) as exc:
        raise _fail(_one_line(exc)) from None
    if not key_matches_cert(key, chain[0]):
        raise _fail(f"{cert} was not issued for this gateway's key ({paths.key})")
    write_public(paths.cert, cert.read_bytes())
    if ca is not None:
        write_public(paths.ca, ca.read_bytes())
    key_stat = paths.key.stat()
    for path in (paths.cert, paths.ca):
        if path.exists() and os.geteuid() == 0:  # same owner as the key (the service user)
            os.chown(path, key_stat.st_uid, key_stat.st_gid)
    info = read_cert_expiry(paths.cert)
    console.print(f"[green]✓[/green] installed {paths.cert}: CN={info.subject_cn}, "
                  f"valid until {info.not_after:%Y-%m-%d}")


@app.command()
def expiry(cert: Annotated[Path, typer.Argument(help="A PEM certificate (chain).")]) -> None:
    """Show a certificate's subject, issuer and expiry."""
    try:
        info = read_cert_expiry(cert)
    except (OSError, IdentityError) as exc:
        raise _fail(_one_line(exc)) from None
    days = info.remaining_days()
    colour = "red" if days < 0 else "yellow" if days < 30 else "green"
    console.print(f"CN={info.subject_cn} issuer={info.issuer_cn} serial={info.serial:x}")
    console.print(f"valid {info.not_before:%Y-%m-%d} … {info.not_after:%Y-%m-%d} "
                  f"([{colour}]{days:.0f} days left[/{colour}])")
    console.print(f"SHA-256 {info.fingerprint_sha256}")
    if days < 0:
        raise typer.Exit(1)


# --- CA --------------------------------------------------------------------------------
def _passphrase(env: str | None) -> bytes | None:
    if env is None:
        return None
    value = os.environ.get(env, "")
    if not value:
        raise _fail(f"environment variable {env} is empty or not set")
    return value.encode()


def _open_ca(ca_dir: Path, passphrase_env: str | None = None) -> CertificateAuthority:
    try:
        return CertificateAuthority.open(ca_dir, _passphrase(passphrase_env))
    except CAError as exc:
        raise _fail(_one_line(exc)) from None


@ca_app.command("create")
def ca_create(
    ca_dir: CaDir,
    name: Annotated[str, typer.Option(help="CA common name.")] = "duet-edge lab CA",
    days: Annotated[int, typer.Option(help="CA validity in days.")] = 3650,
    passphrase_env: PassEnv = None,
) -> None:
    """Create a CA (key 0600, encrypted with --passphrase-env; certificate; empty CRL)."""
    try:
        ca = CertificateAuthority.create(ca_dir, name=name, days=days,
                                         passphrase=_passphrase(passphrase_env))
    except CAError as exc:
        raise _fail(_one_line(exc)) from None
    console.print(f"[green]✓[/green] CA {name!r} in {ca_dir}; trust anchor: {ca.cert_path}")


@ca_app.command("sign")
def ca_sign(
    csr: Annotated[Path, typer.Argument(help="The CSR to sign.")],
    ca_dir: CaDir,
    out: Annotated[Path | None, typer.Option(help="Chain file; default <csr>.crt")] = None,
    role: Annotated[str, typer.Option(help=f"One of {', '.join(ROLES)}.")] = "gateway",
    days: Annotated[int, typer.Option(help="Validity in days.")] = 365,
    host: Annotated[list[str] | None, typer.Option(help="Server DNS name / IP.")] = None,
    passphrase_env: PassEnv = None,
) -> None:
    """Sign a CSR; writes the certificate chain (leaf + CA)."""
    ca = _open_ca(ca_dir, passphrase_env)
    try:
        cert = ca.sign_csr(load_csr(csr), role, days, hosts=tuple(host or ()))  # type: ignore[arg-type]
    except (CAError, IdentityError, OSError) as exc:
        raise _fail(_one_line(exc)) from None
    target = out or csr.with_suffix(".crt")
    write_public(target, ca.chain_pem(cert))
    console.print(f"[green]✓[/green] signed serial {cert.serial_number:x} → {target}")


@ca_app.command("issue")
def ca_issue(
    common_name: Annotated[str, typer.Argument(help="CN: receiver-<name> or a server host name.")],
    ca_dir: CaDir,
    out_dir: Annotated[Path, typer.Option(help="Where to write <cn>.key (0600) and <cn>.crt.")],
    role: Annotated[str, typer.Option(help="receiver or server.")] = "receiver",
    days: Annotated[int, typer.Option(help="Validity in days.")] = 365,
    host: Annotated[list[str] | None, typer.Option(help="Server DNS name / IP.")] = None,
    passphrase_env: PassEnv = None,
) -> None:
    """Issue a key and certificate for a broker or receiver (gateways use `init`)."""
    if role == "gateway":
        raise _fail("gateways create their own key: run `provision init` on the gateway")
    ca = _open_ca(ca_dir, passphrase_env)
    try:
        key_pem, cert = ca.issue_key_and_cert(common_name, role, days,  # type: ignore[arg-type]
                                              hosts=tuple(host or ()))
        write_secret(out_dir / f"{common_name}.key", key_pem)
    except (CAError, FileExistsError) as exc:
        raise _fail(_one_line(exc)) from None
    write_public(out_dir / f"{common_name}.crt", ca.chain_pem(cert))
    console.print(f"[green]✓[/green] {role} {common_name}: {out_dir}/{common_name}.crt "
                  f"(key 0600 beside it), serial {cert.serial_number:x}")


@ca_app.command("revoke")
def ca_revoke(
    selector: Annotated[str, typer.Argument(help="Hex serial, or a CN (revokes all its certs).")],
    ca_dir: CaDir,
    reason: Annotated[str, typer.Option(help="Why, for the records.")] = "unspecified",
    passphrase_env: PassEnv = None,
) -> None:
    """Revoke and rewrite the CRL; then reload the broker (SIGHUP) so it uses the new CRL."""
    ca = _open_ca(ca_dir, passphrase_env)
    try:
        rows = ca.revoke(selector, reason)
    except CAError as exc:
        raise _fail(_one_line(exc)) from None
    for row in rows:
        console.print(f"[green]✓[/green] revoked {row.common_name} serial {row.serial}")
    console.print(f"  CRL: {ca.crl_path} — copy it to the broker, then "
                  "`systemctl reload mosquitto` (SIGHUP)")


@ca_app.command("crl")
def ca_crl(
    ca_dir: CaDir,
    days: Annotated[int, typer.Option(help="CRL validity.")] = 30,
    passphrase_env: PassEnv = None,
) -> None:
    """Re-issue the CRL (do this before its next-update date, e.g. from cron)."""
    path = _open_ca(ca_dir, passphrase_env).write_crl(days)
    console.print(f"[green]✓[/green] {path} valid for {days} days")


@ca_app.command("list")
def ca_list(
    ca_dir: CaDir,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of lines.")] = False,
) -> None:
    """Every certificate issued: state, role, CN, expiry and the full serial `ca revoke` takes."""
    try:
        rows = CertificateAuthority.read_issued(ca_dir)
    except CAError as exc:
        raise _fail(_one_line(exc)) from None
    if as_json:
        typer.echo(json.dumps([{**dataclasses.asdict(r), "state": r.state()} for r in rows],
                              indent=2))
        return
    colour = {"valid": "green", "expired": "yellow", "revoked": "red"}
    for row in rows:
        state = row.state()
        console.print(f"[{colour[state]}]{state:<8}[/{colour[state]}] {row.role:<9} "
                      f"{escape(row.common_name)}  until {row.not_after[:10]}  serial {row.serial}")
    if not rows:
        console.print(f"no certificates issued by {ca_dir} yet")


# --- broker ----------------------------------------------------------------------------
@app.command("broker-config")
def broker_config(
    ca_dir: CaDir,
    out_dir: Annotated[Path, typer.Option(help="Where to write mosquitto.conf, acl.conf, certs.")],
    host: Annotated[list[str], typer.Option(help="Broker DNS name(s)/IP(s) gateways connect to.")],
    port: Annotated[int, typer.Option(help="TLS listener port.")] = 8883,
    receiver: Annotated[list[str] | None, typer.Option(help="Receiver CNs (receiver-…).")] = None,
    run_as: Annotated[str, typer.Option(help="User Mosquitto drops to.")] = "mosquitto",
    persistence_dir: Annotated[Path, typer.Option(help="Broker state on disk.")] = Path(
        "/var/lib/mosquitto"),
    passphrase_env: PassEnv = None,
) -> None:
    """Render the shipped Mosquitto config (TLS, client certs, ACL) with a server cert."""
    ca = _open_ca(ca_dir, passphrase_env)
    server_key = out_dir / "server.key"
    if not server_key.exists():
        key_pem, cert = ca.issue_key_and_cert(host[0], "server", hosts=tuple(host))
        write_secret(server_key, key_pem)
        write_public(out_dir / "server.crt", ca.chain_pem(cert))
    write_public(out_dir / "ca.crt", ca.cert_path.read_bytes())
    write_public(out_dir / "crl.pem", ca.crl_path.read_bytes())
    files = BrokerFiles(out_dir / "ca.crt", out_dir / "server.crt", server_key, out_dir / "crl.pem")
    try:
        conf = render_broker_config(out_dir, files, port=port,
                                    receivers=tuple(receiver or ("receiver-twin",)),
                                    run_as_user=run_as, persistence_dir=persistence_dir)
    except ValueError as exc:
        raise _fail(_one_line(exc)) from None
    persistence_dir.mkdir(parents=True, exist_ok=True)
    _give_broker_files(run_as, [server_key, out_dir / "crl.pem", persistence_dir])
    console.print(f"[green]✓[/green] {conf}; start with: mosquitto -c {conf}")


def _give_broker_files(user: str, paths: list[Path]) -> None:
    """Mosquitto re-reads its key and CRL as ``user`` on reload: let that user own them."""
    import pwd

    if os.geteuid() != 0:
        return
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        warn(f"user {user!r} does not exist here; make {', '.join(map(str, paths))} readable "
             "by the broker's user")
        return
    for path in paths:
        os.chown(path, entry.pw_uid, entry.pw_gid)


# --- bundles ---------------------------------------------------------------------------
@bundle_app.command("keygen")
def bundle_keygen(
    out_dir: Annotated[Path, typer.Option(help="Writes bundle-signing.key (0600) + trust.pem.")],
) -> None:
    """Create an Ed25519 signing key; trust.pem is the gateway's trust anchor."""
    try:
        kid = bundles.generate_signing_key(out_dir / "bundle-signing.key", out_dir / "trust.pem")
    except FileExistsError as exc:
        raise _fail(_one_line(exc)) from None
    console.print(f"[green]✓[/green] key id {kid}; trust anchor {out_dir / 'trust.pem'}")


@bundle_app.command("sign")
def bundle_sign(
    files: Annotated[list[Path], typer.Argument(help="Files to put in the bundle.")],
    key: Annotated[Path, typer.Option(help="Ed25519 signing key (PEM).")],
    kind: Annotated[str, typer.Option(help="config or calibration.")],
    version: Annotated[int, typer.Option(help="Version; must grow with every bundle.")],
    out: Annotated[Path, typer.Option(help="Bundle file to write.")],
    gateway_id: Annotated[str, typer.Option(help="Addressed gateway, or * for any.")] = "*",
) -> None:
    """Sign files into a bundle (a config bundle's TOML file is stored as gateway.toml)."""
    names = {f.name: f for f in files}
    tomls = [n for n in names if n.endswith(".toml")]
    if kind == "config" and bundles.CONFIG_FILE not in names:
        if len(tomls) != 1:
            raise _fail("a config bundle needs exactly one .toml file (the gateway config)")
        names[bundles.CONFIG_FILE] = names.pop(tomls[0])
    try:
        data = bundles.sign_bundle(
            kind, version, {n: f.read_bytes() for n, f in names.items()},  # type: ignore[arg-type]
            bundles.load_signing_key(key), gateway_id=gateway_id)
    except (bundles.BundleError, OSError) as exc:
        raise _fail(_one_line(exc)) from None
    write_public(out, data)
    console.print(f"[green]✓[/green] {kind} bundle v{version} → {out}")


@bundle_app.command("verify")
def bundle_verify(
    bundle: Annotated[Path, typer.Argument(help="Bundle file.")],
    trust: Annotated[Path, typer.Option(help="Trust anchor (Ed25519 public keys, PEM).")],
) -> None:
    """Verify a bundle's signature and file hashes."""
    try:
        verified = bundles.verify_bundle(bundle.read_bytes(), bundles.load_trust_anchors(trust))
    except (bundles.BundleError, OSError) as exc:
        raise _fail(_one_line(exc)) from None
    console.print(f"[green]✓[/green] {verified.kind} v{verified.version} for "
                  f"{verified.gateway_id}, signed by {verified.key_id}: "
                  f"{', '.join(verified.files)}")


@bundle_app.command("apply")
def bundle_apply(
    bundle: Annotated[Path, typer.Argument(help="Bundle file.")],
    trust: Annotated[Path, typer.Option(help="Trust anchor (Ed25519 public keys, PEM).")],
    store: Annotated[Path, typer.Option(help="Bundle store directory on the gateway.")],
    gateway_id: Annotated[str, typer.Option(help="This gateway's id.")],
    kind: Annotated[str, typer.Option(help="config or calibration.")] = "config",
) -> None:
    """Verify and activate a bundle; on failure the previous version stays active."""
    try:
        bstore = bundles.BundleStore(store, gateway_id, bundles.load_trust_anchors(trust))
        validator = bundles.config_validator() if kind == "config" else None
        applied = bstore.apply(bundle.read_bytes(), kind, validator)  # type: ignore[arg-type]
    except (bundles.BundleError, OSError) as exc:
        raise _fail(f"not applied, previous version kept: {exc}") from None
    console.print(f"[green]✓[/green] {kind} v{applied.version} active ({applied.path}); "
                  f"previous: {applied.previous}")


@bundle_app.command("rollback")
def bundle_rollback(
    store: Annotated[Path, typer.Option(help="Bundle store directory on the gateway.")],
    kind: Annotated[str, typer.Option(help="config or calibration.")] = "config",
) -> None:
    """Re-activate the previous kept version."""
    try:
        version = bundles.BundleStore(store, "", {}).rollback(kind)
    except bundles.BundleError as exc:
        raise _fail(_one_line(exc)) from None
    console.print(f"[green]✓[/green] {kind} v{version} active again")


# --- doctor ----------------------------------------------------------------------------
STATUS_STYLE = {"pass": "[green]PASS[/green]", "warn": "[yellow]WARN[/yellow]",
                "fail": "[red]FAIL[/red]", "skip": "[dim]SKIP[/dim]"}


def print_results(results: list[doctor.CheckResult]) -> None:
    """One block per check: status and name, then the detail and the fix, each on its own
    line and never cut (ports, paths and commands stay copyable at any width)."""
    for r in results:
        console.print(f"{STATUS_STYLE[r.status]}  {escape(r.name)}")
        if r.detail:
            console.print(f"      {escape(r.detail)}")
        if r.fix:
            console.print(f"      fix: {escape(r.fix)}")


@app.command("doctor")
def doctor_cmd(
    config: Annotated[Path, typer.Option(help="The gateway config.")] = DEFAULT_CONFIG,
    time_url: Annotated[str | None, typer.Option(help="HTTP(S) URL whose Date to compare.")] = None,
    timeout: Annotated[float, typer.Option(help="Network timeout per check, seconds.")] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    as_user: Annotated[
        str | None, typer.Option(help="Check device permissions for this user (the service's).")
    ] = None,
) -> None:
    """Check everything a technician would otherwise debug by hand; exit 1 on any failure."""
    options = doctor.DoctorOptions(time_url=time_url, timeout_s=timeout)
    if as_user is not None:
        import pwd

        try:
            entry = pwd.getpwnam(as_user)
        except KeyError:
            raise _fail(f"no such user {as_user!r}") from None
        options.uid = entry.pw_uid
        options.gids = set(os.getgrouplist(as_user, entry.pw_gid))
    with err_console.status("checking ports, radio, clock, disk, broker, twin, certificate…"):
        results = doctor.run_doctor(config, options)
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
    else:
        print_results(results)
    failed = [r for r in results if r.failed]
    if not as_json:
        console.print(f"{len(results) - len(failed)} passed or warned, {len(failed)} failed")
    if failed:
        raise typer.Exit(1)


# --- register --------------------------------------------------------------------------
@app.command("register")
def register_cmd(
    config: Annotated[Path, typer.Option(help="The gateway config.")] = DEFAULT_CONFIG,
    latitude: Annotated[float | None, typer.Option(help="Site latitude (WGS84).")] = None,
    longitude: Annotated[float | None, typer.Option(help="Site longitude (WGS84).")] = None,
    site: Annotated[Path | None, typer.Option(help="Site file (TOML/JSON) with coordinates.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Only show what would be created.")] = False,
    inventory_dir: Annotated[Path | None, typer.Option(help="Update the fleet record.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of lines.")] = False,
) -> None:
    """Create Thing, Location, Sensors, ObservedProperties, Datastreams at the twin."""
    import asyncio

    from edge.config import ConfigError, load_config
    from edge.sensorthings import GeoPoint
    from edge.sensorthings.client import SensorThingsUnavailable
    from provisioning import node_records, register
    from provisioning.config_edit import ConfigEditError

    try:
        cfg = load_config(config)
        location = register.read_site(site) if site else None
        if latitude is not None and longitude is not None:
            location = GeoPoint(lon=longitude, lat=latitude)
        plan = register.make_plan(cfg, location, node_records.load(config))
    except (ConfigError, register.RegisterError, node_records.NodeRecordError, OSError) as exc:
        raise _fail(_one_line(exc)) from None
    for note in plan.notes:
        warn(note)
    try:
        if dry_run:
            with LateProgress("looking up entities", 1 + 3 * len(plan.pairs)) as shown:
                entities = asyncio.run(register.dry_run(plan, progress=shown.advance))
            _print_dry_run(plan, entities, as_json)
            return
        with LateProgress("registering datastreams", len(plan.pairs)) as shown:
            ids = asyncio.run(register.register(plan, progress=shown.advance))
        register.give_to_data_dir_owner(plan)
    except (SensorThingsUnavailable, httpx.HTTPError) as exc:
        raise _fail(f"the twin at {plan.settings.base_url} did not answer or refused: {exc}; "
                    "run register again when it is reachable", EXIT_UNREACHABLE) from None
    except register.RegisterError as exc:
        raise _fail(_one_line(exc)) from None
    except Exception as exc:  # the uplink's _Rejected: the server refused an entity
        raise _fail(f"the twin refused registration: {exc}") from None
    try:
        stored = register.write_mqtt_datastream_ids(config, ids)
    except (ConfigEditError, ConfigError) as exc:
        raise _fail(_one_line(exc)) from None
    if as_json:
        typer.echo(json.dumps({"datastreams": ids, "mqtt_ids_stored": stored}, indent=2,
                              sort_keys=True))
    else:
        for key, ds_id in sorted(ids.items()):
            console.print(f"[green]✓[/green] {escape(key)} → Datastream {ds_id}")
        if stored:
            console.print(f"  ids stored in {config} [uplinks.mqtt.datastream_ids] "
                          "for the MQTT SensorThings mode", markup=False)
    if inventory_dir is not None:
        where = plan.location
        inventory.write_record(inventory_dir, plan.gateway_id, twin=plan.settings.base_url,
                               latitude=where.lat if where else None,
                               longitude=where.lon if where else None)


def _print_dry_run(plan: Plan, entities: list[PlannedEntity], as_json: bool) -> None:
    changed = [{"source": name, "before": old.describe(), "now": new.describe()}
               for name, (old, new) in plan.changed.items()]
    if as_json:
        typer.echo(json.dumps({
            "entities": [{"kind": e.kind, "name": e.name, "action": e.action,
                          "id": e.existing_id} for e in entities],
            "changed_sources": changed,
        }, indent=2))
        return
    for e in entities:
        action = (f"exists (id {e.existing_id})" if e.existing_id is not None
                  else "[yellow]would create[/yellow]")
        console.print(f"{e.kind:<16} {escape(e.name)}  {action}")
    for c in changed:
        warn(f"source {c['source']!r} changed sensor: {c['before']} → {c['now']}; register "
             "retires the old Sensor and Datastreams (their history stays) and creates new ones")


# --- nodes -----------------------------------------------------------------------------
@node_app.command("add")
def node_add(
    port: Annotated[str, typer.Argument(help="Serial port of the node, e.g. /dev/ttyUSB1.")],
    config: Annotated[Path, typer.Option(help="The gateway config.")] = DEFAULT_CONFIG,
    name: Annotated[str | None, typer.Option(help="Source name; default node-<node id>.")] = None,
    calibration_id: Annotated[str | None, typer.Option(help="Calibration artefact id.")] = None,
    interval_s: Annotated[int | None, typer.Option(help="Measurement interval (s).")] = None,
    ble_source: Annotated[str | None, typer.Option(
        help="Onboard a broadcast-only node: switch its BLE adverts on and assign it to this "
             "node_ble source (added if missing) instead of a node_serial source on PORT.")
    ] = None,
    baudrate: Annotated[int, typer.Option(help="Link speed.")] = 115200,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each answer.")] = 10.0,
) -> None:
    """Read the node's hello, push its config and calibration id, confirm, assign it."""
    from edge.config import ConfigError, load_config
    from provisioning import node_add as na
    from provisioning import node_records

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        raise _fail(_one_line(exc)) from None
    push: dict[str, object] = {}
    if calibration_id is not None:
        push["calibration_id"] = calibration_id
    if interval_s is not None:
        push["interval_s"] = interval_s
    if ble_source is not None:
        push["ble_advertise"] = True
    with err_console.status(f"talking to the node on {port}…"):
        try:
            added = na.onboard(port, cfg.gateway.id, push, baudrate=baudrate, timeout_s=timeout)
        except na.NodeAddError as exc:
            raise _fail(_one_line(exc)) from None
    info = added.info
    sensors = ", ".join(f"{s[0]} ({s[1]})" for s in info.sensors)
    console.print(f"[green]✓[/green] node {info.node_id} firmware {escape(info.firmware)} "
                  f"kind {escape(info.kind or '?')}: {escape(sensors)}")
    for key, value in push.items():
        console.print(f"  {key} = {escape(repr(value))} confirmed by the node")
    source = ble_source or _serial_source_for(cfg.sources, port) or name or f"node-{info.node_id}"
    record = node_records.NodeRecord(
        source=source, node_id=info.node_id, firmware=info.firmware, kind=info.kind,
        sensors=info.sensors, transport="ble" if ble_source else "serial",
        port="" if ble_source else port)
    try:
        records_file = node_records.save(config, record)
    except (OSError, node_records.NodeRecordError) as exc:
        raise _fail(f"cannot record the node: {exc}") from None
    console.print(f"  sensors recorded in {records_file} (read by `provision register`)")
    if ble_source is not None:
        entry: Entry = {"name": ble_source, "type": "node_ble"}
        if any(s.name == ble_source for s in cfg.sources):
            console.print(f"  assigned to the node_ble source {ble_source!r} of {config}")
            return
    else:
        if _serial_source_for(cfg.sources, port) is not None:
            console.print(f"  {config} already has a source on {port}")
            return
        entry = na.source_entry(source, port, baudrate, str(cfg.gateway.data_dir / "nodes.db"))
    _add_source(config, entry)


def _serial_source_for(sources: Iterable[SourceSettings], port: str) -> str | None:
    return next((s.name for s in sources if s.port == port), None)


def _add_source(config: Path, entry: Entry) -> None:
    """Append ``entry`` as a [[sources]] table, keeping the file's comments and layout."""
    from edge.config import ConfigError, parse_config
    from provisioning.config_edit import ConfigEdit, ConfigEditError, source_text

    try:
        edit = ConfigEdit(config)
        edit.add_source(entry)
        edit.save(lambda text: parse_config(text, source=str(config)))
    except ConfigError as exc:
        warn(f"not added to {config} ({'; '.join(exc.problems)}); add this by hand:")
        err_console.print(source_text(entry), markup=False)
        return
    except (ConfigEditError, OSError) as exc:
        raise _fail(_one_line(exc)) from None
    console.print(f"  assigned: source {entry['name']!r} added to {config}")


# --- label and inventory -----------------------------------------------------------------
@app.command("label")
def label_cmd(
    out: Annotated[Path, typer.Option(help="label.png or label.pdf")],
    gateway_id: Annotated[str, typer.Option(help="Gateway id.")],
    claim_base: Annotated[str, typer.Option(help="Claim URL base; the id is appended.")] = (
        "https://twin.example/claim"
    ),
    support: Annotated[str, typer.Option(help="Support contact printed on the label.")] = "",
) -> None:
    """A printable PNG/PDF enclosure label with a QR code (claim URL, no secret)."""
    try:
        spec = label.LabelSpec(gateway_id, label.claim_url(claim_base, gateway_id), support)
        path = label.write_label(spec, out)
    except ValueError as exc:
        raise _fail(_one_line(exc)) from None
    console.print(f"[green]✓[/green] label {path}")


@app.command("inventory")
def inventory_cmd(
    ca_dir: Annotated[Path | None, typer.Option(help="CA directory (issued certificates).")] = None,
    records: Annotated[Path | None, typer.Option(help="Directory of gateway records.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    out: Annotated[Path | None, typer.Option(help="File to write; default stdout.")] = None,
) -> None:
    """Export what was provisioned (CSV/JSON) for the city's records."""
    if fmt not in ("csv", "json"):
        raise _fail(f"--format must be csv or json, got {fmt!r}")
    try:
        rows = inventory.collect(ca_dir, records)
    except CAError as exc:
        raise _fail(_one_line(exc)) from None
    text = inventory.to_csv(rows) if fmt == "csv" else inventory.to_json(rows)
    if out is None:
        typer.echo(text, nl=False)
    else:
        write_public(out, text.encode())
        console.print(f"[green]✓[/green] {len(rows)} row(s) → {out}")
