from django.apps import AppConfig


class PocConfig(AppConfig):
    name = "poc"
    verbose_name = "PoC checks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from alerts.signals import events_raised, run_diffed
        from poc.receivers import on_events_raised, on_run_diffed

        events_raised.connect(on_events_raised, dispatch_uid="poc.chain_on_events_raised")
        run_diffed.connect(on_run_diffed, dispatch_uid="poc.cover_on_run_diffed")
