from django.apps import AppConfig


class ScannerConfig(AppConfig):
    name = "scanner"
    verbose_name = "Scanning"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from scanner import receivers  # noqa: F401  (connects the signal receivers)

        post_migrate.connect(
            receivers.fixed_schedules_on_migrate, sender=self, dispatch_uid="scanner.schedules"
        )
