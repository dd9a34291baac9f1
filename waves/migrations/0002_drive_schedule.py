from django.db import migrations

SCHEDULE_NAME = "Drive active waves"


def add_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": "waves.tasks.drive_active_waves",
            "schedule_type": "I",
            "minutes": 1,
            "repeats": -1,
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=SCHEDULE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("waves", "0001_initial"), ("django_q", "0018_task_success_index")]
    operations = [migrations.RunPython(add_schedule, remove_schedule)]
