"""The game data that maintenance works on: chronicles, characters, scenes, posts, XP.

Timestamps default to now instead of using auto_now_add, so that the test-data
generator and imports can record when things really happened.
"""

import uuid

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

# Legal ranges of the character traits. The database does not enforce them, because
# the integrity validation exists to find and repair rows that broke them.
WILLPOWER_RANGE = (1, 10)
AGE_RANGE = (0, 5000)


class Chronicle(models.Model):
    name = models.CharField(max_length=200)
    storytellers = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="storyteller_chronicles"
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_activity_at = models.DateTimeField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self):
        return self.name


class Character(models.Model):
    class Status(models.TextChoices):
        UNFINISHED = "Un", "Unfinished"
        SUBMITTED = "Sub", "Submitted"
        APPROVED = "App", "Approved"
        RETIRED = "Ret", "Retired"
        DECEASED = "Dec", "Deceased"

    # Stable across databases: exports carry it, and re-importing a file matches on it.
    external_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="characters",
    )
    chronicle = models.ForeignKey(
        Chronicle, null=True, blank=True, on_delete=models.SET_NULL, related_name="characters"
    )
    status = models.CharField(max_length=3, choices=Status.choices, default=Status.UNFINISHED)
    npc = models.BooleanField(default=False)
    xp = models.IntegerField(default=0, help_text="Current unspent XP; equals the ledger sum.")
    willpower = models.SmallIntegerField(default=3, help_text="Legal range 1..10.")
    temporary_willpower = models.SmallIntegerField(default=3, help_text="Legal range 0..willpower.")
    age = models.IntegerField(null=True, blank=True, help_text="Legal range 0..5000.")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(xp__gte=0), name="character_xp_not_negative"),
            models.CheckConstraint(
                condition=Q(status__in=["Un", "Sub", "App", "Ret", "Dec"]),
                name="character_status_known",
            ),
        ]

    def __str__(self):
        return self.name

    def save(self, *args, **kwargs):
        # updated_at is set here rather than with auto_now, so bulk loads can keep history.
        self.updated_at = timezone.now()
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "updated_at" not in update_fields:
            kwargs["update_fields"] = [*update_fields, "updated_at"]
        super().save(*args, **kwargs)


def scene_activity_time():
    """A scene's activity time: last_activity_at, or created_at where it has none."""
    return Coalesce("last_activity_at", "created_at")


class Scene(models.Model):
    name = models.CharField(max_length=200)
    chronicle = models.ForeignKey(
        Chronicle, null=True, blank=True, on_delete=models.SET_NULL, related_name="scenes"
    )
    participants = models.ManyToManyField(Character, blank=True, related_name="scenes")
    date_of_scene = models.DateField(null=True, blank=True)
    finished = models.BooleanField(default=False)
    xp_given = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    last_activity_at = models.DateTimeField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "id"]
        indexes = [
            # Archiving walks finished, unarchived scenes in id order (keyset): this
            # partial index holds exactly those rows and shrinks as they are archived.
            models.Index(
                fields=["id"],
                condition=Q(finished=True, archived_at__isnull=True),
                name="scene_archivable_idx",
            ),
            models.Index(
                fields=["archived_at"],
                condition=Q(archived_at__isnull=False),
                name="scene_archived_idx",
            ),
        ]

    def __str__(self):
        return self.name


class Post(models.Model):
    # Indexed by post_scene_created_idx below, whose first column is the scene.
    scene = models.ForeignKey(
        Scene,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="posts",
        db_index=False,
    )
    character = models.ForeignKey(
        Character, null=True, blank=True, on_delete=models.SET_NULL, related_name="posts"
    )
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            # The newest post of a scene (activity checks) is an index-only lookup.
            models.Index(fields=["scene", "created_at"], name="post_scene_created_idx"),
        ]

    def __str__(self):
        return f"Post {self.pk} in scene {self.scene_id}"

    def save(self, *args, **kwargs):
        # A post is activity: move its scene's last_activity_at forward in the same
        # transaction, so archiving (which re-checks it) never archives a live scene.
        with transaction.atomic():
            super().save(*args, **kwargs)
            if self.scene_id is not None:
                Scene.objects.filter(pk=self.scene_id).filter(
                    Q(last_activity_at__isnull=True) | Q(last_activity_at__lt=self.created_at)
                ).update(last_activity_at=self.created_at)


class XPEntry(models.Model):
    """One line of a character's append-only XP ledger."""

    class Kind(models.TextChoices):
        WEEKLY = "weekly", "Weekly"
        SCENE = "scene", "Scene"
        STORY = "story", "Story"
        MANUAL = "manual", "Manual"
        SPEND = "spend", "Spend"
        REFUND = "refund", "Refund"

    # The ledger is history: a character that has entries cannot be deleted.
    character = models.ForeignKey(
        Character, on_delete=models.PROTECT, related_name="xp_entries", db_index=False
    )
    amount = models.IntegerField(help_text="Signed; never zero.")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    scene = models.ForeignKey(
        Scene, null=True, blank=True, on_delete=models.SET_NULL, related_name="xp_entries"
    )
    created_at = models.DateTimeField(default=timezone.now)
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name = "XP entry"
        verbose_name_plural = "XP entries"
        indexes = [
            # Summing a character's ledger reads only this index.
            models.Index(fields=["character", "amount"], name="xpentry_character_amount_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=~Q(amount=0), name="xpentry_amount_not_zero"),
            models.CheckConstraint(
                condition=Q(kind__in=["weekly", "scene", "story", "manual", "spend", "refund"]),
                name="xpentry_kind_known",
            ),
        ]

    def __str__(self):
        return f"{self.amount:+d} XP ({self.kind}) for character {self.character_id}"
