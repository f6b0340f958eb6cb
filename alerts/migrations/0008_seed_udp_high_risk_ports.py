from django.db import migrations

# UDP services that should never be exposed by accident: amplifiers (memcached, NTP,
# SSDP, DNS, CLDAP), unauthenticated management planes (SNMP, IPMI), file reads (TFTP).
DEFAULTS = [
    (53, "DNS (open resolver: amplifier)"),
    (69, "TFTP"),
    (111, "portmapper"),
    (123, "NTP (mode 6/7: amplifier, information leak)"),
    (161, "SNMP"),
    (389, "CLDAP (amplifier)"),
    (623, "IPMI / RMCP"),
    (1900, "SSDP (amplifier)"),
    (5353, "mDNS"),
    (11211, "memcached over UDP (amplifier)"),
]


def seed(apps, schema_editor):
    HighRiskPort = apps.get_model("alerts", "HighRiskPort")
    for port, reason in DEFAULTS:
        HighRiskPort.objects.get_or_create(port=port, proto="udp", defaults={"reason": reason})


def unseed(apps, schema_editor):
    HighRiskPort = apps.get_model("alerts", "HighRiskPort")
    HighRiskPort.objects.filter(proto="udp", port__in=[p for p, _ in DEFAULTS]).delete()


class Migration(migrations.Migration):
    dependencies = [("alerts", "0007_event_accepted_until")]

    operations = [migrations.RunPython(seed, unseed)]
