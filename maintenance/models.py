"""Run history: every maintenance run, each committed batch, and every finding."""

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone

from maintenance.engine import states


class LeasedWork(models.Model):
    """What a runner works through with a lease: a run, or one partition of a run. The
    engine moves both through the same states (engine/states.py) with the same runner."""

    Status = states.Status
    FINISHED = states.FINISHED
    ACTIVE = states.ACTIVE

    # Written only by the transitions of maintenance/engine/states.py.
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    celery_task_id = models.CharField(max_length=255, blank=True, db_index=True)

    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Who holds the run now: a batch only commits while its runner still holds the lease.
    lease_token = models.CharField(max_length=32, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # Starts in a row without a committed batch; MAINTENANCE_MAX_ATTEMPTS of them fail it.
    idle_attempts = models.PositiveIntegerField(default=0)
    # When it was (re)queued: the sweeper re-sends a run queued too long (a lost message).
    queued_at = models.DateTimeField(default=timezone.now, db_index=True)
    # When the sweeper last sent it again (its message lost); queued_at stays when it
    # was queued, so monitoring sees how long it has waited.
    resent_at = models.DateTimeField(null=True, blank=True)
    # The worker that holds it, so a worker shutting down can ask its runs to stop.
    worker = models.CharField(max_length=255, blank=True)
    # Set by a worker shutting down: the runner stops at the next batch boundary.
    stop_requested = models.BooleanField(default=False)
    # Seconds spent in batches (not waiting in the queue): the basis of rate and ETA.
    work_seconds = models.FloatField(default=0)
    # Time spent backing off for the database's sake, why the last time, and when.
    throttled_s = models.FloatField(default=0)
    throttle_reason = models.CharField(max_length=200, blank=True)
    throttled_at = models.DateTimeField(null=True, blank=True)

    checkpoint = models.JSONField(null=True, blank=True)
    total = models.PositiveBigIntegerField(null=True, blank=True)
    processed = models.PositiveBigIntegerField(default=0)
    changed = models.PositiveBigIntegerField(default=0)
    findings = models.PositiveBigIntegerField(default=0)
    batches = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    objects = states.RunQuerySet.as_manager()

    class Meta:
        abstract = True

    @property
    def is_finished(self):
        return self.status in self.FINISHED


class MaintenanceRun(LeasedWork):
    class Trigger(models.TextChoices):
        CLI = "cli", "command line"
        BEAT = "beat", "beat schedule"
        ADMIN = "admin", "admin"
        API = "api", "task sent directly"

    operation = models.CharField(max_length=64, db_index=True)
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    periodic_task_name = models.CharField(max_length=200, blank=True)
    requested_by = models.CharField(
        max_length=150, blank=True, help_text="The admin user or OS user who started it."
    )
    schedule_changed_by = models.CharField(
        max_length=200,
        blank=True,
        help_text="For a run of a schedule: the admin user who last saved or toggled it.",
    )
    params = models.JSONField(default=dict, blank=True)
    dry_run = models.BooleanField(default=False)
    # Pinned by --batch-size; empty: each batch's size adapts to the target batch time.
    batch_size = models.PositiveIntegerField(null=True, blank=True)
    # Split into this many partitions (RunPartition), each its own task; 1: not split.
    partitions = models.PositiveSmallIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # When whoever started it asked (beat: the due time); empty: created_at. A run that
    # finds the same work succeeded since then is coalesced into it.
    triggered_at = models.DateTimeField(null=True, blank=True)
    # The beat instance that sent it (host:pid:id), for runs of a schedule.
    sent_by = models.CharField(max_length=200, blank=True)

    # Findings over time, against the previous complete run that checked the same rules
    # (engine/findings_over_time.py); empty for runs that check no rules or did not finish.
    findings_new = models.PositiveBigIntegerField(null=True, blank=True)
    findings_resolved = models.PositiveBigIntegerField(null=True, blank=True)
    findings_open = models.PositiveBigIntegerField(null=True, blank=True)

    resumed_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="resumed_by"
    )
    skipped_because_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="skipped_runs"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("start_maintenancerun", "Can start maintenance runs")]
        constraints = [
            # The database itself allows one running run per operation.
            models.UniqueConstraint(
                fields=["operation"],
                condition=Q(status__in=states.ACTIVE),
                name="one_active_run_per_operation",
            ),
        ]
        indexes = [
            models.Index(
                fields=["operation", "status", "-created_at"], name="run_operation_status_idx"
            )
        ]

    def __str__(self):
        return f"#{self.pk} {self.operation} ({self.status})"

    @property
    def is_partitioned(self) -> bool:
        return self.partitions > 1

    @property
    def duration_s(self):
        if not self.started_at:
            return None
        end = self.finished_at or timezone.now()
        return round((end - self.started_at).total_seconds(), 3)


class RunPartition(LeasedWork):
    """One contiguous id range of a partitioned run, fixed at the run's start and worked
    by a Celery task of its own; the run is finished when all its partitions are."""

    run = models.ForeignKey(MaintenanceRun, on_delete=models.CASCADE, related_name="partition_set")
    number = models.PositiveSmallIntegerField(help_text="1..N")
    # The range of the run's first walk, for people; None: open at that end.
    lower_id = models.BigIntegerField(null=True, blank=True)
    upper_id = models.BigIntegerField(null=True, blank=True)
    # The range of every walk ({walk: [lower, upper]}): validation walks three tables.
    bounds = models.JSONField(default=dict)

    class Meta:
        ordering = ["run", "number"]
        constraints = [
            models.UniqueConstraint(fields=["run", "number"], name="one_partition_number_per_run")
        ]

    def __str__(self):
        return f"partition {self.number} of run #{self.run_id} ({self.status})"

    # What the runner reads from the run it belongs to.
    @property
    def operation(self) -> str:
        return self.run.operation

    @property
    def params(self) -> dict:
        return self.run.params

    @property
    def dry_run(self) -> bool:
        return self.run.dry_run

    @property
    def batch_size(self) -> int | None:
        return self.run.batch_size


class RunBatch(models.Model):
    """One committed batch: which rows it changed (or, in a dry run, would change)."""

    run = models.ForeignKey(MaintenanceRun, on_delete=models.CASCADE, related_name="batch_log")
    # The partition's number (1..N) in a partitioned run, 0 in a run that is not split;
    # batches are numbered within it.
    partition = models.PositiveSmallIntegerField(default=0)
    number = models.PositiveIntegerField()
    position = models.JSONField(null=True, help_text="The checkpoint after this batch.")
    processed = models.PositiveIntegerField()
    changed = models.PositiveIntegerField()
    findings = models.PositiveIntegerField()
    changed_ids = models.JSONField(default=list)
    # What every row of changed_ids was given, and had before, when a batch writes the
    # same values to all its rows (archiving): {"model", "before", "after"}. A revert
    # restores `before` where a row still holds `after`.
    written = models.JSONField(null=True, blank=True)
    seconds = models.FloatField()
    # The rows the batch asked for (adaptive runs change it batch by batch).
    size = models.PositiveIntegerField(null=True, blank=True)
    committed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "run batches"
        ordering = ["run", "partition", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "partition", "number"], name="one_batch_number_per_partition"
            )
        ]

    def __str__(self):
        where = f"partition {self.partition} of " if self.partition else ""
        return f"batch {self.number} of {where}run #{self.run_id}"


class Finding(models.Model):
    run = models.ForeignKey(MaintenanceRun, on_delete=models.CASCADE, related_name="finding_set")
    rule = models.CharField(max_length=64, db_index=True)
    model = models.CharField(max_length=100)
    object_id = models.BigIntegerField()
    message = models.TextField()
    fixed = models.BooleanField(default=False)
    before = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    after = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    # Bookkeeping columns a fix also wrote (a character's updated_at), as
    # {"before": {...}, "after": {...}}: a revert restores them with the rest.
    also_written = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # The same problem in every run that finds it: rule, model and object id.
    fingerprint = models.CharField(max_length=200, blank=True)
    # When a run first found it open, counting each complete run since that still did.
    first_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "id"]
        indexes = [
            models.Index(fields=["run", "rule"], name="finding_run_rule_idx"),
            models.Index(fields=["run", "fingerprint"], name="finding_run_fingerprint_idx"),
        ]

    def __str__(self):
        return f"{self.rule}: {self.model} {self.object_id}"

    @staticmethod
    def fingerprint_of(rule: str, model: str, object_id: int) -> str:
        return f"{rule}:{model}:{object_id}"


class ScheduleChange(models.Model):
    """Who last saved, enabled, disabled or toggled a schedule in the admin: a run that
    beat starts from it names that person."""

    NOBODY = "nobody (not changed through the admin)"

    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", on_delete=models.CASCADE, related_name="last_change"
    )
    changed_by = models.CharField(max_length=150)
    changed_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"{self.periodic_task_id} changed by {self.changed_by}"


class Heartbeat(models.Model):
    """The last sign of life of the beat -> broker -> worker -> database path: beat sends
    maintenance.heartbeat every minute and the worker that runs it stamps this row."""

    name = models.CharField(max_length=50, unique=True)
    seen_at = models.DateTimeField()
    hostname = models.CharField(max_length=255, blank=True)
    periodic_task_name = models.CharField(max_length=200, blank=True)

    def __str__(self):
        return f"{self.name} at {self.seen_at:%Y-%m-%d %H:%M:%S}"


class TaskMessage(models.Model):
    """A maintenance task message by its task id, and the run it became. Beat records
    one before it sends a due time (its task id follows from schedule and due time, so
    a due time is sent once), and a worker links the run it records to it, so a
    message delivered twice, or sent twice, makes one run."""

    task_id = models.CharField(max_length=255, unique=True)
    operation = models.CharField(max_length=64, blank=True)
    periodic_task_name = models.CharField(max_length=200, blank=True)
    due_at = models.DateTimeField(null=True, blank=True)
    sent_by = models.CharField(max_length=200, blank=True)
    sent_at = models.DateTimeField(default=timezone.now, db_index=True)
    run = models.ForeignKey(
        MaintenanceRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="messages"
    )

    class Meta:
        indexes = [models.Index(fields=["periodic_task_name", "-due_at"], name="message_due_idx")]

    def __str__(self):
        return f"{self.periodic_task_name or self.operation} {self.task_id}"


class BeatLeader(models.Model):
    """The one beat process that sends due tasks. It renews its hold on this row; a
    standby beat takes it over once the holder has stopped renewing."""

    name = models.CharField(max_length=64, unique=True)
    holder = models.CharField(max_length=200)
    acquired_at = models.DateTimeField()
    renewed_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    def __str__(self):
        return f"{self.name}: {self.holder} until {self.expires_at}"
