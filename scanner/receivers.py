"""Keep derived state in sync when scan policies change (admin, shell or API alike)."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from scanner.models import ScanPolicy
from scanner.services.schedules import (
    fixed_schedules_install,
    policy_schedule_remove,
    policy_schedule_sync,
)


@receiver(post_save, sender=ScanPolicy, dispatch_uid="scanner.policy_saved")
def policy_saved(sender, instance: ScanPolicy, **kwargs) -> None:
    policy_schedule_sync(policy=instance)


@receiver(post_delete, sender=ScanPolicy, dispatch_uid="scanner.policy_deleted")
def policy_deleted(sender, instance: ScanPolicy, **kwargs) -> None:
    policy_schedule_remove(policy_id=instance.pk)


def fixed_schedules_on_migrate(sender, **kwargs) -> None:
    """`manage.py migrate` (bin/run's set-up step) installs the fixed periodic jobs."""
    fixed_schedules_install()
