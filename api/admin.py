from django.contrib import admin
from rest_framework.authtoken.models import TokenProxy

# DRF's plaintext tokens: no longer used (migration api 0002 moved them into hashed
# accounts.ApiToken rows). Here, not in accounts: this app comes after DRF's authtoken in
# INSTALLED_APPS, so its admin has registered TokenProxy already.
if admin.site.is_registered(TokenProxy):
    admin.site.unregister(TokenProxy)
