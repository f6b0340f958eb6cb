"""Audit rows for changes made anywhere (dashboard, API, admin, command line): the model
signals of the audited models, so no write path can forget them."""

from django.apps import apps
from django.db.models.signals import post_delete, post_save, pre_save

from audit.services import audit_record, snapshot

# Configuration people change; the before image is read in pre_save.
AUDITED = (
    "alerts.Rule",
    "alerts.HighRiskPort",
    "scanner.Network",
    "scanner.Exclusion",
    "scanner.ScanPolicy",
)
UID = "portmon-audit"


def _before(sender, instance, raw=False, **kwargs):
    if raw or instance.pk is None:
        instance._audit_before = None
        return
    old = sender._default_manager.filter(pk=instance.pk).first()
    instance._audit_before = snapshot(old) if old is not None else None


def _saved(sender, instance, created, raw=False, **kwargs):
    if raw:
        return
    verb = "create" if created else "update"
    before = None if created else getattr(instance, "_audit_before", None)
    after = snapshot(instance)
    if before == after:
        return  # a save that changed nothing
    audit_record(
        action=f"{sender._meta.model_name}.{verb}", target=instance, before=before, after=after
    )


def _deleted(sender, instance, **kwargs):
    audit_record(
        action=f"{sender._meta.model_name}.delete", target=instance, before=snapshot(instance)
    )


def _transition(sender, instance, created, raw=False, **kwargs):
    # event_transition writes one EventAudit per person's state change; the events the
    # diff raises are bulk-created (no signal) and belong to no one.
    if raw or not created or instance.actor_id is None:
        return
    audit_record(
        action=f"event.{instance.action}",
        target=instance.event,
        before={"state": instance.from_state},
        after={"state": instance.to_state},
        actor=instance.actor,
    )


def _run_started(sender, instance, created, raw=False, **kwargs):
    if raw or not created or instance.source != "scan":
        return
    audit_record(
        action="scanrun.start",
        target=instance,
        after={
            "policy_id": instance.policy_id,
            "targets": instance.targets,
            "ports": instance.ports,
        },
    )


def connect() -> None:
    for label in AUDITED:
        model = apps.get_model(label)
        pre_save.connect(_before, sender=model, dispatch_uid=f"{UID}-pre-{label}")
        post_save.connect(_saved, sender=model, dispatch_uid=f"{UID}-post-{label}")
        post_delete.connect(_deleted, sender=model, dispatch_uid=f"{UID}-del-{label}")
    post_save.connect(
        _transition, sender=apps.get_model("alerts.EventAudit"), dispatch_uid=f"{UID}-event"
    )
    post_save.connect(
        _run_started, sender=apps.get_model("scanner.ScanRun"), dispatch_uid=f"{UID}-run"
    )
