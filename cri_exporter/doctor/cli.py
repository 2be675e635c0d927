"""The `doctor` click command; it only wires options to the runner.

Exit status (the contract scripts rely on): 0 nothing failed, 1 a check
failed (or warned, with --strict), 2 a usage error (click's own code).
"""
from __future__ import annotations

import sys

import click

from cri_exporter.hostfs import HostFS

# The checks and what they use are imported when the command runs, not when
# the CLI is built: `serve` shares this CLI and never loads them.


def _list_checks(ctx: click.Context, _param, value) -> None:
    if not value or ctx.resilient_parsing:
        return
    from cri_exporter.doctor.registry import all_checks

    for c in all_checks().values():
        text = " ".join(c.doc.split())
        first = text.split(". ")[0].rstrip(".") if text else ""
        click.echo(f"{c.id:<40} {c.severity.value:<8} {first}")
    ctx.exit(0)


@click.command("doctor")
@click.option("--host-root", default="/", show_default=True, envvar="CRI_EXPORTER_HOST_ROOT",
              type=click.Path(file_okay=False), help="Where the node's filesystem is mounted (/host in a DaemonSet).")
@click.option("--runtime-endpoint", default=None, envvar=["CRI_EXPORTER_RUNTIME_ENDPOINT", "CONTAINER_RUNTIME_ENDPOINT"],
              help="CRI endpoint (unix:///run/containerd/containerd.sock); probed like crictl when unset.")
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--check", "checks", multiple=True, metavar="ID", help="Run only this check id or area (repeatable).")
@click.option("--skip", "skips", multiple=True, metavar="ID", help="Do not run this check id or area (repeatable).")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
@click.option("--bundle", type=click.Path(dir_okay=False, writable=True), default=None, metavar="FILE.tar.gz",
              help="Also write a support bundle (findings, runtime facts, redacted configs). The file is opened "
                   "before the doctor confines itself: it is the only file the doctor writes.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=3.0, show_default=True,
              help="Deadline of each CRI call, in seconds.")
@click.option("--confine/--no-confine", default=True, show_default=True, envvar="CRI_EXPORTER_CONFINE", show_envvar=True,
              help="Restrict the doctor with Landlock before any check runs (kernel 5.13+), as serve is: nothing "
                   "written but the --bundle file, nothing read outside the host root but its own files, and of the "
                   "host's secrets only the kubelet's certificate and kubeconfig files the certs check needs. Where "
                   "the kernel cannot, it runs unconfined and says so: the report's second line (JSON: confinement) "
                   "says which.")
@click.option("--list", "list_checks", is_flag=True, expose_value=False, is_eager=True, callback=_list_checks,
              help="List the check ids and exit.")
def doctor(host_root, runtime_endpoint, output, checks, skips, strict, bundle, timeout, confine):
    """Diagnose this node's container runtime, kubelet, kernel and CNI setup.

    Read-only: it never changes the node, and confines itself in the kernel
    (Landlock) to hold it to that. Every warning and failure says what was
    seen, why it matters, the fix and a reference.
    """
    from cri_exporter import confine_doctor
    from cri_exporter.doctor import report as render
    from cri_exporter.doctor.context import Context
    from cri_exporter.doctor.registry import all_checks
    from cri_exporter.doctor.runner import UnknownCheck, run, select

    try:
        select(all_checks(), checks, skips)  # a usage error before anything is opened
    except UnknownCheck as e:
        raise click.UsageError(str(e)) from None
    out = None
    if bundle:
        from cri_exporter.doctor.bundle import BundleOutput

        try:
            out = BundleOutput(bundle)
        except OSError as e:
            click.echo(f"could not write the support bundle {bundle}: {e.strerror or e}", err=True)
            sys.exit(1)
    ctx = Context(HostFS(host_root), runtime_endpoint, cri_timeout=timeout)
    if confine:
        ctx.read_before_confinement()  # the process facts no confined process may read (context.py)
    # Before any thread (grpc's come with the first CRI call) and any other read of the node.
    confinement = confine_doctor.apply(host_root, confine)
    written = False
    try:
        report = run(ctx, checks, skips)
        report.confinement = _said(confinement)
        if output == "json":
            click.echo(render.render_json(report), nl=False)
        else:
            colour = sys.stdout.isatty() and "NO_COLOR" not in __import__("os").environ
            click.echo(render.render_text(report, colour=colour), nl=False)
        if out is not None:
            from cri_exporter.doctor.bundle import build

            try:
                out.write(build(report, ctx))
                written = True
                click.echo(f"support bundle written to {bundle}", err=True)
            except OSError as e:
                click.echo(f"could not write the support bundle {bundle}: {e}", err=True)
                sys.exit(1)
    finally:
        if out is not None:
            if not written:
                out.discard()
            out.close()
        ctx.close()
    sys.exit(1 if report.failed or (strict and report.warned) else 0)


def _said(c) -> dict:
    """The confinement as the report carries it."""
    d: dict = {"state": c.state, "abi": c.abi}
    if c.reason:
        d["reason"] = c.reason
    if c.limits:
        d["limits"] = list(c.limits)
    return d
