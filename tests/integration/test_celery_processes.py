"""Real celery processes, started with the commands of docker-compose.yml."""

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from maintenance.tasks import ping


def test_a_task_round_trips_through_redis_to_a_real_worker(celery_worker_process):
    result = ping.apply_async()

    answer = result.get(timeout=30)

    assert answer["pong"] is True
    assert answer["hostname"]
    celery_worker_process.wait_for_log(f"Task maintenance.ping[{result.id}] succeeded")


def test_the_worker_consumes_the_maintenance_queue(celery_worker_process):
    celery_worker_process.wait_for_log("maintenance")
    assert "exchange=maintenance(direct) key=maintenance" in celery_worker_process.log()


@pytest.mark.django_db(transaction=True)
def test_beat_sends_a_schedule_from_the_database_to_the_worker(
    celery_worker_process, celery_beat_process
):
    every_second = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name="integration ping", task="maintenance.ping", interval=every_second
    )

    worker_log_before_beat = celery_worker_process.mark()
    celery_beat_process.start()

    celery_beat_process.wait_for_log("maintenance.schedules.MaintenanceScheduler")
    celery_beat_process.wait_for_log("Sending due task integration ping (maintenance.ping)")
    celery_worker_process.wait_for_log("Task maintenance.ping[", since=worker_log_before_beat)
