from django.contrib.auth.signals import user_logged_in

from accounts.services import visit_record


def _logged_in(sender, request, user, **kwargs):
    visit_record(user=user)


def connect() -> None:
    user_logged_in.connect(_logged_in, dispatch_uid="portmon-dashboard-visit")
