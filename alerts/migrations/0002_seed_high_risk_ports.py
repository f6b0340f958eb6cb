from django.db import migrations

# Services that should never be exposed by accident: remote shells, file sharing,
# databases, caches, container and search APIs.
DEFAULTS = [
    (21, "FTP"),
    (23, "Telnet"),
    (445, "SMB"),
    (1433, "Microsoft SQL Server"),
    (1521, "Oracle database"),
    (2375, "Docker API without TLS"),
    (3306, "MySQL/MariaDB"),
    (3389, "RDP"),
    (5432, "PostgreSQL"),
    (5900, "VNC"),
    (6379, "Redis"),
    (9200, "Elasticsearch"),
    (11211, "memcached"),
    (27017, "MongoDB"),
]


def seed(apps, schema_editor):
    HighRiskPort = apps.get_model("alerts", "HighRiskPort")
    for port, reason in DEFAULTS:
        HighRiskPort.objects.get_or_create(port=port, proto="tcp", defaults={"reason": reason})


def unseed(apps, schema_editor):
    HighRiskPort = apps.get_model("alerts", "HighRiskPort")
    HighRiskPort.objects.filter(proto="tcp", port__in=[p for p, _ in DEFAULTS]).delete()


class Migration(migrations.Migration):
    dependencies = [("alerts", "0001_initial")]

    operations = [migrations.RunPython(seed, unseed)]
