from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Host agents"

    def ready(self) -> None:
        from agents.selectors import cross_check
        from alerts.notify.sections import section_register

        # The digest shows the cross-check; alerts does not import agents (one direction).
        section_register("agent_checks", cross_check)
