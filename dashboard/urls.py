from django.urls import path

from dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.home, name="home"),
    path("since/", views.since, name="since"),
    path("events/", views.events_list, name="events"),
    path("events/export.csv", views.events_csv, name="events_csv"),
    path("events/bulk/", views.events_bulk, name="events_bulk"),
    path("events/<int:event_id>/", views.event_detail, name="event"),
    path("events/<int:event_id>/transition/", views.event_transition, name="event_transition"),
    path("events/<int:event_id>/note/", views.event_note_view, name="event_note"),
    path("events/<int:event_id>/recheck/", views.event_recheck, name="event_recheck"),
    path("hosts/", views.hosts_list, name="hosts"),
    path("hosts/<str:ip>/", views.host_detail, name="host"),
    path("ports/export.csv", views.ports_csv, name="ports_csv"),
    path("runs/", views.runs_list, name="runs"),
    path("runs/<int:run_id>/", views.run_detail, name="run"),
    path("rules/", views.rules_list, name="rules"),
    path("rules/new/", views.rule_new, name="rule_new"),
    path("rules/export.json", views.rules_export_view, name="rules_export"),
    path("rules/import/", views.rules_import_view, name="rules_import"),
    path("rules/<int:rule_id>/", views.rule_edit, name="rule_edit"),
    path("rules/<int:rule_id>/expire/", views.rule_expire_view, name="rule_expire"),
    path("networks/", views.networks_list, name="networks"),
    path("agents/", views.agents_page, name="agents"),
    path("policies/", views.policies_list, name="policies"),
    path("policies/<int:policy_id>/run/", views.policy_run, name="policy_run"),
    path("audit/", views.audit_log, name="audit"),
]
