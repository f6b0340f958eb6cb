from django.apps import AppConfig


class NotifyConfig(AppConfig):
    name = "alerts.notify"
    label = "notify"
    verbose_name = "Notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from alerts.notify.receivers import on_events_raised
        from alerts.signals import events_raised

        events_raised.connect(on_events_raised, dispatch_uid="notify.immediate_on_events_raised")
