from django.apps import AppConfig


class NotifyConfig(AppConfig):
    name = "alerts.notify"
    label = "notify"
    verbose_name = "Notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from alerts.notify.receivers import on_diff_finished
        from alerts.services.diff import diff_finished

        diff_finished.connect(on_diff_finished, dispatch_uid="notify.immediate_on_diff")
