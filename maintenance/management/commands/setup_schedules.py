"""manage.py setup_schedules: seed the default schedules; never overwrites edits."""

from django.core.management.base import BaseCommand

from maintenance.schedules import seed


class Command(BaseCommand):
    help = (
        "Create the default maintenance schedules in django-celery-beat. Schedules that "
        "exist (by name) are left exactly as an admin edited them."
    )

    def handle(self, *args, **options):
        for name, created in seed():
            if created:
                self.stdout.write(self.style.SUCCESS(f"created  {name}"))
            else:
                self.stdout.write(f"kept     {name} (already exists)")
