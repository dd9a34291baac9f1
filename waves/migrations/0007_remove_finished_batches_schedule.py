from django.db import migrations

SCHEDULE_NAME = "Remove finished migration batches"


def add_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": "waves.tasks.remove_finished_batches",
            "schedule_type": "I",
            "minutes": 15,
            "repeats": -1,
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=SCHEDULE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("waves", "0006_migration_batch_events")]
    operations = [migrations.RunPython(add_schedule, remove_schedule)]
