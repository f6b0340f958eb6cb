from django.apps import AppConfig


class ScannerConfig(AppConfig):
    name = "scanner"
    verbose_name = "Scanning"

    def ready(self) -> None:
        from scanner import receivers  # noqa: F401  (connects the signal receivers)
