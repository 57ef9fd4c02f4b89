from django.apps import AppConfig


class MaintenanceConfig(AppConfig):
    name = "maintenance"
    verbose_name = "Maintenance"

    def ready(self):
        # Register the maintenance.* tasks in every process, not only in workers (whose
        # autodiscovery imports them): the engine publishes runs by task name.
        from maintenance import tasks  # noqa: F401
