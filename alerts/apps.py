from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "alerts"
    verbose_name = "Alerts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from alerts.receivers import on_run_finished
        from scanner.signals import run_finished

        run_finished.connect(on_run_finished, dispatch_uid="alerts.diff_on_run_finished")
